"""Training and evaluation: :func:`fit`, :func:`evaluate`, :func:`predict` and the ``python -m mmgraph.train`` CLI.

``fit`` trains any :class:`~mmgraph.model.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset`: Adam or SGD, early stopping on a validation metric with the best weights
restored, gradient clipping, AMP on CUDA, seeded shuffling, an atomic checkpoint per epoch with exact resume, and
DistributedDataParallel when launched by ``torchrun``. Batches are gathered with one tensor index per batch
(``dataset[indices]``), never by collating samples one at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from mmgraph.io import load_file, save_file
from mmgraph.utils import resolve_device, seed_everything

__all__ = ["FitResult", "evaluate", "fit", "main", "predict"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
MONITORS = ("accuracy", "macro_f1", "macro_recall", "mse", "loss")
CHECKPOINT_FORMAT = 1


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_<task>_accuracy`` (or
            ``val_<task>_mse``), ``val_accuracy`` (mean over classification tasks), ``score`` (the monitored value,
            higher is better) and ``time_s`` (seconds since the start of training).
        best_epoch: 1-based epoch of the best score (the weights restored when ``restore_best``).
        best_score: the best monitored score (higher is better; ``-mse`` / ``-loss`` for those monitors).
        epochs_run: epochs completed, including those before a resume.
        time_s: wall time of this call.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    epochs_run: int = 0
    time_s: float = 0.0


# ---------------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    epochs: int = 50,
    batch_size: int = 64,
    patience: int | None = None,
    monitor: str = "accuracy",
    grad_clip: float | None = None,
    task_weights: Mapping[str, float] | None = None,
    aux_weight: float = 1.0,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    restore_best: bool = True,
) -> FitResult:
    """Train ``model`` on ``train``; early-stop and pick the best epoch on ``val``.

    Args:
        model: a :class:`~mmgraph.model.FusionModel` (anything with ``model.tasks: {task: num_classes}`` and
            ``model(inputs, mask, step_mask) -> {task: Tensor[B, C]}``). Moved to ``device``; trained in place.
        train, val: :class:`~mmgraph.data.MultiModalDataset`; ``dataset[LongTensor[b]]`` must return a
            ``MultiModalBatch`` with ``inputs``, ``mask [b, M]``, ``targets {task: [b]}`` and ``step_mask``.
            Without ``val`` the monitored score is ``-train_loss``.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        epochs: maximum number of epochs; ``patience`` stops earlier after that many epochs without improvement.
        batch_size: samples per step (per process under DDP).
        monitor: ``"accuracy"`` (mean over classification tasks; ``-mse`` if there are none), ``"macro_f1"``,
            ``"macro_recall"``, ``"mse"`` (negated mean over regression tasks) or ``"loss"`` (negated val loss).
        grad_clip: max gradient norm, or None.
        task_weights: ``{task: weight}`` for the summed loss (default 1 each). Loss =
            ``Σ_t w_t · (CE or MSE)_t + aux_weight · model.aux_loss``.
        device: ``"auto"`` = CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
        amp: mixed precision (``torch.autocast`` float16 + ``GradScaler``); ``"auto"`` = on for CUDA. CUDA only.
        seed: seeds torch and the shuffling generator (``DistributedSampler(seed=seed)`` under DDP); the same seed
            gives the same parameters on CPU.
        checkpoint: path written atomically after every epoch (by rank 0), with a SHA-256 of its payload; read it
            with :func:`load_checkpoint` (``model``, ``optimizer``, ``best_state``, ``history``, ...).
        resume: continue from ``checkpoint`` if it exists (otherwise start fresh); on CPU the result is
            bit-identical to an uninterrupted run.
        progress: tqdm bar over epochs; None = only when stderr is a terminal. Rank 0 only.
        restore_best: load the best epoch's weights into ``model`` at the end.

    Returns:
        :class:`FitResult`.
    """
    started = time.perf_counter()
    tasks = _model_tasks(model)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("monitor", monitor, MONITORS)
    _check_int("epochs", epochs, 1)
    _check_int("batch_size", batch_size, 1)
    if patience is not None:
        _check_int("patience", patience, 1)
    for arg, value in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum),
                       ("aux_weight", aux_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (arg == "lr" and
                                                                                           value == 0):
            raise ValueError(f"{arg}: expected a {'positive' if arg == 'lr' else 'non-negative'} number, "
                             f"got {value!r}")
    if grad_clip is not None and (not isinstance(grad_clip, (int, float)) or grad_clip <= 0):
        raise ValueError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
    weights = _task_weights(task_weights, tasks)
    if monitor in ("macro_f1", "macro_recall") and not any(tasks.values()):
        raise ValueError(f"monitor: {monitor!r} needs a classification task; tasks are {tasks}")
    if monitor == "mse" and all(tasks.values()):
        raise ValueError(f"monitor: 'mse' needs a regression task (num_classes 0); tasks are {tasks}")
    if resume and checkpoint is None:
        raise ValueError("resume: True needs a checkpoint path")
    _check_dataset("train", train, tasks)
    if val is not None:
        _check_dataset("val", val, tasks)

    world, rank = _init_distributed()
    device = _fit_device(device, world)
    use_amp = _use_amp(amp, device)
    generator = seed_everything(seed)
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    raw_model.to(device)
    net: nn.Module = raw_model
    if world > 1:
        net = DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _make_optimizer(optimizer, raw_model.parameters(), lr, weight_decay, momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    sampler = (DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
               if world > 1 else None)

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_state, stopped, start_epoch = -math.inf, 0, None, False, 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        raw_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], generator, device)
        history, start_epoch, stopped = state["history"], state["epoch"], state["stopped"]
        best_score, best_epoch, best_state = state["best_score"], state["best_epoch"], state["best_state"]
        logger.info("resumed from %s at epoch %d", checkpoint, start_epoch)

    show = (sys.stderr.isatty() if progress is None else bool(progress)) and rank == 0
    bar = _progress_bar(epochs, start_epoch, show)
    config = {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum,
              "epochs": epochs, "batch_size": batch_size, "patience": patience, "monitor": monitor,
              "grad_clip": grad_clip, "task_weights": weights, "aux_weight": aux_weight, "amp": use_amp,
              "seed": seed, "world_size": world}
    epoch = start_epoch
    while epoch < epochs and not stopped:
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
        else:
            order = torch.randperm(len(train), generator=generator)
        train_loss = _train_epoch(net, raw_model, train, order, opt, scaler, tasks, weights, aux_weight,
                                  batch_size, grad_clip, device, use_amp, world)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"fit: the training loss became {train_loss} in epoch {epoch + 1}; lower `lr`, "
                                     "set `grad_clip`, or check the inputs")
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": train_loss}
        if val is not None:
            record.update(_validate(raw_model, val, tasks, weights, batch_size, device, use_amp, world, rank))
            record["score"] = _score(record, monitor, tasks)
        else:
            record["score"] = -train_loss
        record["time_s"] = time.perf_counter() - started
        history.append(record)
        epoch += 1
        if record["score"] > best_score:
            best_score, best_epoch = record["score"], epoch
            best_state = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
        elif patience is not None and epoch - best_epoch >= patience:
            stopped = True
        if rank == 0:
            logger.info("epoch %d/%d %s", epoch, epochs,
                        " ".join(f"{k}={v:.4f}" for k, v in record.items() if k not in ("epoch", "time_s")))
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", score=f"{record['score']:.4f}")
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "stopped": stopped,
                    "model": raw_model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                    "best_score": best_score, "best_epoch": best_epoch, "best_state": best_state,
                    "history": history, "rng": _get_rng_state(generator, device)})
    bar.close()
    if restore_best and best_state is not None:
        raw_model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, best_score=float(best_score), epochs_run=epoch,
                     time_s=time.perf_counter() - started)


def _train_epoch(net: nn.Module, raw_model: nn.Module, train, order: Tensor, opt: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, tasks: dict[str, int], weights: dict[str, float], aux_weight: float,
                 batch_size: int, grad_clip: float | None, device: torch.device, use_amp: bool, world: int) -> float:
    """One pass over ``order``; returns the mean training loss (the only host sync of the epoch)."""
    net.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        if len(indices) == 1 and len(order) > 1:
            continue  # BatchNorm cannot train on one sample; this sample is seen in the other epochs' orders
        batch = train[indices].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = net(batch.inputs, batch.mask, batch.step_mask)
            loss = _task_loss(outputs, batch.targets, tasks, weights)
            aux = raw_model.aux_loss if aux_weight else None
            if aux is not None:
                loss = loss + aux_weight * aux
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
        loss_sum += loss.detach().float() * len(indices)
        count += len(indices)
    totals = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
    if world > 1:
        dist.all_reduce(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def _task_loss(outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor], tasks: dict[str, int],
               weights: dict[str, float], reduction: str = "mean") -> Tensor:
    """``Σ_t w_t · loss_t``: cross-entropy for classification, MSE for regression (``num_classes == 0``)."""
    total = 0.0
    for task, classes in tasks.items():
        output = outputs[task].float()
        if classes:
            loss = F.cross_entropy(output, targets[task].long(), reduction=reduction)
        else:
            loss = F.mse_loss(output.squeeze(-1), targets[task].float(), reduction=reduction)
        total = total + weights[task] * loss
    return total


@torch.no_grad()
def _validate(model: nn.Module, val, tasks: dict[str, int], weights: dict[str, float], batch_size: int,
              device: torch.device, use_amp: bool, world: int, rank: int) -> dict[str, float]:
    """Validation loss and metrics from summed statistics (confusion matrices, squared errors), so that under DDP
    each rank evaluates its own shard and one ``all_reduce`` gives every rank the exact same numbers."""
    was_training = model.training
    model.eval()
    indices = torch.arange(rank, len(val), world)
    stats = {task: torch.zeros(classes * classes if classes else 2, dtype=torch.float64, device=device)
             for task, classes in tasks.items()}
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(indices), max(batch_size, 256)):
        batch = val[indices[start:start + max(batch_size, 256)]].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = model(batch.inputs, batch.mask, batch.step_mask)
        loss_sum += _task_loss(outputs, batch.targets, tasks, weights, reduction="sum").double()
        for task, classes in tasks.items():
            target, output = batch.targets[task], outputs[task].float()
            if classes:
                cells = target.long() * classes + output.argmax(-1)
                stats[task] += torch.bincount(cells, minlength=classes * classes).double()
            else:
                error = (output.squeeze(-1) - target.float()).double()
                stats[task] += torch.stack([error.square().sum(), error.new_tensor(len(error))])
    names = list(stats)
    flat = torch.cat([loss_sum.view(1)] + [stats[t] for t in names])
    if world > 1:
        dist.all_reduce(flat)
    flat = flat.cpu()
    model.train(was_training)

    record = {"val_loss": flat[0].item() / max(len(val), 1)}
    offset = 1
    accuracies = []
    for task in names:
        classes = tasks[task]
        size = classes * classes if classes else 2
        values = flat[offset:offset + size]
        offset += size
        if classes:
            scores = _confusion_scores(values.view(classes, classes))
            record.update({f"val_{task}_{name}": value for name, value in scores.items()})
            accuracies.append(scores["accuracy"])
        else:
            record[f"val_{task}_mse"] = (values[0] / values[1].clamp(min=1)).item()
    if accuracies:
        record["val_accuracy"] = sum(accuracies) / len(accuracies)
    return record


def _confusion_scores(confusion: Tensor) -> dict[str, float]:
    """Accuracy, macro recall and macro F1 from a ``[C, C]`` (true, predicted) count matrix; classes absent from
    both truth and predictions are left out of the macro averages (as scikit-learn does by default)."""
    true_pos = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    seen = (support + predicted) > 0
    recall = true_pos / support.clamp(min=1)
    f1 = 2 * true_pos / (support + predicted).clamp(min=1)
    return {"accuracy": (true_pos.sum() / confusion.sum().clamp(min=1)).item(),
            "macro_recall": recall[seen].mean().item() if seen.any() else 0.0,
            "macro_f1": f1[seen].mean().item() if seen.any() else 0.0}


def _score(record: Mapping[str, float], monitor: str, tasks: dict[str, int]) -> float:
    """The monitored value, higher is better."""
    classification = [t for t, c in tasks.items() if c]
    regression = [t for t, c in tasks.items() if not c]
    if monitor == "loss":
        return -record["val_loss"]
    if monitor == "mse" or (monitor == "accuracy" and not classification):
        return -sum(record[f"val_{t}_mse"] for t in regression) / len(regression)
    return sum(record[f"val_{t}_{monitor}"] for t in classification) / len(classification)


# ---------------------------------------------------------------------------------------------------- checkpoints
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


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "auto",
            logits: bool = False) -> dict[str, Tensor]:
    """Predictions for every sample of ``dataset``, on CPU.

    Returns ``{task: Tensor[N]}``: class indices (LongTensor) for classification, values for regression; with
    ``logits=True`` the raw outputs ``Tensor[N, C]`` instead. The model is moved to ``device`` and evaluated in
    eval mode (its previous mode is restored).
    """
    _check_int("batch_size", batch_size, 1)
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    tasks = _model_tasks(raw_model)
    device = resolve_device(device)
    raw_model.to(device)
    was_training = raw_model.training
    raw_model.eval()
    chunks: dict[str, list[Tensor]] = {task: [] for task in tasks}
    for start in range(0, len(dataset), batch_size):
        indices = torch.arange(start, min(start + batch_size, len(dataset)))
        batch = dataset[indices].to(device, non_blocking=True)
        outputs = raw_model(batch.inputs, batch.mask, batch.step_mask)
        for task in tasks:
            chunks[task].append(outputs[task].float().cpu())
    raw_model.train(was_training)
    results = {task: torch.cat(parts) for task, parts in chunks.items()}
    if logits:
        return results
    return {task: out.argmax(-1) if tasks[task] else out.squeeze(-1) for task, out in results.items()}


def evaluate(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "auto"
             ) -> dict[str, dict[str, Any]]:
    """Metrics of ``model`` on ``dataset``: ``{task: classification_metrics(...)}`` (accuracy, macro_recall,
    macro_f1, confusion_matrix) or ``{task: regression_metrics(...)}`` (mse, mae, r2); the regression task
    ``"sentiment"`` (MOSI / MOSEI) also gets ``sentiment_metrics`` (acc2, acc2_nonzero, f1, f1_nonzero, acc7,
    pearson)."""
    from mmgraph.metrics import classification_metrics, regression_metrics, sentiment_metrics

    tasks = _model_tasks(model.module if isinstance(model, DistributedDataParallel) else model)
    outputs = predict(model, dataset, batch_size=batch_size, device=device, logits=True)
    targets = dataset[torch.arange(len(dataset))].targets
    return {task: classification_metrics(targets[task], outputs[task], classes) if classes
            else {**regression_metrics(targets[task], outputs[task].squeeze(-1)),
                  **(sentiment_metrics(targets[task], outputs[task].squeeze(-1)) if task == "sentiment" else {})}
            for task, classes in tasks.items()}


# ---------------------------------------------------------------------------------------------------- helpers
def _init_distributed() -> tuple[int, int]:
    """``(world_size, rank)``; under torchrun (``WORLD_SIZE > 1``) initialise the default process group if needed:
    NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _fit_device(device: str | torch.device, world: int) -> torch.device:
    resolved = resolve_device(device)
    if world > 1 and resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    return resolved


