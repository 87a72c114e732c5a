"""Checkpoints of :func:`~mmgraph.training.fit`: atomic, SHA-256-checked files (:func:`save_checkpoint`,
:func:`load_checkpoint`), the RNG states that make a resumed run bit-identical, and the resume rules: which settings
changed (the training options, the model's own settings and the data sets by fingerprint), which may be
overridden, and how the optimizer takes the new values."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmgraph.io import load_file, save_file

__all__ = ["CHECKPOINT_FORMAT", "data_fingerprint", "load_checkpoint", "save_checkpoint"]


CHECKPOINT_FORMAT = 3  # 3: cheap sampled data fingerprints (2: a SHA-256 of every tensor)


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically with a SHA-256 of its payload (see :mod:`mmgraph.io`); a crash at
    any point leaves either the previous file or the new one, never a torn one. Read it back with
    :func:`load_checkpoint`.

    Raises:
        OSError: the file could not be written (a full disk, a folder removed): the message names the path and
            says that the previous checkpoint there is intact (``errno`` kept).
    """
    try:
        save_file(path, state, kind="checkpoint")
    except (OSError, RuntimeError) as error:  # torch.save turns a failed write into RuntimeError("unexpected pos")
        cause = _os_error(error)
        if cause is None:
            raise
        epoch = state.get("epoch")
        kept = (f"the previous checkpoint (epoch {epoch - 1}) is intact" if isinstance(epoch, int) and epoch > 1
                else "the file that was there before is intact" if Path(path).exists()
                else "no checkpoint was written")
        raise OSError(cause.errno, f"cannot write the checkpoint {path}: {cause.strerror or cause}; {kept} (a "
                                   "checkpoint is replaced only once the new one is complete): free space and "
                                   "continue with resume=True (--resume on the command line)") from error


def _os_error(error: BaseException) -> OSError | None:
    """The ``OSError`` behind ``error`` (itself, or what it was raised from or during), if any."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Raises:
        mmgraph.io.CorruptFileError: the file is truncated, corrupt or not an mmgraph checkpoint (names the path).
    """
    return load_file(path, kind="checkpoint", map_location=map_location)


