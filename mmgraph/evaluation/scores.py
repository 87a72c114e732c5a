"""What the comparison measures per task, from :mod:`mmgraph.metrics` (no metric code of its own).

* classification: ``accuracy``, ``macro_f1``, ``macro_recall`` (primary: accuracy);
* regression: ``mae``, ``corr`` (Pearson r), ``r2`` (and ``mse``; primary: R², so tables rank by R²);
* a regression target declared sentiment (``sentiment=``; by default the task named ``sentiment``): the field's
  ``acc2``, ``acc7``, ``f1``, ``mae``, ``corr`` (and ``acc2_nonzero``, ``f1_nonzero``; primary: Acc-2, also
  reported as ``accuracy``).

A run's ``score`` is the mean over tasks of each task's primary metric (higher is better); the robustness curves
and the ranking use it.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection

from torch import Tensor

from mmgraph.data import MultiModalDataset
from mmgraph.metrics import classification_metrics, regression_metrics, sentiment_metrics

__all__ = ["COLUMNS", "columns", "kind_of", "primary_metric", "run_scores", "task_scores"]

# (key, table header, shown in percent)
COLUMNS = {
    "classification": (("accuracy", "accuracy", True), ("macro_f1", "macro F1", True),
                       ("macro_recall", "macro recall", True)),
    "sentiment": (("acc2", "Acc-2", True), ("acc7", "Acc-7", True), ("f1", "F1", True), ("mae", "MAE", False),
                  ("corr", "Corr", False)),
    "regression": (("mae", "MAE", False), ("corr", "Corr", False), ("r2", "R²", False)),
}
PRIMARY = {"classification": "accuracy", "sentiment": "acc2", "regression": "r2"}


def sentiment_tasks(data: MultiModalDataset, sentiment: Collection[str] | None) -> set[str]:
    """The regression tasks scored as sentiment: ``sentiment`` (checked), or the task named ``sentiment``."""
    if sentiment is None:
        return {t for t, classes in data.tasks.items() if t == "sentiment" and not classes}
    wrong = [t for t in sentiment if data.tasks.get(t, 1) != 0]
    if wrong:
        raise ValueError(f"sentiment: {wrong} are not regression targets of the data; its targets are "
                         f"{data.tasks} (0 = regression)")
    return set(sentiment)


def kind_of(data: MultiModalDataset, task: str, sentiment: set[str]) -> str:
    """``"classification"``, ``"sentiment"`` or ``"regression"``."""
    if data.tasks[task]:
        return "classification"
    return "sentiment" if task in sentiment else "regression"


def columns(data: MultiModalDataset, sentiment: set[str]) -> list[tuple[str, str, bool]]:
    """The table columns of ``data``: those of each kind of task it has, in order, without repeats."""
    seen: dict[str, tuple[str, str, bool]] = {}
    for task in data.tasks:
        for column in COLUMNS[kind_of(data, task, sentiment)]:
            seen.setdefault(column[0], column)
    return list(seen.values())


def primary_metric(data: MultiModalDataset, sentiment: set[str]) -> str:
    """The metric a run's ``score`` is (``"mixed"`` when the tasks differ in kind)."""
    names = {PRIMARY[kind_of(data, task, sentiment)] for task in data.tasks}
    return names.pop() if len(names) == 1 else "mixed"


def task_scores(data: MultiModalDataset, outputs: dict[str, Tensor], sentiment: set[str]) -> dict[str, dict]:
    """``{task: metrics}`` of the model outputs ``{task: Tensor[N, C]}`` (``C = 1`` for regression) on ``data``."""
    scores = {}
    for task, classes in data.tasks.items():
        truth = data.targets[task]
        if classes:
            metrics = classification_metrics(truth, outputs[task], classes)
            scores[task] = {k: metrics[k] for k in ("accuracy", "macro_f1", "macro_recall")}
            continue
        predicted = outputs[task][:, 0]
        metrics = regression_metrics(truth, predicted)
        if task in sentiment:
            affect = sentiment_metrics(truth, predicted)
            scores[task] = {**affect, "corr": affect["pearson"], "accuracy": affect["acc2"]}
        else:
            scores[task] = {**metrics, "corr": metrics["pearson"]}
    return scores


def run_scores(data: MultiModalDataset, per_task: dict[str, dict], sentiment: set[str]) -> dict[str, float]:
    """A run's figures: each column's mean over the tasks that have it, ``score`` (mean primary metric) and, where
    every task has one, ``accuracy``."""
    figures = {}
    for key, _, _ in columns(data, sentiment):
        figures[key] = statistics.fmean(m[key] for m in per_task.values() if key in m)
    figures["score"] = statistics.fmean(per_task[t][PRIMARY[kind_of(data, t, sentiment)]] for t in per_task)
    if all("accuracy" in m for m in per_task.values()):
        figures["accuracy"] = statistics.fmean(m["accuracy"] for m in per_task.values())
    return figures
