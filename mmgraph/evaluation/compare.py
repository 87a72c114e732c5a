""":func:`compare`: which fusion works best on *your* data -- every method under one budget, one report."""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from mmgraph.data import MultiModalDataset
from mmgraph.data.registry import BUILTIN_DATASETS, available_datasets, load_dataset_with_split
from mmgraph.evaluation.methods import applies, default_methods, resolve_method
from mmgraph.evaluation.plots import plots as write_plots
from mmgraph.evaluation.protocol import Protocol, make_protocol
from mmgraph.evaluation.report import finite, markdown, to_json, versions
from mmgraph.evaluation.runner import DataSource, Job, run_jobs
from mmgraph.evaluation.scores import columns, primary_metric, sentiment_tasks
from mmgraph.evaluation.summary import SUMMARISED, ranked, summarise
from mmgraph.io import write_text
from mmgraph.utils import resolve_device
from mmgraph.viz import pyplot

__all__ = ["Comparison", "compare"]

Data = str | MultiModalDataset


@dataclass
class Comparison:
    """The result of :func:`compare`.

    Attributes:
        summary: ``{dataset: {modality_dropout: {method: row}}}`` (see :func:`~mmgraph.evaluation.summary.summarise`).
        runs: one record per trained model (data set, method, seed, fold, every test figure, robustness curves).
        meta: protocol, command, device, seeds, budget, versions, data sets, methods, metric columns, plots.
    """

    summary: dict
    runs: list[dict]
    meta: dict = field(default_factory=dict)

    def table(self, dataset: str | None = None, modality_dropout: float = 0.0) -> list[dict]:
        """The ranked table of ``dataset`` (default: the first) for models trained with ``modality_dropout``: one
        dict per method, best first, with ``method``, ``runs`` and the mean of every figure (``score`` is what
        ranks: accuracy, Acc-2 for sentiment, R² for regression)."""
        dataset = dataset if dataset is not None else next(iter(self.summary))
        if dataset not in self.summary:
            raise ValueError(f"dataset: expected one of {list(self.summary)}, got {dataset!r}")
        rows = self.summary[dataset].get(str(float(modality_dropout)))
        if rows is None:
            raise ValueError(f"modality_dropout: {dataset} has runs trained with {list(self.summary[dataset])}, got "
                             f"{modality_dropout!r}")
        return [{"method": method, "runs": row["runs"],
                 **{key: row[key]["mean"] for key in SUMMARISED if key in row}} for method, row in ranked(rows)]

    def to_markdown(self) -> str:
        """The report as markdown: per data set the ranked table, missing-modality and corruption tables."""
        return markdown(self.summary, self.meta)

    def to_dict(self) -> dict:
        """``{"meta", "summary", "runs"}`` with non-finite numbers as None."""
        return finite({"meta": self.meta, "summary": self.summary, "runs": self.runs})

    def to_json(self) -> str:
        """The report as strictly valid JSON (``null``, never ``NaN``)."""
        return to_json({"meta": self.meta, "summary": self.summary, "runs": self.runs})

    def plots(self, out: str | Path) -> list[str]:
        """Write the PNG plots into ``out``; returns their file names."""
        return write_plots(self.summary, self.meta, Path(out))

    def save(self, out: str | Path, plots: bool = True) -> list[Path]:
        """Write ``out/compare_fusion.md``, the plots and ``out/compare_fusion.json`` (atomically)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [write_text(out / "compare_fusion.md", self.to_markdown())]
        self.meta["plots"] = self.plots(out) if plots else []
        written.append(write_text(out / "compare_fusion.json", self.to_json()))
        return written

    def __str__(self) -> str:
        return self.to_markdown()


def compare(data: Data | Sequence[Data] | None, methods: Sequence[str] | None = None, protocol: str = "quick",
            seeds: Sequence[int] | None = None, jobs: int = 1, out: str | Path | None = None, *,
            sentiment: Sequence[str] | str | None = None, epochs: int | None = None, grid: bool = False,
            modality_dropout: float = 0.5, data_dir: str | Path | None = None, device: str = "auto",
            threads: int | None = None, plots: bool = True, update: bool = False, command: str | None = None,
            progress: bool | None = None) -> Comparison:
    """Compare fusion methods on ``data`` under one protocol: same encoders, heads, optimiser budget, splits and
    seeds; only the fusion differs.

    Args:
        data: a registered data set name (:func:`~mmgraph.data.available_datasets`), a
            :class:`~mmgraph.data.MultiModalDataset` (yours: split 80/20 per seed -- stratified for classification,
            random for regression -- with validation = 20 % of the training part), a list of those, or None for
            the protocol's benchmark data sets.
        methods: method names (:mod:`mmgraph.evaluation.methods`); default: each data set's default methods. With
            several data sets each runs the given methods that apply to it.
        protocol: ``"quick"`` or ``"full"`` (:mod:`mmgraph.evaluation.protocol`).
        seeds: split and model seeds (default: the protocol's: [0] quick, [0..4] full).
        jobs: worker processes (CPU); results do not depend on it.
        out: folder for ``compare_fusion.md``, ``compare_fusion.json`` and the plots (None: write nothing).
        sentiment: regression targets scored as sentiment (Acc-2, Acc-7, F1, MAE, Corr); default: a task named
            ``sentiment``. Other regression targets get MAE, Corr and R² (ranked by R²).
        epochs: overrides the protocol's epoch budgets; grid: also select head dropout in {0, 0.3} on validation.
        modality_dropout: rate of the variant trained with modality dropout (the GNN; every method on handwritten
            in ``full``).
        data_dir: folder with the field's benchmark files (mosi, mosei, avmnist; docs/data.md).
        device: ``"auto"`` = CUDA when available; threads: torch threads per worker (default 1 with ``jobs > 1``).
        plots: write PNG plots with ``out`` (needs matplotlib: ``pip install "mmgraph[viz]"``). update: re-run only these data sets and methods and replace their
            runs in ``out/compare_fusion.json`` (same protocol and seeds), keeping every other run.
        command: the command line recorded in the report (default: ``mmgraph.compare(...)``).
        progress: a tqdm bar over runs (None: tqdm's default).

    Returns:
        :class:`Comparison` (``to_markdown()``, ``to_json()``, ``table()``, ``plots(out)``).

    Example:
        >>> from mmgraph import compare
        >>> result = compare(my_dataset, methods=["gnn", "concat"], seeds=[0])    # doctest: +SKIP
        >>> print(result.to_markdown())                                             # doctest: +SKIP
    """
    started = time.perf_counter()
    plan = make_protocol(protocol, list(seeds) if seeds is not None else None, epochs, grid, modality_dropout)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected an int >= 1, got {jobs!r}")
    for name in methods or ():
        resolve_method(name)  # unknown names fail before any data is loaded
    if isinstance(sentiment, str):
        sentiment = [sentiment]
    items = list(plan.datasets) if data is None else [data] if isinstance(data, (str, MultiModalDataset)) \
        else list(data)
    previous = _previous_report(Path(out) if out is not None else None, plan) if update else None
    if out is not None and plots:
        pyplot()  # plots need matplotlib (mmgraph[viz]): say so before any training, not after
    device = resolve_device(device)
    sources, chosen, metrics = {}, {}, {}
    for item in items:
        name, per_seed, loaded = _sources(item, plan, data_dir, set(sources))
        wanted = sentiment_tasks(loaded, [t for t in sentiment if t in loaded.tasks] if sentiment else None)
        preset = plan.preset(name)
        valid = [m for m in (methods or default_methods(loaded, preset.methods)) if applies(m, loaded, preset.methods)]
        for seed, source in per_seed.items():
            per_seed[seed] = replace(source, folds=preset.folds, robustness=preset.robustness,
                                     sentiment=tuple(sorted(wanted)))
        sources[name], chosen[name] = per_seed, valid
        metrics[name] = {"columns": [list(c) for c in columns(loaded, wanted)],
                         "primary": primary_metric(loaded, wanted), "sentiment": sorted(wanted)}
    if sentiment and not any(metrics[n]["sentiment"] for n in metrics):
        raise ValueError(f"sentiment: no data set has the regression target(s) {list(sentiment)}")
    unused = [m for m in methods or () if not any(m in chosen[n] for n in chosen)]
    if unused:
        raise ValueError(f"methods: {unused} apply to none of the data sets {list(chosen)} (e.g. unimodal:<m> needs "
                         "two modalities present in every sample; the frame methods image + spectrogram data)")
    work = []
    for name, names in chosen.items():
        for seed in plan.seeds:
            for method in names:
                work.append(Job(sources[name][seed], seed, method, 0.0))
                if plan.modality_dropout > 0 and plan.trains_with_modality_dropout(name, method):
                    work.append(Job(sources[name][seed], seed, method, plan.modality_dropout))
    records = run_jobs(work, plan.budget, device, plan.drop_rates, jobs, threads, progress)
    meta = {
        "protocol": plan.name, "command": command or f"mmgraph.compare({[str(n) for n in chosen]}, ...)",
        "device": str(device), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {jobs} process(es) x "
        f"{(threads or 1) if jobs > 1 else torch.get_num_threads()} torch thread(s)",
        "seeds": list(plan.seeds), "budget": asdict(plan.budget), "versions": versions(),
        "elapsed_s": time.perf_counter() - started, "datasets": list(chosen), "methods": chosen, "metrics": metrics,
    }
    if previous is not None:
        records, meta = _merge(previous, records, meta)
    result = Comparison(summarise(records), records, meta)
    if out is not None:
        result.save(out, plots=plots)
    return result


def _sources(item: Data, plan: Protocol, data_dir: str | Path | None, taken: set[str]
             ) -> tuple[str, dict[int, DataSource], MultiModalDataset]:
    """``(name, {seed: DataSource}, the data of the first seed)``: a built-in data set is loaded again in the
    process running each job; a user's (given, or from a loader registered in this process) travels with it."""
    if isinstance(item, MultiModalDataset):
        name = item.name or "data"
        while name in taken:
            name += "'"
        return name, {seed: DataSource(name, data=item) for seed in plan.seeds}, item
    if not isinstance(item, str):
        raise TypeError(f"data: expected a data set name, a MultiModalDataset or a list of them, got "
                        f"{type(item).__name__}")
    if item not in available_datasets():
        raise ValueError(f"data: unknown data set {item!r}; expected one of {available_datasets()} (or register "
                         "your own with mmgraph.data.register_dataset)")
    samples = plan.preset(item).quick_samples if plan.name == "quick" else None
    per_seed, first = {}, None
    for seed in plan.seeds:
        kwargs = {"seed": seed, "samples": samples, "data_dir": data_dir}
        if item in BUILTIN_DATASETS:
            per_seed[seed] = DataSource(item, load_kwargs=kwargs)
            first = load_dataset_with_split(item, **kwargs)[0] if first is None else first
        else:
            loaded, published = load_dataset_with_split(item, **kwargs)
            per_seed[seed] = DataSource(item, data=loaded, published=published)
            first = loaded if first is None else first
    return item, per_seed, first


def _previous_report(out: Path | None, plan: Protocol) -> dict:
    """The report an ``update`` merges into: ``out/compare_fusion.json`` of the same protocol and seeds."""
    if out is None:
        raise ValueError("update: needs out, the folder of the report to update")
    path = out / "compare_fusion.json"
    if not path.exists():
        raise ValueError(f"update: {path} not found; run without update first")
    previous = json.loads(path.read_text())
    previous["runs"] = _nan(previous.get("runs", []))
    for run in previous["runs"]:  # runs of mmgraph 0.1 (classification only) had no score: it was their accuracy
        if "score" not in run and "accuracy" in run:
            run["score"] = run["accuracy"]
    meta = previous.get("meta", {})
    if meta.get("protocol") != plan.name or meta.get("seeds") != list(plan.seeds):
        raise ValueError(f"update: {path} holds a {meta.get('protocol')!r} run with seeds {meta.get('seeds')}; this "
                         f"run is {plan.name!r} with seeds {list(plan.seeds)}")
    return previous


def _nan(value):
    """The inverse of :func:`~mmgraph.evaluation.report.finite` on runs read back: None -> NaN, recursively."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return value


def _merge(previous: dict, records: list[dict], meta: dict) -> tuple[list[dict], dict]:
    """The previous runs with this update's (data set, method, modality dropout) replaced, and the original meta
    with this update's command, versions, time, data sets and methods appended."""
    replaced = {(r["dataset"], r["method"], r["modality_dropout"]) for r in records}
    kept = [r for r in previous["runs"] if (r["dataset"], r["method"], r["modality_dropout"]) not in replaced]
    update = {key: meta[key] for key in ("command", "versions", "elapsed_s", "datasets", "methods")}
    merged = {**previous["meta"], "updates": [*previous["meta"].get("updates", []), update]}
    merged["datasets"] = list(dict.fromkeys([*previous["meta"]["datasets"], *meta["datasets"]]))
    merged["methods"] = {name: list(dict.fromkeys([*previous["meta"]["methods"].get(name, []),
                                                   *meta["methods"].get(name, [])])) for name in merged["datasets"]}
    merged["metrics"] = {**previous["meta"].get("metrics", {}), **meta["metrics"]}
    return kept + records, merged
