"""Evaluation metrics (scikit-learn underneath) and their aggregation over runs.

* :func:`classification_metrics`: accuracy, macro recall, macro F1 and the confusion matrix over a fixed class list.
* :func:`regression_metrics`: MSE, MAE and R².
* :func:`summarize`: ``(mean, std)`` of every scalar metric over a list of runs (seeds, folds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

__all__ = ["classification_metrics", "regression_metrics", "summarize"]


def classification_metrics(y_true: Tensor | np.ndarray | Sequence[int], y_pred_or_logits: Tensor | np.ndarray,
                           num_classes: int) -> dict:
    """Metrics of class predictions against the true class ids.

    Args:
        y_true: class ids ``[N]``.
        y_pred_or_logits: predicted class ids ``[N]``, or scores ``[N, num_classes]`` (logits or probabilities;
            the argmax is the prediction).
        num_classes: ``C``; the metrics cover the labels ``0 .. C-1`` even when some are absent from the data
            (a class never seen nor predicted counts with recall and F1 0: ``zero_division=0``).

    Returns:
        ``{"accuracy": float, "macro_recall": float, "macro_f1": float, "confusion_matrix": list[list[int]]}``;
        ``confusion_matrix[i][j]`` counts samples of true class ``i`` predicted as ``j``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected an int >= 1, got {num_classes!r}")
    truth = _as_numpy("y_true", y_true)
    predicted = _as_numpy("y_pred_or_logits", y_pred_or_logits)
    if truth.ndim != 1 or truth.size == 0:
        raise ValueError(f"y_true: expected class ids of shape [N] with N >= 1, got shape {truth.shape}")
    if predicted.ndim == 2:
        if predicted.shape[1] != num_classes:
            raise ValueError(f"y_pred_or_logits: expected scores [N, {num_classes}], got shape {predicted.shape}")
        predicted = predicted.argmax(axis=1)
    if predicted.shape != truth.shape:
        raise ValueError(f"y_pred_or_logits: expected class ids of shape {truth.shape} or scores "
                         f"[{truth.shape[0]}, {num_classes}], got shape {predicted.shape}")
    for arg, ids in (("y_true", truth), ("y_pred_or_logits", predicted)):
        if not np.array_equal(ids, np.round(ids)) or ids.min() < 0 or ids.max() >= num_classes:
            raise ValueError(f"{arg}: class ids must be integers in [0, {num_classes}), got values in "
                             f"[{ids.min()}, {ids.max()}]")
    truth, predicted = truth.astype(np.int64), predicted.astype(np.int64)
    labels = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_recall": float(recall_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


def regression_metrics(y_true: Tensor | np.ndarray | Sequence[float],
                       y_pred: Tensor | np.ndarray | Sequence[float]) -> dict[str, float]:
    """``{"mse", "mae", "r2"}`` of predictions ``[N]`` (or ``[N, 1]``) against targets ``[N]``.

    R² is ``1 - SS_res / SS_tot``; it is NaN when the targets are constant or N < 2.
    """
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    truth = _as_numpy("y_true", y_true).astype(np.float64)
    predicted = _as_numpy("y_pred", y_pred).astype(np.float64)
    if predicted.ndim == 2 and predicted.shape[1] == 1:
        predicted = predicted[:, 0]
    if truth.ndim != 1 or truth.size == 0 or predicted.shape != truth.shape:
        raise ValueError(f"y_true, y_pred: expected shapes [N] and [N] (or [N, 1]) with N >= 1, got {truth.shape} "
                         f"and {predicted.shape}")
    total = float(((truth - truth.mean()) ** 2).sum())
    residual = float(((truth - predicted) ** 2).sum())
    return {
        "mse": float(mean_squared_error(truth, predicted)),
        "mae": float(mean_absolute_error(truth, predicted)),
        "r2": 1.0 - residual / total if total > 0 else math.nan,
    }


def summarize(runs: Sequence[Mapping[str, object]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, std)}`` over runs, for every scalar (int or float) metric of the first run.

    ``std`` is the sample standard deviation (``ddof=1``), ``0.0`` for a single run. Non-scalar entries (the
    confusion matrix) are skipped. Every run must have the scalar metrics of the first.
    """
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence) or not runs:
        raise ValueError(f"runs: expected a non-empty list of metric dicts, got {type(runs).__name__}")
    for position, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise TypeError(f"runs[{position}]: expected a dict of metrics, got {type(run).__name__}")
    names = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary: dict[str, tuple[float, float]] = {}
    for name in names:
        values = []
        for position, run in enumerate(runs):
            value = run.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"runs[{position}][{name!r}]: expected a number like runs[0], got {value!r}")
            values.append(float(value))
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary[name] = (float(np.mean(values)), std)
    return summary


def _as_numpy(arg: str, value: Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{arg}: expected numbers, got dtype {array.dtype}")
        return array
    raise TypeError(f"{arg}: expected a Tensor, ndarray or list, got {type(value).__name__}")
