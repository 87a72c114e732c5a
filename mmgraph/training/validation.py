"""The loss of :func:`~mmgraph.training.fit` and its validation pass: per-task metrics from additive statistics
(confusion matrices, regression sums), scored by the same functions as :func:`~mmgraph.training.evaluate`
(:func:`mmgraph.metrics.confusion_metrics`, :func:`mmgraph.metrics.regression_from_sums`), and the monitored score."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from mmgraph.metrics import confusion_metrics, regression_from_sums, regression_sums
from mmgraph.utils import eval_mode

REGRESSION_SUMS = 5  # the length of mmgraph.metrics.regression_sums


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
    """Validation loss and metrics from summed statistics (confusion matrices ``[C, C]``, regression sums), so that
    under DDP each rank evaluates its own shard and one ``all_reduce`` gives every rank the exact same numbers.

    Returns ``{"val_loss", "val_<task>_accuracy" / "_macro_recall" / "_macro_f1" (classification) or
    "val_<task>_mse" (regression), "val_accuracy" (mean over classification tasks)}``.
    """
    with eval_mode(model):
        indices = torch.arange(rank, len(val), world)
        stats = {task: torch.zeros(classes * classes if classes else REGRESSION_SUMS, dtype=torch.float64,
                                   device=device) for task, classes in tasks.items()}
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        step = max(batch_size, 256)
        for start in range(0, len(indices), step):
            batch = val[indices[start:start + step]].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(batch.inputs, batch.named_mask, batch.step_mask)
            loss_sum += _task_loss(outputs, batch.targets, tasks, weights, reduction="sum").double()
            for task, classes in tasks.items():
                target, output = batch.targets[task], outputs[task].float()
                if classes:
                    cells = target.long() * classes + output.argmax(-1)
                    stats[task] += torch.bincount(cells, minlength=classes * classes).double()
                else:
                    stats[task] += regression_sums(target.float(), output.squeeze(-1))
        names = list(stats)
        flat = torch.cat([loss_sum.view(1)] + [stats[t] for t in names])
        if world > 1:
            dist.all_reduce(flat)
        flat = flat.cpu()

    record = {"val_loss": flat[0].item() / max(len(val), 1)}
    offset = 1
    accuracies = []
    for task in names:
        classes = tasks[task]
        size = classes * classes if classes else REGRESSION_SUMS
        values = flat[offset:offset + size]
        offset += size
        if classes:
            scores = confusion_metrics(values.view(classes, classes))
            record.update({f"val_{task}_{name}": value for name, value in scores.items()})
            accuracies.append(scores["accuracy"])
        else:
            record[f"val_{task}_mse"] = regression_from_sums(values)["mse"]
    if accuracies:
        record["val_accuracy"] = sum(accuracies) / len(accuracies)
    return record


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
