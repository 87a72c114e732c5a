"""Checks of :func:`~mmgraph.training.fit`'s arguments and data before anything is trained: the model's tasks, the
task and class weights, the monitored metric, and the data sets (targets for every task, class ids in range); and the
names ``fit`` and the CLI accept (:data:`OPTIMIZERS`, :data:`MONITORS`, :data:`SCHEDULERS`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmgraph.training.config import MONITORS, OPTIMIZERS, SCHEDULERS, TASK_METRICS
from mmgraph.utils import check_choice as _check_choice

__all__ = ["MONITORS", "OPTIMIZERS", "SCHEDULERS", "TASK_METRICS"]


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


def _check_dataset(arg: str, dataset, tasks: dict[str, int], need_two_classes: bool = False) -> None:
    """Check that ``dataset`` has targets for the model's tasks with class ids in ``[0, num_classes)`` (and, with
    ``need_two_classes``, at least two classes per classification task). Reads the targets only (no feature is
    gathered or copied)."""
    from mmgraph.data import MultiModalDataset

    if not isinstance(dataset, MultiModalDataset):
        raise TypeError(f"{arg}: expected a MultiModalDataset, got {type(dataset).__name__}; wrap your arrays as "
                        "MultiModalDataset({modality: X [N, ...]}, y) (one entry per modality, targets [N])")
    if len(dataset) == 0:
        raise ValueError(f"{arg}: the dataset is empty")
    targets = dataset.targets
    missing = [t for t in tasks if t not in targets]
    if missing:
        raise ValueError(f"{arg}: no targets for the model's tasks {missing}; dataset targets are "
                         f"{list(targets)}")
    for task, classes in tasks.items():
        if not classes:
            continue
        target = targets[task]
        outside = target[(target < 0) | (target >= classes)].unique()
        if len(outside):
            raise ValueError(f"{arg}: task {task!r} has class ids {outside[:5].tolist()} outside [0, {classes}); the "
                             f"model's head for {task!r} has {classes} classes")
        present = target.unique()
        if need_two_classes and len(present) < 2:
            raise ValueError(f"{arg}: task {task!r} has a single class ({present.tolist()}) in these "
                             f"{len(dataset)} samples; a classifier needs at least two to learn from (a subset "
                             f"that lost classes? split with mmgraph.data.stratified_split)")
