"""Aggregation of the comparison's runs: per data set, training variant and method, mean ± std over runs, the paired
difference to the best method, and the robustness scores."""

from __future__ import annotations

import statistics

from mmgraph.evaluation.robustness import add_robustness_scores
from mmgraph.metrics import mean_std

__all__ = ["SUMMARISED", "ranked", "summarise"]

# run figures summarised as {mean, std} when the runs have them (the metric columns, then cost)
SUMMARISED = ("score", "accuracy", "macro_f1", "macro_recall", "acc2", "acc7", "f1", "mae", "corr", "r2",
              "train_time_s", "epochs_run", "inference_samples_per_s")


def _stat(values: list[float]) -> dict[str, float]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std}


def summarise(records: list[dict]) -> dict:
    """``{dataset: {modality_dropout: {method: row}}}``: each row holds ``runs``, ``{mean, std}`` of every figure
    in :data:`SUMMARISED` the runs have, the parameter counts, mean robustness and corruption curves, per-task
    scores (several tasks), relative/effective robustness and ``paired_diff_to_best`` (the score difference to
    the best method, paired by seed and fold)."""
    summary: dict = {}
    by_key: dict = {}
    for r in records:
        by_key.setdefault((r["dataset"], r["modality_dropout"], r["method"]), []).append(r)
    for (dataset, dropout, method), runs in by_key.items():
        row: dict = {"runs": len(runs)}
        for metric in SUMMARISED:
            if metric in runs[0]:
                row[metric] = _stat([r[metric] for r in runs])
        row["parameters"] = runs[0]["parameters"]
        row["fusion_parameters"] = runs[0]["fusion_parameters"]
        if "robustness" in runs[0]:
            row["robustness"] = {rate: statistics.fmean(r["robustness"][rate] for r in runs)
                                 for rate in runs[0]["robustness"]}
        if "corruption" in runs[0]:
            row["corruption"] = {m: {level: statistics.fmean(r["corruption"][m][level] for r in runs)
                                     for level in curve} for m, curve in runs[0]["corruption"].items()}
        if len(runs[0]["test"]) > 1:  # the numbers only (runs of older versions also stored confusion matrices)
            row["per_task"] = {task: {k: statistics.fmean(r["test"][task][k] for r in runs)
                                      for k, v in runs[0]["test"][task].items() if isinstance(v, (int, float))}
                               for task in runs[0]["test"]}
        summary.setdefault(dataset, {}).setdefault(str(dropout), {})[method] = row
    for dataset, by_dropout in summary.items():
        for dropout, rows in by_dropout.items():
            add_robustness_scores(rows, by_dropout.get("0.0", {}).get("late"))
            best = ranked(rows)[0][0]

            def runs_of(method: str) -> dict:
                return {(r["seed"], r["fold"]): r["score"] for r in records if r["dataset"] == dataset
                        and str(r["modality_dropout"]) == dropout and r["method"] == method}

            best_runs = runs_of(best)
            for method, row in rows.items():
                diffs = [value - best_runs[key] for key, value in runs_of(method).items() if key in best_runs]
                row["paired_diff_to_best"] = {"best": best, **(_stat(diffs) if diffs else {"mean": 0.0, "std": 0.0})}
    return summary


def ranked(rows: dict) -> list[tuple[str, dict]]:
    """``rows`` (``{method: row}``) best first: by mean score, higher first; a NaN score ranks last."""
    def key(item: tuple[str, dict]) -> float:
        mean = item[1]["score"]["mean"]
        return -mean if mean == mean else float("inf")

    return sorted(rows.items(), key=key)
