"""Evaluation metrics and their aggregation over runs.

* :func:`classification_metrics`: accuracy, macro recall, macro F1 and the confusion matrix over a fixed class list;
  :func:`confusion_metrics` computes the scores from a confusion matrix (also for ``fit``'s validation).
* :func:`regression_metrics`: MSE, MAE and R² (from the additive :func:`regression_sums`, as ``fit`` uses them).
* :func:`sentiment_metrics`: the affect literature's scores of sentiment regression in [-3, 3] (Acc-2 in both
  variants, F1, Acc-7, MAE, Pearson correlation), as MulT and MultiBench compute them.
* :func:`corruption_levels`, :func:`corrupt`, :func:`relative_robustness`, :func:`effective_robustness`: MultiBench's
  robustness protocol (one modality corrupted at 11 levels 0.0 .. 1.0; areas under the accuracy-vs-level curve).
* :func:`summarize`: ``(mean, std)`` of every scalar metric over a list of runs (seeds, folds); :func:`mean_std`
  the same of one list of values (the rule every report and benchmark script uses).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mmgraph.utils import describe

__all__ = [
    "binary_sentiment",
    "classification_metrics",
    "confusion_metrics",
    "corrupt",
    "corruption_levels",
    "effective_robustness",
    "mean_std",
    "regression_from_sums",
    "regression_metrics",
    "regression_sums",
    "relative_robustness",
    "sentiment_metrics",
    "summarize",
]


def classification_metrics(y_true: Tensor | np.ndarray | Sequence[int], y_pred_or_logits: Tensor | np.ndarray,
                           num_classes: int) -> dict:
    """Metrics of class predictions against the true class ids.

    Args:
        y_true: class ids ``[N]``.
        y_pred_or_logits: predicted class ids ``[N]``, or scores ``[N, num_classes]`` (logits or probabilities;
            the argmax is the prediction).
        num_classes: ``C``; the metrics cover the labels ``0 .. C-1`` even when some are absent from the data
            (see :func:`confusion_metrics`: an absent class counts with recall and F1 0).

    Returns:
        ``{"accuracy": float, "macro_recall": float, "macro_f1": float, "confusion_matrix": list[list[int]]}``;
        ``confusion_matrix[i][j]`` counts samples of true class ``i`` predicted as ``j``.
    """
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
    cells = truth.astype(np.int64) * num_classes + predicted.astype(np.int64)
    confusion = np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return {**confusion_metrics(confusion), "confusion_matrix": confusion.tolist()}


def confusion_metrics(confusion: Tensor | np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """Accuracy, macro recall and macro F1 from a count matrix ``[C, C]`` (row = true class, column = predicted).

    This is the one implementation behind both :func:`classification_metrics` (what ``evaluate`` reports) and the
    validation metrics that ``fit`` monitors (which sums the matrix over batches and, under DDP, over ranks).
    **Every class 0 .. C-1 counts in the macro averages**: a class absent from the truth scores recall 0 and F1 0
    (also when it is never predicted) -- scikit-learn's
    ``f1_score(y, p, labels=range(C), average="macro", zero_division=0)``. So the averages always divide by ``C``
    and are comparable across epochs and data sets of the same task.
    """
    counts = torch.as_tensor(np.asarray(confusion) if not isinstance(confusion, Tensor) else confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"confusion: expected a square count matrix [C, C], got shape {tuple(counts.shape)}")
    counts = counts.detach().cpu().double()
    true_pos = counts.diag()
    support, predicted = counts.sum(1), counts.sum(0)
    recall = true_pos / support.clamp(min=1)
    f1 = 2 * true_pos / (support + predicted).clamp(min=1)
    return {"accuracy": (true_pos.sum() / counts.sum().clamp(min=1)).item(),
            "macro_recall": recall.mean().item(), "macro_f1": f1.mean().item()}


def regression_metrics(y_true: Tensor | np.ndarray | Sequence[float],
                       y_pred: Tensor | np.ndarray | Sequence[float]) -> dict[str, float]:
    """``{"mse", "mae", "r2", "pearson"}`` of predictions ``[N]`` (or ``[N, 1]``) against targets ``[N]``.

    R² is ``1 - SS_res / SS_tot``; it is NaN when the targets are constant or N < 2. ``pearson`` (Pearson r) is NaN
    when either side is constant. MSE, MAE and R² are computed by :func:`regression_sums` and
    :func:`regression_from_sums`, as ``fit``'s validation does.
    """
    truth, predicted = _paired_values(y_true, y_pred)
    return {**regression_from_sums(regression_sums(torch.from_numpy(truth), torch.from_numpy(predicted))),
            "pearson": _pearson(truth, predicted)}


def regression_sums(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """The additive statistics of a regression ``float64 [5]``: ``[N, Σ e², Σ |e|, Σ y, Σ y²]`` with
    ``e = y_pred - y_true`` (``[N]`` each). Sums over batches (and ranks) add up; :func:`regression_from_sums`
    turns them into metrics."""
    error = y_pred.double() - y_true.double()
    truth = y_true.double()
    return torch.stack([error.new_tensor(float(error.numel())), error.square().sum(), error.abs().sum(),
                        truth.sum(), truth.square().sum()])


def regression_from_sums(sums: Tensor) -> dict[str, float]:
    """``{"mse", "mae", "r2"}`` from :func:`regression_sums` (R² NaN when the targets are constant or N < 2)."""
    count, squared, absolute, total, total_sq = (float(v) for v in sums.detach().cpu().double())
    spread = total_sq - total * total / count if count else 0.0
    constant = count < 2 or spread <= 1e-12 * max(total_sq, 1e-300)
    return {"mse": squared / max(count, 1.0), "mae": absolute / max(count, 1.0),
            "r2": math.nan if constant else 1.0 - squared / spread}


def binary_sentiment(values: Tensor | np.ndarray | Sequence[float], nonzero: bool = False) -> np.ndarray:
    """The binary label of the sentiment literature from scores in [-3, 3] ``[N]``.

    ``nonzero=False``: 1 = non-negative (``>= 0``), 0 = negative (MultiBench's Acc-2 "has0" variant).
    ``nonzero=True``: 1 = positive (``> 0``), 0 = otherwise; evaluate it only on samples whose true score is
    non-zero (MulT's ``exclude_zero``), as :func:`sentiment_metrics` does. ``-> int64 [N]``.
    """
    scores = _as_numpy("values", values).astype(np.float64).reshape(-1)
    return (scores > 0 if nonzero else scores >= 0).astype(np.int64)


def sentiment_metrics(y_true: Tensor | np.ndarray | Sequence[float],
                      y_pred: Tensor | np.ndarray | Sequence[float]) -> dict[str, float]:
    """The affect scores of sentiment predictions ``[N]`` (or ``[N, 1]``) against true scores in [-3, 3] ``[N]``.

    * ``acc2``, ``f1``: negative vs non-negative (``>= 0``) over every sample;
    * ``acc2_nonzero``, ``f1_nonzero``: negative vs positive (``> 0``) over the samples whose true score is not 0
      (NaN when every true score is 0);
    * ``acc7``: both clipped to [-3, 3] and rounded to the 7 classes -3 .. 3;
    * ``mae``; ``pearson`` (NaN when either side is constant).

    F1 is scikit-learn's class-weighted F1 (``average="weighted"``), as in MulT's ``eval_mosei_senti``.
    """
    from sklearn.metrics import accuracy_score, f1_score

    truth, predicted = _paired_values(y_true, y_pred)
    if not (np.isfinite(truth).all() and np.isfinite(predicted).all()):
        raise ValueError("y_true, y_pred: expected finite sentiment scores, got NaN or Inf")
    binary_truth, binary_pred = binary_sentiment(truth), binary_sentiment(predicted)
    nonzero = truth != 0
    positive_truth, positive_pred = binary_sentiment(truth[nonzero], True), binary_sentiment(predicted[nonzero], True)
    return {
        "acc2": float(accuracy_score(binary_truth, binary_pred)),
        "f1": float(f1_score(binary_truth, binary_pred, average="weighted", zero_division=0)),
        "acc2_nonzero": float(accuracy_score(positive_truth, positive_pred)) if nonzero.any() else math.nan,
        "f1_nonzero": (float(f1_score(positive_truth, positive_pred, average="weighted", zero_division=0))
                       if nonzero.any() else math.nan),
        "acc7": float(np.mean(np.round(np.clip(truth, -3, 3)) == np.round(np.clip(predicted, -3, 3)))),
        "mae": float(np.abs(truth - predicted).mean()),
        "pearson": _pearson(truth, predicted),
    }


def _pearson(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r of two ``[N]`` arrays; NaN when either is constant."""
    spread = truth.std() > 0 and predicted.std() > 0
    return float(np.corrcoef(truth, predicted)[0, 1]) if spread else math.nan


# ---------------------------------------------------------------------------------------------------- robustness
def corruption_levels() -> list[float]:
    """MultiBench's 11 corruption levels ``0.0, 0.1, ..., 1.0``."""
    return [round(0.1 * k, 1) for k in range(11)]


def corrupt(x: Tensor, level: float, sequence: bool = False, seed: int = 0) -> Tensor:
    """One modality ``x: [N, ...]`` corrupted at ``level`` in [0, 1], as MultiBench's robustness protocol does.

    * features and images (``sequence=False``): additive Gaussian noise of standard deviation ``level`` (in the
      units of ``x``: one standard deviation of a z-scored feature at level 1);
    * sequences ``[N, T, F]`` (``sequence=True``): each step zeroed (masked) with probability ``level``.

    Level 0 returns ``x`` unchanged; the same ``seed`` gives the same corruption. ``-> Tensor`` shaped like ``x``.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise TypeError(f"x: expected a float Tensor [N, ...], got {describe(x)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 <= level <= 1.0:
        raise ValueError(f"level: expected a number in [0, 1], got {level!r}")
    if sequence and x.ndim != 3:
        raise ValueError(f"x: sequence corruption expects frames [N, T, F], got shape {tuple(x.shape)}")
    if level == 0:
        return x
    generator = torch.Generator().manual_seed(seed)
    if sequence:
        keep = torch.rand(x.shape[:2], generator=generator) >= level  # [N, T]
        return x * keep.unsqueeze(-1).to(x.device, x.dtype)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return x + level * noise


def relative_robustness(levels: Sequence[float], accuracies: Sequence[float]) -> float:
    """MultiBench's relative robustness: the area under the accuracy-vs-corruption-level curve (trapezoid rule).

    ``levels``: increasing corruption levels, starting at 0 (usually :func:`corruption_levels`); ``accuracies``:
    one per level. Over levels 0..1 the area lies in [0, 1] for accuracies in [0, 1].
    """
    grid, curve = _curve(levels, accuracies, "accuracies")
    return _trapezoid(curve, grid)


def effective_robustness(levels: Sequence[float], accuracies: Sequence[float],
                         reference: Sequence[float]) -> float:
    """MultiBench's effective robustness: the area between a method's curve and the reference method's curve (late
    fusion in MultiBench) shifted to the method's clean accuracy: ``∫ acc(l) - (ref(l) - ref(0) + acc(0)) dl``
    (trapezoid rule). Positive = the method loses less accuracy under corruption than the reference does.
    """
    grid, curve = _curve(levels, accuracies, "accuracies")
    _, base = _curve(levels, reference, "reference")
    return _trapezoid(curve - (base - base[0] + curve[0]), grid)


def _trapezoid(curve: np.ndarray, grid: np.ndarray) -> float:
    return float((0.5 * (curve[1:] + curve[:-1]) * np.diff(grid)).sum())


def _curve(levels: Sequence[float], values: Sequence[float], arg: str) -> tuple[np.ndarray, np.ndarray]:
    grid = np.asarray(levels, dtype=np.float64)
    curve = np.asarray(values, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not (np.diff(grid) > 0).all():
        raise ValueError(f"levels: expected at least two increasing levels, got {list(levels)}")
    if curve.shape != grid.shape or not np.isfinite(curve).all():
        raise ValueError(f"{arg}: expected {grid.size} finite values (one per level), got {list(values)}")
    return grid, curve


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
        summary[name] = mean_std(values)
    return summary


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """``(mean, std)`` of ``values`` ``[n]`` (a list, tuple, 1-D array or tensor of numbers), n >= 1: the sample
    standard deviation (``ddof=1``), ``0.0`` for a single value.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"values: expected a sequence of numbers, got {type(values).__name__}")
    numbers = []
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number, Tensor)) or (
                isinstance(value, Tensor) and value.numel() != 1):
            raise TypeError(f"values[{position}]: expected a number, got {value!r}")
        numbers.append(float(value))
    if not numbers:
        raise ValueError("values: expected at least one number, got none")
    return statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else 0.0


def _as_numpy(arg: str, value: Tensor | np.ndarray | Sequence) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{arg}: expected numbers, got dtype {array.dtype}")
        return array
    raise TypeError(f"{arg}: expected a Tensor, ndarray or list, got {type(value).__name__}")


def _paired_values(y_true: Tensor | np.ndarray | Sequence[float],
                   y_pred: Tensor | np.ndarray | Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Targets ``[N]`` and predictions ``[N]`` (or ``[N, 1]``) as float64 arrays ``[N]``, N >= 1."""
    truth = _as_numpy("y_true", y_true).astype(np.float64)
    predicted = _as_numpy("y_pred", y_pred).astype(np.float64)
    if predicted.ndim == 2 and predicted.shape[1] == 1:
        predicted = predicted[:, 0]
    if truth.ndim != 1 or truth.size == 0 or predicted.shape != truth.shape:
        raise ValueError(f"y_true, y_pred: expected shapes [N] and [N] (or [N, 1]) with N >= 1, got {truth.shape} "
                         f"and {predicted.shape}")
    return truth, predicted