def _use_amp(amp: bool | str, device: torch.device) -> bool:
    if amp == "auto":
        return device.type == "cuda"
    if not isinstance(amp, bool):
        raise ValueError(f"amp: expected True, False or 'auto', got {amp!r}")
    if amp and device.type != "cuda":
        raise ValueError(f"amp: mixed precision is supported on CUDA only, got device {device}")
    return amp


def _make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    # torch picks the multi-tensor implementations only on CUDA; on CPU its default is a Python loop over
    # parameters, several times slower for models of many small tensors. The result is the same either way.
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _progress_bar(total: int, initial: int, show: bool):
    if show:
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="epoch", file=sys.stderr)
    return _NoBar()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _model_tasks(model: nn.Module) -> dict[str, int]:
    tasks = getattr(model, "tasks", None)
    if not isinstance(tasks, Mapping) or not tasks:
        raise TypeError(f"model: expected a FusionModel (a module with `tasks: {{task: num_classes}}`), got "
                        f"{type(model).__name__}")
    return dict(tasks)


def _task_weights(task_weights: Mapping[str, float] | None, tasks: dict[str, int]) -> dict[str, float]:
    if task_weights is None:
        return {task: 1.0 for task in tasks}
    if not isinstance(task_weights, Mapping):
        raise TypeError(f"task_weights: expected a dict {{task: weight}}, got {type(task_weights).__name__}")
    unknown = [t for t in task_weights if t not in tasks]
    if unknown:
        raise ValueError(f"task_weights: unknown tasks {unknown}; the model's tasks are {list(tasks)}")
    for task, weight in task_weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"task_weights[{task!r}]: expected a non-negative number, got {weight!r}")
    return {task: float(task_weights.get(task, 1.0)) for task in tasks}


