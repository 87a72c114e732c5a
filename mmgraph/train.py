"""Training and evaluation: :func:`fit`, :func:`evaluate`, :func:`predict` and the ``python -m mmgraph.train`` CLI.

``fit`` trains any :class:`~mmgraph.model.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset`: Adam or SGD with an optional schedule, label smoothing and class weights,
early stopping on a validation metric with the best weights restored, gradient clipping, AMP on CUDA, seeded
shuffling, an atomic SHA-256-checked checkpoint per epoch with exact resume (refused when the training settings
changed, unless overridden), per-epoch CSV/TensorBoard logs, and DistributedDataParallel when launched by
``torchrun``. Batches are gathered with one tensor index per batch (``dataset[indices]``), never by collating samples
one at a time. The CLI trains on a benchmark data set or a user's ``.npz`` (:func:`load_npz`).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from mmgraph.io import load_file, save_file
from mmgraph.utils import check_choice as _check_choice
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import resolve_device, seed_everything

__all__ = ["FitResult", "evaluate", "fit", "main", "predict"]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adam", "adamw", "sgd")
MONITORS = ("accuracy", "macro_f1", "macro_recall", "mse", "loss")
TASK_METRICS = ("accuracy", "macro_f1", "macro_recall")
SCHEDULERS = (None, "cosine", "plateau")
CHECKPOINT_FORMAT = 2


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: one dict per epoch: ``epoch``, ``train_loss``, ``lr``, ``val_loss``, ``val_<task>_accuracy`` (or
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
    label_smoothing: float = 0.0,
    class_weight: str | Mapping[str, Sequence[float]] | None = None,
    scheduler: str | None = None,
    device: str | torch.device = "auto",
    amp: bool | str = "auto",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    override: Sequence[str] = (),
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    restore_best: bool = True,
) -> FitResult:
    """Train ``model`` on ``train``; early-stop and pick the best epoch on ``val``.

    Args:
        model: a :class:`~mmgraph.model.FusionModel` (anything with ``model.tasks: {task: num_classes}`` and
            ``model(inputs, mask, step_mask) -> {task: Tensor[B, C]}``). Moved to ``device``; trained in place.
        train, val: :class:`~mmgraph.data.MultiModalDataset`; ``dataset[LongTensor[b]]`` must return a
            ``MultiModalBatch`` with ``inputs``, ``mask [b, M]``, ``targets {task: [b]}`` and ``step_mask``.
            Class ids must lie in ``[0, num_classes)`` of the model's task; ``train`` needs at least two classes
            per classification task. Without ``val`` the monitored score is ``-train_loss``.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        epochs: maximum number of epochs; ``patience`` stops earlier after that many epochs without improvement.
        batch_size: samples per step (per process under DDP); a batch of one sample trains like any other.
        monitor: ``"accuracy"`` (mean over classification tasks; ``-mse`` if there are none), ``"macro_f1"``,
            ``"macro_recall"``, ``"mse"`` (negated mean over regression tasks), ``"loss"`` (negated val loss), or
            one task's metric as ``"<task>/<metric>"`` (e.g. ``"intent/accuracy"``, ``"level/mse"``). On the
            classification metrics (which tie often) an epoch with the same score and a lower validation loss
            counts as an improvement.
        grad_clip: max gradient norm, or None.
        task_weights: ``{task: weight}`` for the summed loss (default 1 each). Loss =
            ``Σ_t w_t · (CE or MSE)_t + aux_weight · model.aux_loss``.
        label_smoothing: in ``[0, 1)``, for the training cross-entropy (validation loss is the plain one).
        class_weight: per-class weights of the training cross-entropy: ``"balanced"`` (``n / (k · count_c)`` over
            the ``k`` classes present in ``train``, per task) or ``{task: [w_0, ..., w_{C-1}]}``.
        scheduler: ``None``, ``"cosine"`` (cosine decay from ``lr`` to 0 over ``epochs``) or ``"plateau"`` (halve
            the learning rate after ``max(1, patience // 2)`` epochs, or 5 without ``patience``, without a better
            monitored score).
        device: ``"auto"`` = CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
        amp: mixed precision (``torch.autocast`` float16 + ``GradScaler``); ``"auto"`` = on for CUDA. CUDA only.
        seed: seeds torch and the shuffling generator (``DistributedSampler(seed=seed)`` under DDP); the same seed
            gives the same parameters on the same device with the same number of threads.
        checkpoint: path written atomically after every epoch (by rank 0), with a SHA-256 of its payload; read it
            with :func:`load_checkpoint` (``model``, ``optimizer``, ``best_state``, ``history``, ``config``, ...).
        resume: continue from ``checkpoint`` if it exists (otherwise start fresh); on CPU the result is
            bit-identical to an uninterrupted run. The checkpoint's training settings (``config``: optimizer, lr,
            weight_decay, momentum, batch_size, patience, monitor, ..., seed, world_size and fingerprints of the
            train and val data) must equal this call's; ``epochs`` may differ (to extend a run) unless
            ``scheduler="cosine"``. A difference raises ``ValueError`` naming each differing setting.
        override: names of settings allowed to differ on resume (e.g. ``("lr", "batch_size")``): the run continues
            with this call's values (the optimizer's learning rate and weight decay included) and the checkpoint
            records them, with each override in ``overrides``. The optimizer type cannot be overridden.
        log_dir: folder for ``metrics.csv`` (one row per epoch, the whole history; rewritten every epoch) and, when
            the ``tensorboard`` package is installed, TensorBoard event files. Rank 0 only.
        progress: tqdm bar over epochs (``tqdm.auto``: a widget in notebooks); None = only when stderr is a terminal.
            Rank 0 only.
        restore_best: load the best epoch's weights into ``model`` at the end.

    Returns:
        :class:`FitResult`.
    """
    started = time.perf_counter()
    tasks = _model_tasks(model)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    monitor_task, monitor_metric = _parse_monitor(monitor, tasks)
    _check_choice("scheduler", scheduler, SCHEDULERS)
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
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not (
            0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing: expected a number in [0, 1), got {label_smoothing!r}")
    if grad_clip is not None and (not isinstance(grad_clip, (int, float)) or grad_clip <= 0):
        raise ValueError(f"grad_clip: expected a positive number or None, got {grad_clip!r}")
    weights = _task_weights(task_weights, tasks)
    if resume and checkpoint is None:
        raise ValueError("resume: True needs a checkpoint path")
    if isinstance(override, str) or not all(isinstance(name, str) for name in override):
        raise TypeError(f"override: expected a tuple of setting names, e.g. ('lr',), got {override!r}")
    train_rows = _check_dataset("train", train, tasks, need_two_classes=True)
    val_rows = _check_dataset("val", val, tasks) if val is not None else None
    class_weights = _class_weights(class_weight, tasks, train_rows.targets)

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
    lr_scheduler = _make_scheduler(scheduler, opt, epochs, patience)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    sampler = (DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
               if world > 1 else None)
    config = {"optimizer": optimizer, "lr": lr, "weight_decay": weight_decay,
              "momentum": momentum if optimizer == "sgd" else None, "epochs": epochs, "batch_size": batch_size,
              "patience": patience, "monitor": monitor, "grad_clip": grad_clip, "task_weights": weights,
              "aux_weight": aux_weight, "label_smoothing": float(label_smoothing),
              "class_weight": class_weight if class_weight in (None, "balanced")
              else {task: [float(w) for w in values] for task, values in class_weights.items()},
              "scheduler": scheduler, "amp": use_amp, "seed": seed, "world_size": world,
              "train_data": _fingerprint(train_rows), "val_data": _fingerprint(val_rows) if val_rows else None}

    history: list[dict[str, float]] = []
    overrides: list[dict[str, Any]] = []
    best_score, best_loss, best_epoch, best_state, stopped, start_epoch = -math.inf, math.inf, 0, None, False, 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {checkpoint} is a format-{state.get('format')} checkpoint of another mmgraph "
                             f"version (this one writes format {CHECKPOINT_FORMAT}); start a new run")
        changed = _resume_changes(checkpoint, state["config"], config, override)
        raw_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if lr_scheduler is not None:
            lr_scheduler.load_state_dict(state["scheduler"])
        _apply_optimizer_settings(opt, lr_scheduler, config, "lr" in changed, state["epoch"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"], generator, device)
        history, start_epoch, stopped = state["history"], state["epoch"], state["stopped"]
        best_score, best_epoch, best_state = state["best_score"], state["best_epoch"], state["best_state"]
        best_loss, overrides = state["best_loss"], state["overrides"]
        if changed:
            overrides.append({"epoch": start_epoch, **{name: [old, new] for name, (old, new) in changed.items()}})
            logger.warning("resuming %s with overridden settings: %s", checkpoint, _describe_changes(changed))
        logger.info("resumed from %s at epoch %d", checkpoint, start_epoch)

    show = (sys.stderr.isatty() if progress is None else bool(progress)) and rank == 0
    bar = _progress_bar(epochs, start_epoch, show)
    metrics_log = _MetricsLog(log_dir, start_epoch) if log_dir is not None and rank == 0 else None
    ties_by_loss = val is not None and monitor_metric in ("accuracy", "macro_f1", "macro_recall")
    epoch = start_epoch
    while epoch < epochs and not stopped:
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
        else:
            order = torch.randperm(len(train), generator=generator)
        train_loss = _train_epoch(net, raw_model, train, order, opt, scaler, tasks, weights, aux_weight,
                                  batch_size, grad_clip, device, use_amp, world, label_smoothing, class_weights)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"fit: the training loss became {train_loss} in epoch {epoch + 1}; lower `lr`, "
                                     "set `grad_clip`, or check the inputs")
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
        if val is not None:
            record.update(_validate(raw_model, val, tasks, weights, batch_size, device, use_amp, world, rank))
            record["score"] = _score(record, monitor_task, monitor_metric, tasks)
        else:
            record["score"] = -train_loss
        record["time_s"] = time.perf_counter() - started
        history.append(record)
        epoch += 1
        loss = record.get("val_loss", train_loss)
        if record["score"] > best_score or (ties_by_loss and record["score"] == best_score and loss < best_loss):
            best_score, best_loss, best_epoch = record["score"], loss, epoch
            best_state = {k: v.detach().clone() for k, v in raw_model.state_dict().items()}
        elif patience is not None and epoch - best_epoch >= patience:
            stopped = True
        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            lr_scheduler.step(record["score"])
        elif lr_scheduler is not None:
            lr_scheduler.step()
        if rank == 0:
            logger.info("epoch %d/%d %s", epoch, epochs,
                        " ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("epoch", "time_s")))
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", score=f"{record['score']:.4f}")
            if metrics_log is not None:
                metrics_log.write(history)
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "stopped": stopped,
                    "model": raw_model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                    "scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                    "best_score": best_score, "best_loss": best_loss, "best_epoch": best_epoch,
                    "best_state": best_state, "history": history, "overrides": overrides,
                    "rng": _get_rng_state(generator, device)})
    bar.close()
    if metrics_log is not None:
        metrics_log.close()
    if restore_best and best_state is not None:
        raw_model.load_state_dict(best_state)
    return FitResult(history=history, best_epoch=best_epoch, best_score=float(best_score), epochs_run=epoch,
                     time_s=time.perf_counter() - started)


def _train_epoch(net: nn.Module, raw_model: nn.Module, train, order: Tensor, opt: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, tasks: dict[str, int], weights: dict[str, float], aux_weight: float,
                 batch_size: int, grad_clip: float | None, device: torch.device, use_amp: bool, world: int,
                 label_smoothing: float, class_weights: dict[str, Tensor]) -> float:
    """One pass over ``order``; returns the mean training loss (the only host sync of the epoch)."""
    net.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    class_weights = {task: w.to(device) for task, w in class_weights.items()}
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = train[indices].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            outputs = net(batch.inputs, batch.named_mask, batch.step_mask)
            loss = _task_loss(outputs, batch.targets, tasks, weights, label_smoothing=label_smoothing,
                              class_weights=class_weights)
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
               weights: dict[str, float], reduction: str = "mean", label_smoothing: float = 0.0,
               class_weights: Mapping[str, Tensor] | None = None) -> Tensor:
    """``Σ_t w_t · loss_t``: cross-entropy (optionally label-smoothed and class-weighted) for classification, MSE
    for regression (``num_classes == 0``)."""
    total = 0.0
    for task, classes in tasks.items():
        output = outputs[task].float()
        if classes:
            loss = F.cross_entropy(output, targets[task].long(), reduction=reduction, label_smoothing=label_smoothing,
                                   weight=(class_weights or {}).get(task))
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
            outputs = model(batch.inputs, batch.named_mask, batch.step_mask)
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


def _score(record: Mapping[str, float], monitor_task: str | None, metric: str, tasks: dict[str, int]) -> float:
    """The monitored value, higher is better (``mse`` and ``loss`` negated)."""
    if monitor_task is not None:
        value = record[f"val_{monitor_task}_{metric}"]
        return -value if metric == "mse" else value
    classification = [t for t, c in tasks.items() if c]
    regression = [t for t, c in tasks.items() if not c]
    if metric == "loss":
        return -record["val_loss"]
    if metric == "mse" or (metric == "accuracy" and not classification):
        return -sum(record[f"val_{t}_mse"] for t in regression) / len(regression)
    return sum(record[f"val_{t}_{metric}"] for t in classification) / len(classification)


def _parse_monitor(monitor: Any, tasks: dict[str, int]) -> tuple[str | None, str]:
    """``(task or None, metric)`` of a ``monitor`` value: a metric over all tasks, or ``"<task>/<metric>"``."""
    if isinstance(monitor, str) and "/" in monitor:
        task, metric = monitor.split("/", 1)
        if task not in tasks:
            raise ValueError(f"monitor: unknown task {task!r} in {monitor!r}; the model's tasks are {list(tasks)}")
        allowed = TASK_METRICS if tasks[task] else ("mse",)
        if metric not in allowed:
            kind = "classification" if tasks[task] else "regression"
            raise ValueError(f"monitor: {kind} task {task!r} has metrics {[f'{task}/{m}' for m in allowed]}, "
                             f"got {monitor!r}")
        return task, metric
    _check_choice("monitor", monitor, MONITORS)
    if monitor in ("macro_f1", "macro_recall") and not any(tasks.values()):
        raise ValueError(f"monitor: {monitor!r} needs a classification task; tasks are {tasks}")
    if monitor == "mse" and all(tasks.values()):
        raise ValueError(f"monitor: 'mse' needs a regression task (num_classes 0); tasks are {tasks}")
    return None, monitor


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
def predict(model: nn.Module, data, batch_size: int = 256, device: str | torch.device = "auto",
            logits: bool = False, proba: bool = False, mask=None) -> dict[str, Any]:
    """Predictions of ``model`` for every sample of ``data``, on CPU.

    Args:
        model: a :class:`~mmgraph.model.FusionModel` (trained, or loaded with ``FusionModel.load``).
        data: a :class:`~mmgraph.data.MultiModalDataset` (targets not needed), or raw arrays
            ``{modality: ndarray | Tensor [N, ...]}`` in any key order (``mask`` optional). Modalities are matched
            to the model's by name.
        mask: only with a dict ``data``: ``{modality: bool array [N]}`` or a bool array ``[N, M]`` whose columns
            follow ``data``'s key order; True = present (a masked entry may hold NaN).
        logits: return the raw outputs ``Tensor[N, C]`` per task.
        proba: return class probabilities ``Tensor[N, C]`` (softmax) for classification tasks (regression tasks
            give their values ``Tensor[N]``).

    Returns:
        ``{task: predictions}``: class labels ``LongTensor[N]`` -- or, for a task trained on string labels, an
        ndarray of those strings -- and values ``Tensor[N]`` for regression. The model is evaluated in eval mode
        on ``device`` (its previous mode is restored).
    """
    from mmgraph.data import MultiModalDataset

    _check_int("batch_size", batch_size, 1)
    if logits and proba:
        raise ValueError("logits, proba: pick one; logits=True gives raw scores, proba=True probabilities")
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    tasks = _model_tasks(raw_model)
    if isinstance(data, Mapping):
        data = MultiModalDataset(data, None, mask=mask)
    elif mask is not None:
        raise ValueError("mask: only used with a dict of arrays; a MultiModalDataset carries its own mask")
    elif not isinstance(data, MultiModalDataset):
        hint = (" (a MultiModalBatch: pass predict(model, batch.inputs, mask=batch.named_mask))"
                if hasattr(data, "inputs") else "")
        raise TypeError(f"data: expected a MultiModalDataset or a dict {{modality: array [N, ...]}}, got "
                        f"{type(data).__name__}{hint}")
    _check_modalities("data", data.modalities, raw_model)
    device = resolve_device(device)
    raw_model.to(device)
    was_training = raw_model.training
    raw_model.eval()
    chunks: dict[str, list[Tensor]] = {task: [] for task in tasks}
    try:
        for start in range(0, len(data), batch_size):
            batch = data[torch.arange(start, min(start + batch_size, len(data)))].to(device, non_blocking=True)
            outputs = raw_model(batch.inputs, batch.named_mask, batch.step_mask)
            for task in tasks:
                chunks[task].append(outputs[task].float().cpu())
    finally:
        raw_model.train(was_training)
    results = {task: torch.cat(parts) for task, parts in chunks.items()}
    if logits:
        return results
    if proba:
        return {task: out.softmax(-1) if tasks[task] else out.squeeze(-1) for task, out in results.items()}
    predictions: dict[str, Any] = {}
    for task, out in results.items():
        if not tasks[task]:
            predictions[task] = out.squeeze(-1)
        elif task in getattr(raw_model, "string_labels", ()):
            predictions[task] = np.asarray(raw_model.class_names[task])[out.argmax(-1).numpy()]
        else:
            predictions[task] = out.argmax(-1)
    return predictions


def evaluate(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "auto"
             ) -> dict[str, dict[str, Any]]:
    """Metrics of ``model`` on ``dataset`` (a :class:`~mmgraph.data.MultiModalDataset` with targets for the
    model's tasks): ``{task: classification_metrics(...)}`` (accuracy, macro_recall, macro_f1, confusion_matrix)
    or ``{task: regression_metrics(...)}`` (mse, mae, r2); the regression task ``"sentiment"`` (MOSI / MOSEI)
    also gets ``sentiment_metrics`` (acc2, acc2_nonzero, f1, f1_nonzero, acc7, pearson). String labels are matched
    to the model's classes by name, so a test set may hold fewer classes than the training set."""
    from mmgraph.data import MultiModalDataset
    from mmgraph.metrics import classification_metrics, regression_metrics, sentiment_metrics

    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    tasks = _model_tasks(raw_model)
    if not isinstance(dataset, MultiModalDataset):
        raise TypeError(f"dataset: expected a MultiModalDataset with targets, got {type(dataset).__name__}; for "
                        "raw arrays use predict(model, {modality: array}) and compare with your labels")
    missing = [task for task in tasks if task not in dataset.tasks]
    if missing:
        raise ValueError(f"dataset: no targets for the model's tasks {missing}; the dataset has tasks "
                         f"{list(dataset.tasks)}. Name the targets as the model's tasks, e.g. "
                         f"MultiModalDataset(features, {{{missing[0]!r}: labels}})")
    outputs = predict(model, dataset, batch_size=batch_size, device=device, logits=True)
    targets = dataset.targets
    metrics = {}
    for task, classes in tasks.items():
        if not classes:
            metrics[task] = regression_metrics(targets[task], outputs[task].squeeze(-1))
            if task == "sentiment":
                metrics[task].update(sentiment_metrics(targets[task], outputs[task].squeeze(-1)))
            continue
        metrics[task] = classification_metrics(_model_class_ids(raw_model, dataset, task), outputs[task], classes)
    return metrics


def _model_class_ids(model: nn.Module, dataset, task: str) -> Tensor:
    """``dataset``'s targets of ``task`` as the model's class ids: string labels are matched by class name."""
    targets = dataset.targets[task]
    if task not in dataset.string_labels:
        return targets
    model_names = getattr(model, "class_names", {}).get(task)
    if model_names is None or task not in getattr(model, "string_labels", ()):
        raise ValueError(f"dataset: targets[{task!r}] are strings but the model was trained on class ids; build "
                         "the dataset with the same kind of labels as the training set")
    lookup = {name: i for i, name in enumerate(model_names)}
    unknown = [name for name in dataset.class_names[task] if name not in lookup]
    if unknown:
        raise ValueError(f"dataset: targets[{task!r}] hold classes {unknown} the model does not know; its classes "
                         f"are {model_names}")
    to_model = torch.tensor([lookup[name] for name in dataset.class_names[task]], dtype=torch.long)  # per class
    return to_model[targets]


def _check_modalities(arg: str, modalities: list[str], model: nn.Module) -> None:
    expected = list(getattr(model, "modalities", modalities))
    missing = [m for m in expected if m not in modalities]
    unknown = [m for m in modalities if m not in expected]
    if missing or unknown:
        raise ValueError(f"{arg}: the model takes modalities {expected}; missing {missing}, unknown {unknown}")


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


def _make_scheduler(name: str | None, opt: torch.optim.Optimizer, epochs: int, patience: int | None):
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5,
                                                          patience=max(1, patience // 2) if patience else 5)
    return None


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


def _class_weights(class_weight: Any, tasks: dict[str, int], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``{task: FloatTensor[C]}`` cross-entropy weights of the classification tasks (empty when None)."""
    if class_weight is None:
        return {}
    classification = [task for task, classes in tasks.items() if classes]
    if class_weight == "balanced":
        weights = {}
        for task in classification:
            counts = torch.bincount(targets[task].long(), minlength=tasks[task]).double()
            present = counts > 0
            weights[task] = torch.where(present, counts.sum() / (present.sum() * counts.clamp(min=1)), 0.0).float()
        return weights
    if not isinstance(class_weight, Mapping):
        raise TypeError(f"class_weight: expected None, 'balanced' or {{task: [weight per class]}}, got "
                        f"{class_weight!r}")
    unknown = [task for task in class_weight if task not in classification]
    if unknown:
        raise ValueError(f"class_weight: {unknown} are not classification tasks of the model; expected some of "
                         f"{classification}")
    weights = {}
    for task, values in class_weight.items():
        tensor = torch.as_tensor(values, dtype=torch.float32) if not isinstance(values, (str, Mapping)) else None
        if tensor is None or tensor.shape != (tasks[task],) or not torch.isfinite(tensor).all() or (
                tensor < 0).any() or tensor.sum() <= 0:
            raise ValueError(f"class_weight[{task!r}]: expected {tasks[task]} non-negative finite weights (one per "
                             f"class, not all 0), got {values!r}")
        weights[task] = tensor
    return weights


class _MetricsLog:
    """Per-epoch metrics of rank 0: ``log_dir/metrics.csv`` (the whole history, rewritten each epoch, so that a
    resumed run's file is complete) and TensorBoard scalars when ``tensorboard`` is installed."""

    def __init__(self, log_dir: str | Path, start_epoch: int) -> None:
        self.path = Path(log_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra: pip install "mmgraph[log]"
            self.writer = None
        else:
            self.writer = SummaryWriter(str(self.path.parent), purge_step=start_epoch + 1)

    def write(self, history: list[dict[str, float]]) -> None:
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        if self.writer is not None:
            record = history[-1]
            for key, value in record.items():
                if key != "epoch":
                    self.writer.add_scalar(key, value, int(record["epoch"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


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


def _check_dataset(arg: str, dataset, tasks: dict[str, int], need_two_classes: bool = False):
    """Every row of ``dataset`` as one batch, after checking it has targets for the model's tasks with class ids in
    ``[0, num_classes)`` (and, with ``need_two_classes``, at least two classes per classification task)."""
    from mmgraph.data import MultiModalDataset

    if not isinstance(dataset, MultiModalDataset):
        raise TypeError(f"{arg}: expected a MultiModalDataset, got {type(dataset).__name__}; wrap your arrays as "
                        "MultiModalDataset({modality: X [N, ...]}, y) (one entry per modality, targets [N])")
    if len(dataset) == 0:
        raise ValueError(f"{arg}: the dataset is empty")
    rows = dataset[torch.arange(len(dataset))]
    missing = [t for t in tasks if t not in rows.targets]
    if missing:
        raise ValueError(f"{arg}: no targets for the model's tasks {missing}; dataset targets are "
                         f"{list(rows.targets)}")
    for task, classes in tasks.items():
        if not classes:
            continue
        target = rows.targets[task]
        outside = target[(target < 0) | (target >= classes)].unique()
        if len(outside):
            raise ValueError(f"{arg}: task {task!r} has class ids {outside[:5].tolist()} outside [0, {classes}); the "
                             f"model's head for {task!r} has {classes} classes")
        present = target.unique()
        if need_two_classes and len(present) < 2:
            raise ValueError(f"{arg}: task {task!r} has a single class ({present.tolist()}) in these "
                             f"{len(dataset)} samples; a classifier needs at least two to learn from (a subset "
                             f"that lost classes? split with mmgraph.data.stratified_split)")
    return rows


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


def load_npz(path: str | Path, targets: Sequence[str] = ("label",)):
    """A user's data set from a ``.npz`` file as a :class:`~mmgraph.data.MultiModalDataset`.

    The file holds one array per modality under its name (``[N, ...]``), the targets under ``label`` (or the keys
    named in ``targets``; integer arrays are classes, float arrays regression) and, optionally, boolean
    ``<modality>_mask`` arrays ``[N]`` (True = present). Every other key is a modality.
    """
    import numpy as np

    from mmgraph.data import MultiModalDataset

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--data: no such file {str(path)!r}")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as error:
        raise ValueError(f"--data: {str(path)!r} is not a readable .npz file ({error})") from None
    missing = [key for key in targets if key not in arrays]
    if missing:
        raise ValueError(f"--data: {str(path)!r} has no target arrays {missing} (--targets); its keys are "
                         f"{sorted(arrays)}")
    masks = {key[:-len("_mask")]: arrays.pop(key) for key in list(arrays) if key.endswith("_mask")
             and key not in targets}
    labels = {key: arrays.pop(key) for key in targets}
    unknown = [f"{name}_mask" for name in masks if name not in arrays]
    if unknown:
        raise ValueError(f"--data: mask arrays {unknown} name no modality; modalities are {sorted(arrays)}")
    for name, mask in masks.items():
        if mask.dtype != np.bool_ or mask.shape != arrays[name].shape[:1]:
            raise ValueError(f"--data: {name}_mask: expected a boolean array of shape {arrays[name].shape[:1]}, got "
                             f"{mask.dtype} {mask.shape}")
    if not arrays:
        raise ValueError(f"--data: {str(path)!r} holds no modality arrays besides the targets {list(targets)}")
    flat = [name for name, array in arrays.items() if array.ndim < 2]
    if flat:
        raise ValueError(f"--data: {flat[0]!r} is one value per sample (shape {arrays[flat[0]].shape}); a modality "
                         "needs [N, F] features: name it in --targets if it is a target, or store it as [N, 1]")
    return MultiModalDataset(arrays, labels, mask=masks or None, name=path.stem)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmgraph.train",
        description="Train a FusionModel on a benchmark dataset or your own .npz: stratified 80/20 train/test split "
                    "with a validation part carved from train, standardised with train statistics, early stopping "
                    "on validation, metrics on test. Writes DIR/checkpoint.pt, DIR/metrics.csv (per epoch) and "
                    "DIR/metrics.json (test metrics).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", choices=DATASETS)
    source.add_argument("--data", type=Path, metavar="FILE.npz",
                        help="your data: one array per modality under its name, targets under 'label' (or "
                             "--targets), optional boolean '<modality>_mask' arrays [N]")
    parser.add_argument("--targets", nargs="+", default=["label"], metavar="KEY",
                        help="target arrays of --data (default: label); integer = classes, float = regression")
    parser.add_argument("--fusion", default="gnn", help="a registered fusion name (default: gnn)")
    parser.add_argument("--epochs", type=_number(int, 1), default=DEFAULTS["epochs"])
    parser.add_argument("--patience", type=_number(int, 1), default=DEFAULTS["patience"],
                        help="epochs without validation improvement before stopping")
    parser.add_argument("--batch-size", type=_number(int, 1), default=DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=_number(float, 0, strict=True), default=DEFAULTS["lr"])
    parser.add_argument("--weight-decay", type=_number(float, 0), default=DEFAULTS["weight_decay"])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--scheduler", choices=[s for s in SCHEDULERS if s], default=None)
    parser.add_argument("--label-smoothing", type=_number(float, 0, below=1), default=0.0)
    parser.add_argument("--dim", type=_number(int, 1), default=DEFAULTS["dim"], help="embedding width of every "
                        "modality")
    parser.add_argument("--modality-dropout", type=_number(float, 0, below=1), default=DEFAULTS["modality_dropout"])
    gnn = parser.add_argument_group("GNN fusion (--fusion gnn)")
    gnn.add_argument("--conv", choices=("gcn", "gat", "gatv2", "sage"), default=None)
    gnn.add_argument("--layers", type=_number(int, 0), default=None)
    gnn.add_argument("--heads", type=_number(int, 1), default=None, help="GAT heads (must divide --dim)")
    gnn.add_argument("--relations", default=None, help="complete, star, star:<modality> or chain")
    gnn.add_argument("--readout", choices=("mean", "max", "sum", "attention"), default=None)
    gnn.add_argument("--temporal-window", type=_number(int, 0), default=None,
                     help="sequence modalities: edges between steps up to this far apart")
    gnn.add_argument("--edge-pruning", type=_number(float, 0, below=1), default=None,
                     help="GAT/GATv2: fraction of each node's in-edges dropped after every layer, lowest attention "
                          "first (MTAG-style; default 0 = off)")
    parser.add_argument("--val-size", type=_number(float, 0, strict=True, below=1), default=DEFAULTS["val_size"],
                        help="fraction of the training part held out for validation")
    parser.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                        help="z-score float modalities with training statistics kept inside the model, so a "
                             "--save-model file takes raw arrays (default: on)")
    parser.add_argument("--samples", type=_number(int, 10), default=None, help="size of a synthetic dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=_number(int, 1), default=1,
                        help="CPU threads for torch (default 1: these small models run fastest single-threaded, "
                             "and far faster than with threads competing for busy cores); results are "
                             "reproducible at the same thread count on the same device")
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default: runs/DATASET-FUSION, or runs/FILE-FUSION for --data)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    run.add_argument("--overwrite", action="store_true", help="start over even if --out holds a checkpoint")
    parser.add_argument("--save-model", type=Path, default=None, metavar="PATH",
                        help="also write the trained model as one self-describing file (FusionModel.save)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log, only the summary")
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="write explain_<i>.png (the modality graph: readout weights, attention) for the first N "
                             "test samples; needs the gnn fusion")
    return parser


def _number(kind: type, low: float, strict: bool = False, below: float | None = None):
    """An argparse ``type`` for an int/float in a range, so a bad value is a one-line usage error."""
    bounds = f"{'>' if strict else '>='} {low}" + (f" and < {below}" if below is not None else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'} {bounds}, got "
                                             f"{text!r}") from None
        if value < low or (strict and value == low) or (below is not None and value >= below) or value != value:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'} {bounds}, got "
                                             f"{text!r}")
        return value

    return parse


def _prepare_out(parser: argparse.ArgumentParser, args: argparse.Namespace, out: Path) -> None:
    """Refuse to overwrite an earlier run's checkpoint unless asked, and check that ``out`` (and the
    ``--save-model`` folder) can be written, before any data is loaded or any epoch is trained."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out: {str(out)!r} exists and is not a directory")
    if (out / "checkpoint.pt").exists() and not (args.resume or args.overwrite):
        parser.error(f"--out: {str(out)!r} already holds the checkpoint of an earlier run; pass --resume to "
                     "continue it or --overwrite to start over")
    folders = [out] + ([args.save_model.parent] if args.save_model is not None else [])
    for folder, flag in zip(folders, ("--out", "--save-model")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            parser.error(f"{flag}: cannot write to {str(folder)!r} ({error.strerror or error})")
    if args.resume and not (out / "checkpoint.pt").exists():
        logger.warning("--resume: no checkpoint in %s; starting a new run", out)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the CLI; returns what it writes to ``metrics.json`` (None on ranks other than 0 under torchrun)."""
    from mmgraph.data import stratified_split
    from mmgraph.model import FusionModel

    parser = _parser()
    args = parser.parse_args(argv)
    if args.explain < 0 or (args.explain and args.fusion != "gnn"):
        parser.error(f"--explain: expected N >= 0 with --fusion gnn, got {args.explain} with {args.fusion!r}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        logging.getLogger("mmgraph").setLevel(logging.WARNING)
    started = time.perf_counter()
    name = args.dataset if args.data is None else args.data.stem
    out = args.out if args.out is not None else Path("runs") / f"{name}-{args.fusion}"
    _prepare_out(parser, args, out)
    gnn_options = {key: value for key in ("conv", "layers", "heads", "relations", "readout", "temporal_window",
                                                "edge_pruning")
                   if (value := getattr(args, key)) is not None}
    if gnn_options and args.fusion != "gnn":
        parser.error(f"--{'/--'.join(k.replace('_', '-') for k in gnn_options)}: GNN options need --fusion gnn, "
                     f"got --fusion {args.fusion}")
    try:
        dataset = (load_dataset(args.dataset, seed=args.seed, samples=args.samples) if args.data is None
                   else load_npz(args.data, args.targets))
        parts = stratified_split(dataset, test_size=0.2, val_size=args.val_size, seed=args.seed)
        train, val, test = (dataset.subset(part) for part in parts)
        seed_everything(args.seed)
        # the statistics live in the model (buffers), so a --save-model file takes raw arrays at predict time
        model = FusionModel.from_dataset(train, args.fusion, dim=args.dim, modality_dropout=args.modality_dropout,
                                         fusion_kwargs=gnn_options, standardize=args.standardize)
        result = fit(model, train, val, optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                     epochs=args.epochs, batch_size=args.batch_size, patience=args.patience,
                     label_smoothing=args.label_smoothing, scheduler=args.scheduler, device=args.device,
                     seed=args.seed, checkpoint=out / "checkpoint.pt", resume=args.resume, log_dir=out,
                     progress=False if args.quiet else None)
    except (ValueError, TypeError) as error:  # bad data or options: one line, as argparse reports
        parser.error(str(error))
    report = _report(args, name, out, model, result, (train, val, test), started) if rank == 0 else None
    _finish_distributed()
    return report


def _report(args: argparse.Namespace, name: str, out: Path, model: nn.Module, result: FitResult, parts: tuple,
            started: float) -> dict[str, Any]:
    """Rank 0's end of the CLI: test metrics, ``--save-model``, ``metrics.json`` and the summary line."""
    train, val, test = parts
    test_metrics = evaluate(model, test, device=args.device)
    if args.save_model is not None:
        model.save(args.save_model)
    report = {
        "dataset": name, "fusion": args.fusion,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "best_val_score": result.best_score,
        "test": _jsonable(test_metrics), "fit_time_s": result.time_s, "total_time_s": time.perf_counter() - started,
    }
    if args.explain:
        report["explanations"] = [str(path) for path in _write_explanations(model, test, args.explain, out)]
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    summary = ", ".join(
        f"{task} accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}" if "accuracy" in m
        else f"{task} mse {m['mse']:.4f} r2 {m['r2']:.4f}" for task, m in test_metrics.items())
    print(f"{name} / {args.fusion}: test {summary} (best epoch {result.best_epoch} of "
          f"{result.epochs_run}, {report['total_time_s']:.1f}s) -> {out}")
    return report


def _write_explanations(model: nn.Module, test, count: int, out: Path) -> list[Path]:
    """``explain_<i>.png`` for the first ``count`` test samples (fewer if the test set is smaller)."""
    import matplotlib.pyplot as plt

    from mmgraph.viz import plot_explanation

    batch = test[torch.arange(min(count, len(test)))]
    model.cpu()
    explanation = model.explain(batch.inputs, batch.named_mask, batch.step_mask)
    paths = []
    for sample in range(len(batch)):
        figure = plot_explanation(explanation, sample=sample)
        paths.append(out / f"explain_{sample}.png")
        figure.savefig(paths[-1], dpi=110, bbox_inches="tight")
        plt.close(figure)
    return paths


def _finish_distributed() -> None:
    """Under torchrun: wait until every rank is done (rank 0 evaluates and writes meanwhile), then tear the process
    group down together; a rank that destroys its gloo group while another still works can hang (seen on torch
    2.4)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
