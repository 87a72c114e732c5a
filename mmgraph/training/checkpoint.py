"""Checkpoints of :func:`~mmgraph.training.fit`: atomic, SHA-256-checked files (:func:`save_checkpoint`,
:func:`load_checkpoint`), the RNG states that make a resumed run bit-identical, and the resume rules: which settings
changed (the data sets by fingerprint), which may be overridden, and how the optimizer takes the new values."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmgraph.io import load_file, save_file

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "save_checkpoint"]


CHECKPOINT_FORMAT = 2


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically with a SHA-256 of its payload (see :mod:`mmgraph.io`); a crash at
    any point leaves either the previous file or the new one, never a torn one. Read it back with
    :func:`load_checkpoint`."""
    save_file(path, state, kind="checkpoint")


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
    refused = {name: change for name, change in changed.items() if name not in override}
    if refused:
        raise ValueError(f"resume: {path} was trained with other settings: {_describe_changes(refused)}; pass "
                         f"override={tuple(refused)!r} to continue with this call's values, or start a new run")
    return changed


def _describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{name} {old!r} (checkpoint) != {new!r} (now)" for name, (old, new) in changes.items())


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


def _fingerprint(rows) -> str:
    """``"<N> samples, sha256 <16 hex>"`` of every input, mask and target of a dataset, taken by name."""
    digest = hashlib.sha256()
    parts = {**{f"input:{k}": v for k, v in rows.inputs.items()}, "mask": rows.mask,
             **{f"target:{k}": v for k, v in rows.targets.items()},
             **{f"step_mask:{k}": v for k, v in (rows.step_mask or {}).items()}}
    for name in sorted(parts):
        tensor = torch.as_tensor(parts[name]).detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return f"{len(rows)} samples, sha256 {digest.hexdigest()[:16]}"
