"""The training loop: :func:`fit` and :class:`FitResult`.

``fit`` trains any :class:`~mmgraph.models.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset`: Adam or SGD with an optional schedule, label smoothing and class weights,
early stopping on a validation metric with the best weights restored, gradient clipping, AMP on CUDA, seeded
shuffling, an atomic SHA-256-checked checkpoint per epoch with exact resume (refused when the training settings
changed, unless overridden), per-epoch CSV/TensorBoard logs, and DistributedDataParallel when launched by
``torchrun``. Batches are gathered with one tensor index per batch (``dataset[indices]``), never by collating samples
one at a time.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from mmgraph.training.checkpoint import (CHECKPOINT_FORMAT, _apply_optimizer_settings, _describe_changes,
                                         _fingerprint, _get_rng_state, _model_settings, _resume_changes,
                                         _set_rng_state, load_checkpoint, save_checkpoint)
from mmgraph.training.checks import (OPTIMIZERS, SCHEDULERS, _check_dataset, _class_weights, _model_tasks,
                                     _parse_monitor, _task_weights)
from mmgraph.training.distributed import _fit_device, _init_distributed, _use_amp
from mmgraph.training.logging import _MetricsLog, _progress_bar
from mmgraph.utils import check_choice as _check_choice
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import seed_everything

__all__ = ["FitResult", "fit"]

logger = logging.getLogger("mmgraph.train")  # the name it had before the package split (docs/training.md)


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
        model: a :class:`~mmgraph.models.FusionModel` (anything with ``model.tasks: {task: num_classes}`` and
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
            weight_decay, momentum, batch_size, patience, monitor, ..., seed, world_size, fingerprints of the
            train and val data, and the model's own settings: encoders, fusion and its options, dim, modality
            dropout, heads, standardised modalities) must equal this call's; ``epochs`` may differ (to extend a
            run) unless ``scheduler="cosine"``. A difference raises ``ValueError`` naming each differing setting,
            before any weights are loaded.
        override: names of settings allowed to differ on resume (e.g. ``("lr", "batch_size")``): the run continues
            with this call's values (the optimizer's learning rate and weight decay included) and the checkpoint
            records them, with each override in ``overrides``. The optimizer type and the settings that shape the
            model's parameters (encoders, fusion, fusion options, dim, heads, tasks, standardisation) cannot be
            overridden.
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
              "train_data": _fingerprint(train_rows), "val_data": _fingerprint(val_rows) if val_rows else None,
              **_model_settings(raw_model)}

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
