"""The comparison's report: the markdown tables and the strictly valid JSON (non-finite numbers become ``null``)."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping

from mmgraph.evaluation.summary import ranked

__all__ = ["PRIMARY_LABELS", "finite", "markdown", "to_json", "versions"]

# primary metric -> (label, shown in percent)
PRIMARY_LABELS = {"accuracy": ("accuracy", True), "acc2": ("Acc-2", True), "r2": ("R²", False),
                  "mixed": ("score (mean of each task's primary metric)", False)}


def finite(value):
    """``value`` with every non-finite float (NaN, ±Inf) replaced by None, recursively (dicts, lists, tuples)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def to_json(report: dict) -> str:
    """``report`` as strictly valid JSON (``null`` for NaN/Inf; ``allow_nan=False`` guarantees it)."""
    return json.dumps(finite(report), indent=1, allow_nan=False)


def versions() -> dict:
    import numpy
    import sklearn
    import torch
    import torch_geometric

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "numpy": numpy.__version__,
            "scikit_learn": sklearn.__version__, "cuda": torch.version.cuda}


def _value(value: float | None, percent: bool, signed: bool = False) -> str:
    if value is None or value != value:
        return "n/a"
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.2f}" if percent else f"{value:{sign}.3f}"


def _pm(stat: dict, percent: bool) -> str:
    return f"{_value(stat['mean'], percent)} ± {_value(stat['std'], percent)}"


def markdown(summary: dict, meta: dict) -> str:
    """The report's markdown: per data set and training variant the ranked table (every metric column, the paired
    difference to the best, parameters, training time, epochs trained before early stopping, inference speed), the
    missing-modality table and the corruption table."""
    lines = [f"# Fusion comparison ({meta['protocol']})", "",
             f"Command: `{meta['command']}`  ",
             *(f"Then re-run (`--update`, these runs replaced): `{u['command']}`  " for u in meta.get("updates", [])),
             f"Device: {meta['device']}; {meta['machine']}  ",
             f"Seeds: {meta['seeds']}; budget: {meta['budget']}", ""]
    for dataset, by_dropout in summary.items():
        info = meta.get("metrics", {}).get(dataset, {"columns": [["accuracy", "accuracy", True]],
                                                     "primary": "accuracy"})
        label, percent = PRIMARY_LABELS[info["primary"]]
        for dropout, rows in by_dropout.items():
            title = dataset + ("" if float(dropout) == 0 else f" (trained with modality dropout {dropout})")
            runs = next(iter(rows.values()))["runs"]
            headers = [header for _, header, _ in info["columns"]]
            lines += [f"## {title}", "",
                      f"Mean ± std over {runs} run(s), ranked by test {label}; Δ = paired difference in {label} to "
                      "the best method.", "",
                      "| method | " + " | ".join(headers)
                      + " | Δ vs best | params (fusion) | train s | epochs | infer samples/s |",
                      "|---|" + "---|" * (len(headers) + 5)]
            for method, row in ranked(rows):
                diff = row["paired_diff_to_best"]
                cells = [_pm(row[key], pct) if key in row else "n/a" for key, _, pct in info["columns"]]
                lines.append(
                    f"| {method} | " + " | ".join(cells) + f" | {_value(diff['mean'], percent, True)} ± "
                    f"{_value(diff['std'], percent)} | {row['parameters']:,} ({row['fusion_parameters']:,}) | "
                    f"{row['train_time_s']['mean']:.1f} | {_epochs(row)} | "
                    f"{row['inference_samples_per_s']['mean']:,.0f} |")
            tasks = [r for r in rows.values() if "per_task" in r]
            if tasks:
                names = list(tasks[0]["per_task"])
                lines += ["", "Per-task test figures:", "", "| method | " + " | ".join(names) + " |",
                          "|---|" + "---|" * len(names)]
                for method, row in rows.items():
                    lines.append(f"| {method} | " + " | ".join(
                        ", ".join(f"{k} {_value(v, k not in ('mae', 'mse', 'corr', 'r2', 'pearson'))}"
                                  for k, v in row["per_task"][t].items()) for t in names) + " |")
            robust = {m: r["robustness"] for m, r in rows.items() if "robustness" in r}
            if robust:
                rates = list(next(iter(robust.values())))
                lines += ["", f"Test {label} with a fraction p of each sample's modalities dropped at test time "
                          "(round(p·M) of them, never all; a sample keeps at least one of the modalities it has; "
                          "the Bernoulli(p) variant is in the JSON):", "",
                          "| method | " + " | ".join(f"p={r}" for r in rates) + " |",
                          "|---|" + "---|" * len(rates)]
                for method, curve in sorted(robust.items(), key=lambda kv: -_number(kv[1][rates[-1]])):
                    lines.append(f"| {method} | " + " | ".join(_value(curve[r], percent) for r in rates) + " |")
            lines += corruption_table(rows, label, percent)
            lines.append("")
    return "\n".join(lines)


def _epochs(row: dict) -> str:
    """Mean ± std over runs of the epochs trained (early stopping ends runs before the budget's maximum)."""
    if "epochs_run" not in row:  # runs of versions that did not record it
        return "n/a"
    stat = row["epochs_run"]
    return f"{stat['mean']:.0f}" + (f" ± {stat['std']:.0f}" if stat["std"] else "")


def _number(value: float | None) -> float:
    return -math.inf if value is None or value != value else value


def corruption_table(rows: dict, label: str = "accuracy", percent: bool = True) -> list[str]:
    """Markdown lines: relative and effective robustness per method and corrupted modality (MultiBench)."""
    scored = {m: r for m, r in rows.items() if "relative_robustness" in r}
    if not scored:
        return []
    modalities = list(next(iter(scored.values()))["corruption"])
    effective = all("effective_robustness" in r for r in scored.values())
    header = ["method", "clean", "rel. rob. (mean)"] + (["eff. rob. vs late (mean)"] if effective else [])
    header += [f"rel. {m}" for m in modalities] + ([f"eff. {m}" for m in modalities] if effective else [])
    scale = " (x100)" if percent else ""
    lines = ["", "Robustness to corruption (MultiBench): one modality corrupted at levels 0.0, 0.1, ..., 1.0 (Gaussian "
             "noise of that std on z-scored features and images, that fraction of steps masked on sequences), the "
             f"others clean. Relative robustness = area under the {label}-vs-level curve{scale}; effective robustness "
             f"= area between the curve and late fusion's shifted to the same clean {label} "
             f"({'x100, ' if percent else ''}> 0 = degrades less than late fusion). Curves per level are in the JSON.", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method, row in sorted(scored.items(), key=lambda kv: -_number(kv[1]["relative_robustness"]["mean"])):
        cells = [method, _value(row["score"]["mean"], percent), _value(row["relative_robustness"]["mean"], percent)]
        if effective:
            cells.append(_value(row["effective_robustness"]["mean"], percent, True))
        cells += [_value(row["relative_robustness"][m], percent) for m in modalities]
        if effective:
            cells += [_value(row["effective_robustness"][m], percent, True) for m in modalities]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
