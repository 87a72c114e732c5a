"""The training loop: :func:`fit` and :class:`FitResult`.

``fit`` trains any :class:`~mmgraph.models.FusionModel` (or a module with the same call) on a
:class:`~mmgraph.data.MultiModalDataset` with the settings of a :class:`~mmgraph.training.TrainConfig`: Adam or SGD
with an optional schedule, label smoothing and class weights, early stopping on a validation metric with the best
weights restored, gradient clipping, AMP on CUDA, seeded shuffling, an atomic SHA-256-checked checkpoint per epoch
with exact resume (refused when the training settings changed, unless overridden), callbacks and loggers (CSV,
TensorBoard, your own), and DistributedDataParallel when launched by ``torchrun``. Training batches come from a
``DataLoader`` whose batch sampler yields one index tensor per batch, gathered with one ``dataset[indices]`` call
(``MultiModalDataset.__getitems__``), in this process or in ``num_workers`` worker processes.
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
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from mmgraph.training.callbacks import HOOKS, call_hook, check_hooks
from mmgraph.training.checkpoint import (CHECKPOINT_FORMAT, _apply_optimizer_settings, _describe_changes,
                                         _get_rng_state, _model_settings, _resume_changes, _set_rng_state,
                                         data_fingerprint, load_checkpoint, save_checkpoint)
from mmgraph.training.checks import _check_dataset, _class_weights, _model_tasks, _parse_monitor, _task_weights
from mmgraph.training.config import TrainConfig, resolve_config
from mmgraph.training.distributed import _fit_device, _init_distributed, _use_amp
from mmgraph.training.loggers import default_loggers
from mmgraph.training.logging import _progress_bar
from mmgraph.training.validation import _score, _task_loss, _validate
from mmgraph.utils import seed_everything

__all__ = ["FitResult", "fit"]

logger = logging.getLogger("mmgraph.train")  # the name it had before the package split (docs/training.md)

_D = TrainConfig  # the defaults of fit's keyword settings are TrainConfig's


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
        config: the settings the run used.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf
    epochs_run: int = 0
    time_s: float = 0.0
    config: TrainConfig | None = None


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    optimizer: str = _D.optimizer,
    lr: float = _D.lr,
    weight_decay: float = _D.weight_decay,
    momentum: float = _D.momentum,
    epochs: int = _D.epochs,
    batch_size: int = _D.batch_size,
    patience: int | None = _D.patience,
    monitor: str = _D.monitor,
    grad_clip: float | None = _D.grad_clip,
    task_weights: Mapping[str, float] | None = _D.task_weights,
    aux_weight: float = _D.aux_weight,
    label_smoothing: float = _D.label_smoothing,
    class_weight: str | Mapping[str, Sequence[float]] | None = _D.class_weight,
    scheduler: str | None = _D.scheduler,
    device: str | torch.device = "auto",
    amp: bool | str = _D.amp,
    seed: int = _D.seed,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    override: Sequence[str] = (),
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    restore_best: bool = _D.restore_best,
    num_workers: int = _D.num_workers,
    config: TrainConfig | None = None,
    callbacks: Sequence[Any] | None = None,
    loggers: Sequence[Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; early-stop and pick the best epoch on ``val``.

    The training settings (``optimizer`` .. ``num_workers``) default to :class:`~mmgraph.training.TrainConfig`'s
    values; pass them as keywords or as one ``config=TrainConfig(...)`` (not both for the same setting).

    Args:
        model: a :class:`~mmgraph.models.FusionModel` (anything with ``model.tasks: {task: num_classes}`` and
            ``model(inputs, mask, step_mask) -> {task: Tensor[B, C]}``). Moved to ``device``; trained in place.
        train, val: :class:`~mmgraph.data.MultiModalDataset`; ``dataset[LongTensor[b]]`` must return a
            ``MultiModalBatch`` with ``inputs``, ``mask [b, M]``, ``targets {task: [b]}`` and ``step_mask``.
            Class ids must lie in ``[0, num_classes)`` of the model's task; ``train`` needs at least two classes
            per classification task. Without ``val`` the monitored score is ``-train_loss``. Neither is copied.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        epochs: maximum number of epochs; ``patience`` stops earlier after that many epochs without improvement
            (None: never).
        batch_size: samples per step (per process under DDP); a batch of one sample trains like any other.
        monitor: ``"accuracy"`` (mean over classification tasks; ``-mse`` if there are none), ``"macro_f1"``,
            ``"macro_recall"``, ``"mse"`` (negated mean over regression tasks), ``"loss"`` (negated val loss), or
            one task's metric as ``"<task>/<metric>"`` (e.g. ``"intent/accuracy"``, ``"level/mse"``). The metrics
            are :func:`mmgraph.metrics.confusion_metrics` -- what :func:`~mmgraph.training.evaluate` reports. On
            the classification metrics (which tie often) an epoch with the same score and a lower validation loss
            counts as an improvement.
        grad_clip: max gradient norm, or None.
        task_weights: ``{task: weight}`` for the summed loss (default 1 each). Loss =
            ``Σ_t w_t · (CE or MSE)_t + aux_weight · model.aux_loss + model.unimodal_loss(...)`` (the unimodal
            heads' loss of a :class:`~mmgraph.models.FusionModel` with ``unimodal_weight > 0``, weighted by the
            same task and class weights).
        label_smoothing: in ``[0, 1)``, for the training cross-entropy (validation loss is the plain one).
        class_weight: per-class weights of the training cross-entropy: ``"balanced"`` (``n / (k · count_c)`` over
            the ``k`` classes present in ``train``, per task) or ``{task: [w_0, ..., w_{C-1}]}``.
        scheduler: ``None``, ``"cosine"`` (cosine decay from ``lr`` to 0 over ``epochs``) or ``"plateau"`` (halve
            the learning rate after ``max(1, patience // 2)`` epochs, or 5 without ``patience``, without a better
            monitored score).
        device: ``"auto"`` = CUDA when available (``cuda:LOCAL_RANK`` under torchrun), else CPU.
        amp: mixed precision (``torch.autocast`` float16 + ``GradScaler``); ``"auto"`` = on for CUDA. CUDA only.
        seed: seeds torch and the shuffling generator (``DistributedSampler(seed=seed)`` under DDP); the same seed
            gives the same parameters on the same device with the same number of threads (whatever
            ``num_workers``).
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
        log_dir: shorthand for ``loggers=[CSVLogger(log_dir), TensorBoardLogger(log_dir)]``: ``metrics.csv`` (one
            row per epoch, the whole history) and, when ``tensorboard`` is installed, event files. Rank 0 only.
        progress: tqdm bar over epochs (``tqdm.auto``: a widget in notebooks); None = only when stderr is a terminal.
            Rank 0 only.
        restore_best: load the best epoch's weights into ``model`` at the end.
        num_workers: DataLoader worker processes gathering the training batches (0 = this process).
        config: all training settings at once (the keywords above must then stay at their defaults).
        callbacks: objects with ``on_fit_start(model, config)``, ``on_epoch_end(epoch, metrics)``,
            ``on_fit_end(result)`` (any subset; :class:`~mmgraph.training.Callback`). Rank 0 only.
        loggers: objects with ``log_hyperparams(config)`` and ``log_metrics(metrics, step)``
            (:class:`~mmgraph.training.Logger`), called with every epoch's record. Rank 0 only.

    Returns:
        :class:`FitResult`.
    """
    started = time.perf_counter()
    config = resolve_config(config, {
        "optimizer": optimizer, "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "epochs": epochs,
        "patience": patience, "batch_size": batch_size, "monitor": monitor, "scheduler": scheduler,
        "label_smoothing": label_smoothing, "grad_clip": grad_clip, "task_weights": task_weights,
        "aux_weight": aux_weight, "class_weight": class_weight, "amp": amp, "seed": seed, "num_workers": num_workers,
        "restore_best": restore_best})
    tasks = _model_tasks(model)
    monitor_task, monitor_metric = _parse_monitor(config.monitor, tasks)
    weights = _task_weights(config.task_weights, tasks)
    if resume and checkpoint is None:
        raise ValueError("resume: True needs a checkpoint path")
    if isinstance(override, str) or not all(isinstance(name, str) for name in override):
        raise TypeError(f"override: expected a tuple of setting names, e.g. ('lr',), got {override!r}")
    callbacks = check_hooks("callbacks", callbacks, HOOKS)
    loggers = check_hooks("loggers", loggers, ("log_metrics", "log_hyperparams"))
    _check_dataset("train", train, tasks, need_two_classes=True)
    if val is not None:
        _check_dataset("val", val, tasks)
    class_weights = _class_weights(config.class_weight, tasks, train.targets)

    world, rank = _init_distributed()
    device = _fit_device(device, world)
    use_amp = _use_amp(config.amp, device)
    generator = seed_everything(config.seed)
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    raw_model.to(device)
    net: nn.Module = raw_model
    if world > 1:
        net = DistributedDataParallel(raw_model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = _make_optimizer(config.optimizer, raw_model.parameters(), config.lr, config.weight_decay, config.momentum)
    lr_scheduler = _make_scheduler(config.scheduler, opt, config.epochs, config.patience)
    state = _EpochState(net, raw_model, opt, torch.amp.GradScaler(device.type, enabled=use_amp), tasks, weights,
                        {task: w.to(device) for task, w in class_weights.items()}, config, device, use_amp, world)
    sampler = (DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
               if world > 1 else None)
    settings = _run_settings(config, weights, class_weights, use_amp, world, train, val, raw_model)

    history: list[dict[str, float]] = []
    overrides: list[dict[str, Any]] = []
    best_score, best_loss, best_epoch, best_state, stopped, start_epoch = -math.inf, math.inf, 0, None, False, 0
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint.exists():
        saved = load_checkpoint(checkpoint, map_location=device)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"resume: {checkpoint} is a format-{saved.get('format')} checkpoint of another mmgraph "
                             f"version (this one writes format {CHECKPOINT_FORMAT}); start a new run")
        changed = _resume_changes(checkpoint, saved["config"], settings, override)
        raw_model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if lr_scheduler is not None:
            lr_scheduler.load_state_dict(saved["scheduler"])
        _apply_optimizer_settings(opt, lr_scheduler, settings, "lr" in changed, saved["epoch"])
        state.scaler.load_state_dict(saved["scaler"])
        _set_rng_state(saved["rng"], generator, device)
        history, start_epoch, stopped = saved["history"], saved["epoch"], saved["stopped"]
        best_score, best_epoch, best_state = saved["best_score"], saved["best_epoch"], saved["best_state"]
        best_loss, overrides = saved["best_loss"], saved["overrides"]
        if changed:
            overrides.append({"epoch": start_epoch, **{name: [old, new] for name, (old, new) in changed.items()}})
            logger.warning("resuming %s with overridden settings: %s", checkpoint, _describe_changes(changed))
        logger.info("resumed from %s at epoch %d", checkpoint, start_epoch)

    if rank != 0:
        callbacks, loggers = [], []
    elif log_dir is not None:
        loggers = loggers + default_loggers(log_dir)
    show = (sys.stderr.isatty() if progress is None else bool(progress)) and rank == 0
    bar = _progress_bar(config.epochs, start_epoch, show)
    batches = _BatchOrder(config.batch_size)
    # its own generator: a DataLoader draws a worker base seed per epoch, which must not advance torch's global RNG
    # (dropout, modality dropout), so that results do not depend on num_workers
    loader = DataLoader(train, batch_sampler=batches, num_workers=config.num_workers, collate_fn=_as_batch,
                        persistent_workers=config.num_workers > 0, generator=torch.Generator().manual_seed(0))
    call_hook(loggers, "log_hyperparams", config)
    call_hook(callbacks, "on_fit_start", raw_model, config)
    ties_by_loss = val is not None and monitor_metric in ("accuracy", "macro_f1", "macro_recall")
    epoch = start_epoch
    while epoch < config.epochs and not stopped:
        if sampler is not None:
            sampler.set_epoch(epoch)
            batches.order = torch.tensor(list(sampler), dtype=torch.long)
        else:
            batches.order = torch.randperm(len(train), generator=generator)
        train_loss = _train_epoch(state, loader)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"fit: the training loss became {train_loss} in epoch {epoch + 1}; lower `lr`, "
                                     "set `grad_clip`, or check the inputs")
        record: dict[str, float] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": opt.param_groups[0]["lr"]}
        if val is not None:
            record.update(_validate(raw_model, val, tasks, weights, config.batch_size, device, use_amp, world, rank))
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
        elif config.patience is not None and epoch - best_epoch >= config.patience:
            stopped = True
        if isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            lr_scheduler.step(record["score"])
        elif lr_scheduler is not None:
            lr_scheduler.step()
        if rank == 0:
            logger.info("epoch %d/%d %s", epoch, config.epochs,
                        " ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("epoch", "time_s")))
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", score=f"{record['score']:.4f}")
            call_hook(loggers, "log_metrics", record, epoch)
            call_hook(callbacks, "on_epoch_end", epoch, record)
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    "format": CHECKPOINT_FORMAT, "config": settings, "epoch": epoch, "stopped": stopped,
                    "model": raw_model.state_dict(), "optimizer": opt.state_dict(),
                    "scaler": state.scaler.state_dict(),
                    "scheduler": lr_scheduler.state_dict() if lr_scheduler is not None else None,
                    "best_score": best_score, "best_loss": best_loss, "best_epoch": best_epoch,
                    "best_state": best_state, "history": history, "overrides": overrides,
                    "rng": _get_rng_state(generator, device)})
    bar.close()
    del loader  # stops the worker processes
    call_hook(loggers, "close")
    if config.restore_best and best_state is not None:
        raw_model.load_state_dict(best_state)
    result = FitResult(history=history, best_epoch=best_epoch, best_score=float(best_score), epochs_run=epoch,
                       time_s=time.perf_counter() - started, config=config)
    call_hook(callbacks, "on_fit_end", result)
    return result