def _get_rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["generator"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _resume_changes(path: Path, saved: Mapping[str, Any], config: Mapping[str, Any], override: Sequence[str]
                    ) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between a checkpoint's ``config`` and this call's, all of them in ``override``
    (``{name: (saved, new)}``); raises ``ValueError`` naming every difference that is not."""
    unknown = [name for name in override if name not in config]
    if unknown:
        raise ValueError(f"override: unknown settings {unknown}; expected some of {list(config)}")
    comparable = [name for name in config if name != "epochs" or config["scheduler"] == "cosine"]
    changed = {name: (saved.get(name, "<not recorded>"), config[name]) for name in comparable
               if saved.get(name, "<not recorded>") != config[name]}
    if "optimizer" in changed:
        raise ValueError(f"resume: {path} holds {saved.get('optimizer')!r} optimizer state, which "
                         f"optimizer={config['optimizer']!r} cannot continue (it cannot be overridden); resume with "
                         f"optimizer={saved.get('optimizer')!r}, or start a new run (resume=False)")
    refused = {name: change for name, change in changed.items() if name not in override or name in _ARCHITECTURE}
    fixed = [name for name in refused if name in _ARCHITECTURE]
    if fixed:
        raise ValueError(f"resume: {path} was trained with other settings: {_describe_changes(refused)}; "
                         f"{', '.join(fixed)} {'shape' if len(fixed) > 1 else 'shapes'} the model's parameters and "
                         "cannot be overridden: resume with the checkpoint's settings, or start a new run "
                         "(resume=False; --overwrite on the command line)")
    if refused:
        raise ValueError(f"resume: {path} was trained with other settings: {_describe_changes(refused)}; pass "
                         f"override={tuple(refused)!r} to continue with this call's values, or start a new run (on "
                         "the command line: rerun with the checkpoint's settings, or --overwrite)")
    return changed


_ARCHITECTURE = ("architecture", "encoders", "fusion", "fusion_kwargs", "dim", "tasks", "head_hidden", "standardized",
                 "unimodal_weight")  # the unimodal heads exist or not
"""Settings of :func:`_model_settings` that shape the model's parameters (a resume cannot override them)."""


def _model_settings(model: nn.Module) -> dict[str, Any]:
    """The model's part of the settings a resume compares: its constructor config (``encoders``, ``fusion``,
    ``fusion_kwargs``, ``dim``, ``modality_dropout``, heads, ``tasks``, classes) with ``standardized``, the
    modalities it z-scores (the statistics themselves come from the training data, compared by fingerprint). A
    model built from modules has no config: its ``architecture`` (parameter names and shapes, by digest) and
    ``modality_dropout`` stand in."""
    try:
        config = model.config()
    except (AttributeError, TypeError):
        state = model.state_dict()
        digest = hashlib.sha256("".join(f"{name}:{tuple(value.shape)};" for name, value in state.items()).encode())
        settings: dict[str, Any] = {
            "architecture": f"{type(model).__name__}, {len(state)} tensors, sha256 {digest.hexdigest()[:16]}"}
    else:
        settings = {name: value for name, value in config.items() if name not in ("input_stats", "input_spec")}
        settings["standardized"] = sorted(config["input_stats"])
    dropout = getattr(model, "modality_dropout", None)
    if isinstance(dropout, float):  # the value training uses now, should it have been changed after construction
        settings["modality_dropout"] = dropout
    return settings


def _describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """``"lr 0.01 (checkpoint) != 0.001 (now), encoders['a']['in_dim'] 5 (checkpoint) != 6 (now)"``: dicts down to
    the entries that differ, long values cut short."""
    return ", ".join(f"{where} {_short(old)} (checkpoint) != {_short(new)} (now)"
                     for name, (saved, now) in changes.items() for where, old, new in _differences(name, saved, now))


class _NotSet:
    def __repr__(self) -> str:
        return "<not set>"


def _differences(where: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """``[(where, old, new)]`` of the entries in which two settings differ (nested dicts by key)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return [(where, old, new)]
    missing = _NotSet()
    keys = [*old, *(key for key in new if key not in old)]
    return [difference for key in keys if old.get(key, missing) != new.get(key, missing)
            for difference in _differences(f"{where}[{key!r}]", old.get(key, missing), new.get(key, missing))]


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]} ...{text[-1]}"


def _apply_optimizer_settings(opt: torch.optim.Optimizer, lr_scheduler, config: Mapping[str, Any], new_lr: bool,
                              epoch: int) -> None:
    """After loading a checkpoint's optimizer state: this call's weight decay and momentum (equal unless
    overridden) and, when ``lr`` was overridden, the new learning rate (at its point of the cosine schedule)."""
    for group in opt.param_groups:
        group["weight_decay"] = config["weight_decay"]
        if config["momentum"] is not None:
            group["momentum"] = config["momentum"]
        if new_lr:
            group["initial_lr"] = config["lr"]
            group["lr"] = (config["lr"] * (1 + math.cos(math.pi * epoch / config["epochs"])) / 2
                           if config["scheduler"] == "cosine" else config["lr"])
    if new_lr and isinstance(lr_scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
        lr_scheduler.base_lrs = [config["lr"]] * len(opt.param_groups)


def data_fingerprint(dataset, rows: int = 64) -> str:
    """``"<N> samples, sha256 <16 hex> (mask, targets, <k> rows)"``: a cheap fingerprint of a data set for the resume
    check, without reading (or copying) the whole data: the SHA-256 of the dtype and shape of every tensor, the whole
    presence mask and targets (``[N, M]`` and ``[N]``: small), and the features and step masks of ``rows`` evenly
    spaced samples (first and last included), taken by modality and task name. It tells apart another data set, a
    subset, other labels, masks or shapes; an edit of features only between the sampled rows goes unnoticed."""
    count = len(dataset)
    picked = torch.linspace(0, count - 1, min(count, rows)).round().long().unique() if count else torch.zeros(
        0, dtype=torch.long)
    sample = dataset[picked]
    parts = {**{f"input:{k}": v for k, v in sample.inputs.items()}, "mask": dataset.mask,
             **{f"target:{k}": v for k, v in dataset.targets.items()},
             **{f"step_mask:{k}": v for k, v in (sample.step_mask or {}).items()}}
    shapes = {f"input:{k}": (count, *shape) for k, shape in dataset.input_shapes.items()}
    digest = hashlib.sha256()
    for name in sorted(parts):
        tensor = torch.as_tensor(parts[name]).detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{shapes.get(name, tuple(tensor.shape))};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return f"{count} samples, sha256 {digest.hexdigest()[:16]} (mask, targets, {len(picked)} rows)"