def _check_dataset(arg: str, dataset, tasks: dict[str, int]) -> None:
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(f"{arg}: expected a MultiModalDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{arg}: the dataset is empty")
    targets = dataset[torch.arange(1)].targets
    missing = [t for t in tasks if t not in targets]
    if missing:
        raise ValueError(f"{arg}: no targets for the model's tasks {missing}; dataset targets are {list(targets)}")


def _check_choice(arg: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{arg}: expected one of {list(choices)}, got {value!r}")


def _check_int(arg: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")


# ---------------------------------------------------------------------------------------------------- CLI
DATASETS = ("handwritten", "nutrimouse", "synthetic-interaction", "synthetic-temporal")


def load_dataset(name: str, seed: int = 0, samples: int | None = None):
    """The named benchmark dataset as a :class:`~mmgraph.data.MultiModalDataset` (``samples`` sizes the synthetic
    ones)."""
    _check_choice("dataset", name, DATASETS)
    if samples is not None:
        _check_int("samples", samples, 10)
    from mmgraph import data
    from mmgraph.data import synthetic

    sizes = {} if samples is None else {"n": samples}
    if name == "handwritten":
        return data.load_handwritten()
    if name == "nutrimouse":
        return data.load_nutrimouse()
    if name == "synthetic-interaction":
        return synthetic.make_interaction(seed=seed, **sizes)
    return synthetic.make_temporal(seed=seed, **sizes)


DEFAULTS: dict[str, Any] = {"epochs": 100, "patience": 15, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-4,
                            "dim": 64, "modality_dropout": 0.2, "val_size": 0.2}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmgraph.train",
        description="Train a FusionModel on a benchmark dataset: stratified 80/20 train/test split with a "
                    "validation part carved from train, standardised with train statistics, early stopping on "
                    "validation, metrics on test.")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--fusion", default="gnn", help="a registered fusion name (default: gnn)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--patience", type=int, default=DEFAULTS["patience"],
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--dim", type=int, default=DEFAULTS["dim"], help="embedding width of every modality")
    parser.add_argument("--modality-dropout", type=float, default=DEFAULTS["modality_dropout"])
    parser.add_argument("--val-size", type=float, default=DEFAULTS["val_size"],
                        help="fraction of the training part held out for validation")
    parser.add_argument("--samples", type=int, default=None, help="size of a synthetic dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch (default 1: these small models run fastest single-threaded, "
                             "and far faster than with threads competing for busy cores)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: runs/DATASET-FUSION)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log, only the summary")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the CLI; returns what it writes to ``metrics.json``."""
    from mmgraph.data import standardize, stratified_split
    from mmgraph.model import FusionModel

    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads: expected an int >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    started = time.perf_counter()
    out = args.out if args.out is not None else Path("runs") / f"{args.dataset}-{args.fusion}"
    dataset = load_dataset(args.dataset, seed=args.seed, samples=args.samples)
    train_idx, val_idx, test_idx = stratified_split(dataset, test_size=0.2, val_size=args.val_size, seed=args.seed)
    train, val, test = standardize(dataset.subset(train_idx), dataset.subset(val_idx), dataset.subset(test_idx))
    seed_everything(args.seed)
    model = FusionModel.from_dataset(train, args.fusion, dim=args.dim, modality_dropout=args.modality_dropout)
    result = fit(model, train, val, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                 epochs=args.epochs, batch_size=args.batch_size, patience=args.patience, device=args.device,
                 seed=args.seed, checkpoint=out / "checkpoint.pt", progress=False if args.quiet else None)
    test_metrics = evaluate(model, test, device=args.device)
    report = {
        "dataset": args.dataset, "fusion": args.fusion,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "best_val_score": result.best_score,
        "test": _jsonable(test_metrics), "fit_time_s": result.time_s, "total_time_s": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(
        f"{task} accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}" if "accuracy" in m
        else f"{task} mse {m['mse']:.4f} r2 {m['r2']:.4f}" for task, m in test_metrics.items())
    print(f"{args.dataset} / {args.fusion}: test {summary} (best epoch {result.best_epoch} of "
          f"{result.epochs_run}, {report['total_time_s']:.1f}s) -> {out}")
    return report


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


if __name__ == "__main__":
    main()