@dataclass
class _EpochState:
    """What one training epoch works with: the (possibly DDP-wrapped) network and the unwrapped model, the
    optimizer and AMP scaler, the tasks with their loss and class weights (on ``device``) and the settings."""

    net: nn.Module
    raw_model: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    tasks: dict[str, int]
    weights: dict[str, float]
    class_weights: dict[str, Tensor]
    config: TrainConfig
    device: torch.device
    use_amp: bool
    world: int


class _BatchOrder(torch.utils.data.Sampler):
    """The DataLoader's batch sampler: ``order`` (set before every epoch) cut into index tensors of
    ``batch_size`` (the last one shorter)."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.order = torch.zeros(0, dtype=torch.long)

    def __iter__(self):
        for start in range(0, len(self.order), self.batch_size):
            yield self.order[start:start + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)


def _as_batch(batch):
    """The DataLoader's ``collate_fn``: ``__getitems__`` already returns one ``MultiModalBatch`` per batch."""
    from mmgraph.data.dataset import collate_batch

    return collate_batch(batch)


def _train_epoch(state: _EpochState, loader: DataLoader) -> float:
    """One pass over the loader's batches; returns the mean training loss (the only host sync of the epoch)."""
    net, raw_model, opt, scaler, config, device = (state.net, state.raw_model, state.opt, state.scaler, state.config,
                                                   state.device)
    net.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=state.use_amp):
            outputs = net(batch.inputs, batch.named_mask, batch.step_mask)
            loss = _task_loss(outputs, batch.targets, state.tasks, state.weights,
                              label_smoothing=config.label_smoothing, class_weights=state.class_weights)
            aux = raw_model.aux_loss if config.aux_weight else None
            if aux is not None:
                loss = loss + config.aux_weight * aux
            unimodal_loss = getattr(raw_model, "unimodal_loss", None)  # FusionModel's; None on other modules
            unimodal = None if unimodal_loss is None else unimodal_loss(batch.targets, state.weights,
                                                                        state.class_weights)
            if unimodal is not None:
                loss = loss + unimodal
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
        scaler.step(opt)
        scaler.update()
        loss_sum += loss.detach().float() * len(batch)
        count += len(batch)
    totals = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
    if state.world > 1:
        dist.all_reduce(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def _run_settings(config: TrainConfig, weights: dict[str, float], class_weights: dict[str, Tensor], use_amp: bool,
                  world: int, train, val, model: nn.Module) -> dict[str, Any]:
    """The settings a checkpoint records and a resume compares (``num_workers`` and ``restore_best`` do not change
    the training, so they are left out), with cheap fingerprints of the data (see ``data_fingerprint``) and the
    model's own settings (``_model_settings``)."""
    return {"optimizer": config.optimizer, "lr": config.lr, "weight_decay": config.weight_decay,
            "momentum": config.momentum if config.optimizer == "sgd" else None, "epochs": config.epochs,
            "batch_size": config.batch_size, "patience": config.patience, "monitor": config.monitor,
            "grad_clip": config.grad_clip, "task_weights": weights, "aux_weight": config.aux_weight,
            "label_smoothing": float(config.label_smoothing),
            "class_weight": config.class_weight if config.class_weight in (None, "balanced")
            else {task: [float(w) for w in values] for task, values in class_weights.items()},
            "scheduler": config.scheduler, "amp": use_amp, "seed": config.seed, "world_size": world,
            "train_data": data_fingerprint(train), "val_data": data_fingerprint(val) if val is not None else None,
            **_model_settings(model)}


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
