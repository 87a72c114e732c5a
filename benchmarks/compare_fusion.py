"""Compare every fusion method under one budget: same encoders, heads, optimiser, epochs, early stopping and seeds.

    python benchmarks/compare_fusion.py --quick            # < 5 min on 2 CPU cores: every method, 1 split
    python benchmarks/compare_fusion.py --full             # the complete protocol (docs/benchmarks.md)
    python benchmarks/compare_fusion.py --datasets handwritten --methods gnn concat --seeds 0 1 --epochs 20
    python benchmarks/compare_fusion.py --full --datasets av-digits --data-dir ~/data   # + mosi/mosei/avmnist files

Only the fusion differs between methods. Output goes to results/ for --full and results/quick/ otherwise. Hyper-parameters (a small grid in --full) are chosen per split on the
validation part of the training data; the test split is evaluated once per run. Writes `<out>/compare_fusion.md`,
`<out>/compare_fusion.json` (every raw figure, library versions, device, seeds, command line) and PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmgraph.data import (  # noqa: E402
    MultiModalDataset,
    load_avdigits,
    load_avmnist,
    load_handwritten,
    load_mosei,
    load_mosi,
    load_nutrimouse,
    standardize,
    stratified_split,
)
from mmgraph.data.synthetic import make_interaction, make_temporal, random_modality_mask  # noqa: E402
from mmgraph.fusion import available_fusions  # noqa: E402
from mmgraph.encoders import RepeatSteps, SpatialCNNEncoder, SpectrogramFramesEncoder  # noqa: E402
from mmgraph.metrics import (  # noqa: E402
    classification_metrics,
    corrupt,
    corruption_levels,
    effective_robustness,
    relative_robustness,
    sentiment_metrics,
)
from mmgraph.model import FusionModel  # noqa: E402
from mmgraph.train import fit  # noqa: E402
from mmgraph.utils import resolve_device  # noqa: E402

DATASETS = ("handwritten", "nutrimouse", "synthetic-interaction", "synthetic-temporal", "av-digits")
# with --data-dir DIR: the field's benchmarks, from the files users already have (docs/data.md), when present
DATA_DIR_FILES = {"mosi": "mosi_raw.pkl", "mosei": "mosei_senti_data.pkl", "avmnist": "avmnist"}
# image + spectrogram data sets: CNN encoders, unimodal baselines, the audio as frames into the temporal GNN
AUDIO_VISUAL = ("av-digits", "avmnist")
UNIMODAL = ("unimodal:image", "unimodal:audio")
AUDIO_FRAMES = 14  # the temporal GNN sees the 112 spectrogram columns pooled into 14 frames of 8
# the spectrogram as frames into the GNN: with temporal edges, and without them (the control for the frame encoder)
FRAME_METHODS = ("gnn-temporal", "gnn-frames-no-temporal")
DROP_RATES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)
GNN_KWARGS = {"conv": "gat", "heads": 4, "layers": 2, "readout": "concat", "positional": "sinusoidal"}
# On sequence data the fusions that read sequences compete: the temporal GNN, the same GNN without temporal edges,
# and the seq2seq and cnn baselines.
TEMPORAL_METHODS = {
    "gnn": ("gnn", {**GNN_KWARGS, "temporal_window": 2}),
    "gnn-no-temporal": ("gnn", {**GNN_KWARGS, "temporal_window": 0}),
    "seq2seq": ("seq2seq", {}),
    "cnn": ("cnn", {}),
}


@dataclass
class Budget:
    """The optimisation budget every method gets."""

    epochs: int = 60
    patience: int = 10
    batch_size: int = 64
    dim: int = 64
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-3  # weight decay and encoder dropout: chosen on validation by tune_budget.py
    encoder_dropout: float = 0.4
    encoder_hidden: int = 256  # hidden width of each vector modality's MLP encoder
    label_smoothing: float = 0.1  # early stopping on accuracy breaks ties by the lower validation loss (fit)
    grid: dict = field(default_factory=dict)  # name -> candidate values, selected on validation accuracy
    image_audio: tuple[int, int] = (5, 3)  # (epochs, patience) on image + spectrogram data (CNNs: costlier epochs)


# opt-in (never in the default set): the temporal GNN with MTAG-style edge pruning, "gnn-pruned-<fraction>"
PRUNED_PREFIX = "gnn-pruned-"


def pruning_of(method: str) -> float | None:
    """The edge-pruning fraction of a ``gnn-pruned-<fraction>`` method, None for other names."""
    if not method.startswith(PRUNED_PREFIX):
        return None
    try:
        fraction = float(method[len(PRUNED_PREFIX):])
    except ValueError:
        return None
    return fraction if 0.0 < fraction < 1.0 else None


def method_spec(dataset: str, method: str) -> tuple[str, dict]:
    """Registry name and fusion kwargs of a benchmark method."""
    if pruning_of(method) is not None:
        return "gnn", {**TEMPORAL_METHODS["gnn"][1], "edge_pruning": pruning_of(method)}
    if dataset == "synthetic-temporal":
        return TEMPORAL_METHODS[method]
    if method in FRAME_METHODS:
        return TEMPORAL_METHODS["gnn" if method == "gnn-temporal" else "gnn-no-temporal"]
    if method in UNIMODAL:
        return "concat", {}  # one modality: the same encoder, then the same MLP + head as early fusion
    return method, (dict(GNN_KWARGS) if method == "gnn" else {})


def default_methods(dataset: str) -> list[str]:
    if dataset == "synthetic-temporal":
        return list(TEMPORAL_METHODS)
    if dataset in AUDIO_VISUAL:
        return [*available_fusions(), *FRAME_METHODS, *UNIMODAL]
    return available_fusions()


# ---------------------------------------------------------------------------------------------- data and splits
_FIXED_SPLITS: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def load(dataset: str, seed: int = 0, quick: bool = False, data_dir: Path | None = None) -> MultiModalDataset:
    if dataset in ("av-digits", *DATA_DIR_FILES):
        if dataset == "av-digits":
            parts = load_avdigits()
        else:
            path = Path(data_dir or ".") / DATA_DIR_FILES[dataset]
            parts = {"mosi": load_mosi, "mosei": load_mosei, "avmnist": load_avmnist}[dataset](path)
        data, _FIXED_SPLITS[dataset] = concatenate([parts["train"], parts["valid"], parts["test"]])
        return data
    if dataset == "handwritten":
        return load_handwritten()
    if dataset == "nutrimouse":
        return load_nutrimouse()
    if dataset == "synthetic-interaction":
        # two informative modalities (label = XOR of one sign from each) and one distractor modality
        return make_interaction(n=2000, num_modalities=3, dim=8, informative=[0, 1], noise=0.0, seed=seed)
    if dataset == "synthetic-temporal":
        return make_temporal(n=1000 if quick else 2000, num_modalities=2, steps=8, dim=8, seed=seed)
    raise ValueError(f"--datasets: unknown data set {dataset!r}; expected one of {list(DATASETS)}")


def splits(dataset: str, data: MultiModalDataset, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(train, val, test) index triples of one seed: one stratified 80/20 split with validation carved from the
    training part, or, for nutrimouse (n = 40), one repetition of stratified 5-fold cross-validation; the data sets
    published with their split (av-digits, avmnist, mosi, mosei) keep it, whatever the seed."""
    if dataset in _FIXED_SPLITS:
        return [_FIXED_SPLITS[dataset]]
    if dataset != "nutrimouse":
        return [stratified_split(data, test_size=0.2, val_size=0.2, seed=seed)]
    from sklearn.model_selection import StratifiedKFold

    labels = data.labels().numpy()
    folds = []
    for k, (train_val, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels)):
        inner, val, _ = stratified_split(labels[train_val], test_size=0.0, val_size=0.2, seed=seed * 10 + k)
        train_val = torch.as_tensor(train_val)
        folds.append((train_val[inner], train_val[val], torch.as_tensor(test)))
    return folds


def concatenate(parts: Sequence[MultiModalDataset]) -> tuple[MultiModalDataset, tuple[torch.Tensor, ...]]:
    """One dataset holding ``parts`` one after the other, and the index range of each part."""
    batches = [part[torch.arange(len(part))] for part in parts]
    step_masks = [b.step_mask for b in batches]
    data = MultiModalDataset(
        {m: torch.cat([b.inputs[m] for b in batches]) for m in parts[0].modalities},
        {t: torch.cat([b.targets[t] for b in batches]) for t in parts[0].tasks},
        torch.cat([b.mask for b in batches]),
        None if step_masks[0] is None else {m: torch.cat([s[m] for s in step_masks]) for m in step_masks[0]},
        task_types=parts[0].tasks, name=parts[0].name, class_names=parts[0].class_names)
    bounds = torch.tensor([0, *(len(part) for part in parts)]).cumsum(0).tolist()
    return data, tuple(torch.arange(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]))


def only(data: MultiModalDataset, modality: str) -> MultiModalDataset:
    """``data`` restricted to one modality, present in every sample (the split indices stay valid)."""
    if not bool(data.mask[:, data.modalities.index(modality)].all()):
        raise ValueError(f"unimodal:{modality}: {data.name} lacks {modality!r} in some samples; a unimodal baseline "
                         "needs it in every sample")
    steps = (data.step_mask or {}).get(modality)
    return MultiModalDataset({modality: data.features[modality]}, data.targets, None,
                             None if steps is None else {modality: steps}, task_types=data.tasks, name=data.name,
                             class_names=data.class_names)


def audio_visual_encoders(data: MultiModalDataset, method: str, dim: int, dropout: float) -> dict[str, nn.Module]:
    """The encoders every method gets on image + spectrogram data: a :class:`~mmgraph.encoders.SpatialCNNEncoder` per image, with a strided stem
    per spectrogram; for :data:`FRAME_METHODS` the spectrogram as frames and the image repeated at every frame."""
    encoders: dict[str, nn.Module] = {}
    for name, shape in data.input_shapes.items():
        if name == "audio" and method in FRAME_METHODS:
            encoders[name] = SpectrogramFramesEncoder(dim, shape[0] * shape[1], AUDIO_FRAMES, dropout)
        elif name == "audio":
            encoders[name] = SpatialCNNEncoder(dim, tuple(shape[1:]), in_channels=shape[0], stem=shape[1] // 28,
                                               dropout=dropout)
        else:
            encoders[name] = SpatialCNNEncoder(dim, tuple(shape[1:]), in_channels=shape[0], dropout=dropout)
    if method in FRAME_METHODS:
        encoders = {name: e if name == "audio" else RepeatSteps(e, AUDIO_FRAMES) for name, e in encoders.items()}
    return encoders


# ---------------------------------------------------------------------------------------------- one run
def predict(model: FusionModel, data: MultiModalDataset, mask: torch.Tensor | None, device: torch.device,
            batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Class predictions per task; ``mask`` (``[N, M]``) further removes modalities at test time."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = torch.arange(start, min(start + batch_size, len(data)))
            batch = data[index].to(device)
            present = batch.mask if mask is None else batch.mask & mask[index].to(device)
            for task, logits in model(batch.inputs, present, batch.step_mask).items():
                out.setdefault(task, []).append(logits.argmax(-1).cpu() if data.tasks[task] else logits[:, 0].cpu())
    return {task: torch.cat(parts) for task, parts in out.items()}


def score(data: MultiModalDataset, predictions: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Classification metrics per task; a regression task (sentiment) gets the affect scores, with Acc-2 and its F1
    as its ``accuracy`` and ``macro_f1``."""
    batch = data[torch.arange(len(data))]
    return {task: classification_metrics(batch.targets[task], predictions[task], data.tasks[task])
            if data.tasks[task] else _sentiment(batch.targets[task], predictions[task]) for task in data.tasks}


def _sentiment(truth: torch.Tensor, predicted: torch.Tensor) -> dict:
    metrics = sentiment_metrics(truth, predicted)
    return {**metrics, "accuracy": metrics["acc2"], "macro_f1": metrics["f1"], "macro_recall": math.nan}


def mean_accuracy(metrics: dict[str, dict]) -> float:
    return statistics.fmean(m["accuracy"] for m in metrics.values())


def inference_rate(model: FusionModel, data: MultiModalDataset, device: torch.device) -> float:
    """Test-set samples per second in eval mode (batches of 512, best of 3 passes)."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        predict(model, data, None, device)
        best = min(best, time.perf_counter() - start)
    return len(data) / best


def train_once(train: MultiModalDataset, val: MultiModalDataset, fusion: str, fusion_kwargs: dict, budget: Budget,
               config: dict, seed: int, device: torch.device, modality_dropout: float,
               method: str | None = None) -> tuple[FusionModel, dict]:
    """Train one model; on image + spectrogram data (``method`` given) with :func:`audio_visual_encoders`."""
    torch.manual_seed(seed)
    encoder_dropout = config.get("encoder_dropout", budget.encoder_dropout)
    if method is not None:
        model = FusionModel(audio_visual_encoders(train, method, budget.dim, encoder_dropout), fusion, train.tasks,
                            dim=budget.dim, fusion_kwargs=dict(fusion_kwargs), modality_dropout=modality_dropout,
                            head_dropout=config.get("dropout", 0.0))
    else:
        model = FusionModel.from_dataset(train, fusion, dim=budget.dim, fusion_kwargs=dict(fusion_kwargs),
                                         encoder_kwargs={"hidden": budget.encoder_hidden,
                                                         "dropout": encoder_dropout},
                                         modality_dropout=modality_dropout, head_dropout=config.get("dropout", 0.0))
    result = fit(model, train, val, optimizer=budget.optimizer, lr=config.get("lr", budget.lr),
                 weight_decay=config.get("weight_decay", budget.weight_decay), epochs=budget.epochs,
                 batch_size=budget.batch_size, patience=budget.patience, label_smoothing=budget.label_smoothing,
                 device=device, seed=seed, progress=False)
    return model, {"best_val": result.best_score, "epochs_run": result.epochs_run, "train_time_s": result.time_s,
                   "config": config}


def run_one(dataset: str, data: MultiModalDataset, method: str, split: tuple, seed: int, budget: Budget,
            device: torch.device, modality_dropout: float, robustness: bool) -> dict:
    """Select the configuration on validation, evaluate the test split once, then under test-time drops."""
    train_idx, val_idx, test_idx = split
    modalities = list(data.modalities)
    if method in UNIMODAL:
        data = only(data, method.split(":")[1])
    train, val, test = standardize(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))
    fusion, fusion_kwargs = method_spec(dataset, method)
    keys = sorted(budget.grid)
    configs = [dict(zip(keys, values)) for values in itertools.product(*(budget.grid[k] for k in keys))] or [{}]
    best_model, best_info, total_time = None, None, 0.0
    for config in configs:
        model, info = train_once(train, val, fusion, fusion_kwargs, budget, config, seed, device, modality_dropout,
                                 method=method if dataset in AUDIO_VISUAL else None)
        total_time += info["train_time_s"]
        if best_info is None or info["best_val"] > best_info["best_val"]:
            best_model, best_info = model, info
    metrics = score(test, predict(best_model, test, None, device))
    record = {
        "dataset": dataset, "method": method, "seed": seed, "modality_dropout": modality_dropout,
        "test": metrics, "accuracy": mean_accuracy(metrics),
        "macro_f1": statistics.fmean(m["macro_f1"] for m in metrics.values()),
        "macro_recall": statistics.fmean(m["macro_recall"] for m in metrics.values()),
        "val_score": best_info["best_val"], "config": best_info["config"], "epochs_run": best_info["epochs_run"],
        "train_time_s": total_time, "parameters": sum(p.numel() for p in best_model.parameters()),
        "fusion_parameters": sum(p.numel() for p in best_model.fusion.parameters()),
        "inference_samples_per_s": inference_rate(best_model, test, device),
    }
    if robustness:
        num_modalities = len(test.modalities)
        exact, bernoulli, seen = {}, {}, {}

        def accuracy_with(keep: torch.Tensor) -> float:  # rates giving the same masks (few modalities) run once
            key = keep.numpy().tobytes()
            if key not in seen:
                seen[key] = mean_accuracy(score(test, predict(best_model, test, keep, device)))
            return seen[key]

        for rate in DROP_RATES:
            exact[str(rate)] = accuracy_with(drop_fraction(len(test), num_modalities, rate, seed=1000 + seed))
            bernoulli[str(rate)] = accuracy_with(random_modality_mask(len(test), num_modalities, rate,
                                                                      seed=1000 + seed))
        record["robustness"], record["robustness_bernoulli"] = exact, bernoulli
        record["corruption"] = corruption_curves(best_model, test, modalities, record["accuracy"], seed, device)
    return record


def corruption_curves(model: FusionModel, test: MultiModalDataset, modalities: list[str], clean: float, seed: int,
                      device: torch.device) -> dict[str, dict[str, float]]:
    """MultiBench's protocol: test accuracy with one modality corrupted at each of 11 levels (Gaussian noise on
    z-scored features and images, steps masked on sequences), the others clean: ``{modality: {level: accuracy}}``.
    A modality the model does not read (a unimodal baseline) leaves its accuracy at the clean value."""
    curves: dict[str, dict[str, float]] = {}
    for position, name in enumerate(modalities):
        curves[name] = {"0.0": clean}
        for level in corruption_levels()[1:]:
            if name not in test.modalities:
                curves[name][str(level)] = clean
                continue
            x = test.features[name]
            sequence = test.step_mask is not None and name in test.step_mask
            noisy = test.with_features({name: corrupt(x, level, sequence, seed=2000 + 100 * seed + position)})
            curves[name][str(level)] = mean_accuracy(score(noisy, predict(model, noisy, None, device)))
    return curves


def drop_fraction(n: int, num_modalities: int, rate: float, seed: int) -> torch.Tensor:
    """Presence mask ``BoolTensor[n, M]`` with exactly ``round(rate * M)`` modalities dropped per sample (at most
    ``M - 1``: never all), chosen uniformly at random: "a fraction p of the modalities is dropped"."""
    drop = min(int(math.floor(rate * num_modalities + 0.5)), num_modalities - 1)
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n, num_modalities, generator=generator).argsort(1).argsort(1)  # random rank per modality
    return ranks >= drop


_DATA_CACHE: dict = {}


def run_job(job: tuple, budget: Budget, device: str, quick: bool, threads: int | None,
            data_dir: Path | None = None) -> list[dict]:
    """All folds of one (dataset, seed, method, modality dropout) job; runs in a worker process or inline."""
    if threads:
        torch.set_num_threads(threads)
    dataset, seed, method, dropout = job
    if dataset in AUDIO_VISUAL:
        budget = dataclasses.replace(budget, epochs=budget.image_audio[0], patience=budget.image_audio[1])
    data_seed = seed if dataset.startswith("synthetic") else 0
    if (dataset, data_seed) not in _DATA_CACHE:
        _DATA_CACHE[(dataset, data_seed)] = load(dataset, data_seed, quick=quick, data_dir=data_dir)
    data = _DATA_CACHE[(dataset, data_seed)]
    records = []
    for fold, split in enumerate(splits(dataset, data, seed)):
        record = run_one(dataset, data, method, split, seed, budget, torch.device(device), dropout,
                         robustness=dataset != "synthetic-temporal")
        record["fold"] = fold
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------- aggregation
def summarise(records: list[dict]) -> dict:
    """Per dataset and method: mean/std over runs, and the paired difference to the best method."""
    summary: dict = {}
    by_key: dict = {}
    for r in records:
        by_key.setdefault((r["dataset"], r["modality_dropout"], r["method"]), []).append(r)
    for (dataset, dropout, method), runs in by_key.items():
        row = {"runs": len(runs)}
        for metric in ("accuracy", "macro_f1", "macro_recall", "train_time_s", "inference_samples_per_s"):
            values = [r[metric] for r in runs]
            row[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        row["parameters"] = runs[0]["parameters"]
        row["fusion_parameters"] = runs[0]["fusion_parameters"]
        if "robustness" in runs[0]:
            row["robustness"] = {rate: statistics.fmean(r["robustness"][rate] for r in runs)
                                 for rate in runs[0]["robustness"]}
        if "corruption" in runs[0]:
            row["corruption"] = {m: {level: statistics.fmean(r["corruption"][m][level] for r in runs)
                                     for level in curve} for m, curve in runs[0]["corruption"].items()}
        if runs[0]["test"] and len(runs[0]["test"]) > 1:
            row["per_task_accuracy"] = {task: statistics.fmean(r["test"][task]["accuracy"] for r in runs)
                                        for task in runs[0]["test"]}
        summary.setdefault(dataset, {}).setdefault(str(dropout), {})[method] = row
    for dataset, by_dropout in summary.items():
        for dropout, rows in by_dropout.items():
            add_robustness_scores(rows, by_dropout.get("0.0", {}).get("late"))
            best = max(rows, key=lambda m: rows[m]["accuracy"]["mean"])

            def runs_of(method: str) -> dict:
                return {(r["seed"], r["fold"]): r["accuracy"] for r in records if r["dataset"] == dataset
                        and str(r["modality_dropout"]) == dropout and r["method"] == method}

            best_runs = runs_of(best)
            for method, row in rows.items():
                diffs = [acc - best_runs[key] for key, acc in runs_of(method).items() if key in best_runs]
                row["paired_diff_to_best"] = {
                    "best": best, "mean": statistics.fmean(diffs) if diffs else 0.0,
                    "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0}
    return summary


def add_robustness_scores(rows: dict, late: dict | None) -> None:
    """MultiBench's relative robustness (area under each corrupted modality's mean accuracy curve) and effective
    robustness (area between that curve and late fusion's, shifted to the same clean accuracy; late fusion trained
    without modality dropout is the reference), per modality and their mean over modalities."""
    for row in rows.values():
        if "corruption" not in row:
            continue
        relative, effective = {}, {}
        for name, curve in row["corruption"].items():
            levels = [float(level) for level in curve]
            relative[name] = relative_robustness(levels, list(curve.values()))
            if late is not None and "corruption" in late:
                effective[name] = effective_robustness(levels, list(curve.values()),
                                                       list(late["corruption"][name].values()))
        row["relative_robustness"] = {**relative, "mean": statistics.fmean(relative.values())}
        if effective:
            row["effective_robustness"] = {**effective, "mean": statistics.fmean(effective.values())}


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"# Fusion comparison ({meta['protocol']})", "",
             f"Command: `{meta['command']}`  ",
             *(f"Then re-run (`--update`, these runs replaced): `{u['command']}`  " for u in meta.get("updates", [])),
             f"Device: {meta['device']}; {meta['machine']}  ",
             f"Seeds: {meta['seeds']}; budget: {meta['budget']}", ""]
    for dataset, by_dropout in summary.items():
        for dropout, rows in by_dropout.items():
            title = dataset + ("" if float(dropout) == 0 else f" (trained with modality dropout {dropout})")
            runs = next(iter(rows.values()))["runs"]
            lines += [f"## {title}", "", f"Mean ± std over {runs} run(s); Δ = paired difference to the best method.",
                      "", "| method | accuracy | macro F1 | macro recall | Δ vs best | params (fusion) | train s |"
                      " infer samples/s |", "|---|---|---|---|---|---|---|---|"]
            for method, row in sorted(rows.items(), key=lambda kv: -kv[1]["accuracy"]["mean"]):
                diff = row["paired_diff_to_best"]
                lines.append(
                    f"| {method} | {_pm(row['accuracy'])} | {_pm(row['macro_f1'])} | {_pm(row['macro_recall'])} | "
                    f"{100 * diff['mean']:+.2f} ± {100 * diff['std']:.2f} | {row['parameters']:,} "
                    f"({row['fusion_parameters']:,}) | {row['train_time_s']['mean']:.1f} | "
                    f"{row['inference_samples_per_s']['mean']:,.0f} |")
            tasks = [r for r in rows.values() if "per_task_accuracy" in r]
            if tasks:
                names = list(tasks[0]["per_task_accuracy"])
                lines += ["", "Per-task test accuracy:", "", "| method | " + " | ".join(names) + " |",
                          "|---|" + "---|" * len(names)]
                for method, row in rows.items():
                    lines.append(f"| {method} | " + " | ".join(
                        f"{100 * row['per_task_accuracy'][t]:.2f}" for t in names) + " |")
            robust = {m: r["robustness"] for m, r in rows.items() if "robustness" in r}
            if robust:
                rates = list(next(iter(robust.values())))
                lines += ["", "Test accuracy with a fraction p of each sample's modalities dropped at test time "
                          "(round(p·M) of them, never all; the Bernoulli(p) variant is in the JSON):", "",
                          "| method | " + " | ".join(f"p={r}" for r in rates) + " |",
                          "|---|" + "---|" * len(rates)]
                for method, curve in sorted(robust.items(), key=lambda kv: -kv[1][rates[-1]]):
                    lines.append(f"| {method} | " + " | ".join(f"{100 * curve[r]:.2f}" for r in rates) + " |")
            lines += corruption_table(rows)
            lines.append("")
    return "\n".join(lines)


def corruption_table(rows: dict) -> list[str]:
    """Markdown lines: relative and effective robustness per method and corrupted modality (MultiBench)."""
    scored = {m: r for m, r in rows.items() if "relative_robustness" in r}
    if not scored:
        return []
    modalities = list(next(iter(scored.values()))["corruption"])
    effective = all("effective_robustness" in r for r in scored.values())
    header = ["method", "clean", "rel. rob. (mean)"] + (["eff. rob. vs late (mean)"] if effective else [])
    header += [f"rel. {m}" for m in modalities] + ([f"eff. {m}" for m in modalities] if effective else [])
    lines = ["", "Robustness to corruption (MultiBench): one modality corrupted at levels 0.0, 0.1, ..., 1.0 (Gaussian "
             "noise of that std on z-scored features and images, that fraction of steps masked on sequences), the "
             "others clean. Relative robustness = area under the accuracy-vs-level curve (x100); effective robustness "
             "= area between the curve and late fusion's shifted to the same clean accuracy (x100, > 0 = degrades "
             "less than late fusion). Curves per level are in the JSON.", "",
             "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for method, row in sorted(scored.items(), key=lambda kv: -kv[1]["relative_robustness"]["mean"]):
        cells = [method, f"{100 * row['accuracy']['mean']:.2f}", f"{100 * row['relative_robustness']['mean']:.2f}"]
        if effective:
            cells.append(f"{100 * row['effective_robustness']['mean']:+.2f}")
        cells += [f"{100 * row['relative_robustness'][m]:.2f}" for m in modalities]
        if effective:
            cells += [f"{100 * row['effective_robustness'][m]:+.2f}" for m in modalities]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _pm(stat: dict) -> str:
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def plots(summary: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset, by_dropout in summary.items():
        rows = by_dropout.get("0.0") or next(iter(by_dropout.values()))
        methods = sorted(rows, key=lambda m: -rows[m]["accuracy"]["mean"])
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(methods)), 3.6))
        means = [100 * rows[m]["accuracy"]["mean"] for m in methods]
        stds = [100 * rows[m]["accuracy"]["std"] for m in methods]
        colors = ["tab:red" if m.startswith("gnn") else "tab:blue" for m in methods]
        ax.bar(methods, means, yerr=stds, capsize=3, color=colors)
        low = min(m - s for m, s in zip(means, stds))
        ax.set_ylim(max(0, low - 5), 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset}: mean ± std over {rows[methods[0]]['runs']} run(s)")
        ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        path = out / f"accuracy_{dataset}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path.name)

        curves = [(dropout, m, r["robustness"]) for dropout, rs in by_dropout.items() for m, r in rs.items()
                  if "robustness" in r]
        if curves:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for dropout, method, curve in curves:
                rates = [float(r) for r in curve]
                label = method + ("" if float(dropout) == 0 else f" (+modality dropout {dropout})")
                style = "-" if method.startswith("gnn") else "--"
                ax.plot(rates, [100 * v for v in curve.values()], style, marker="o", ms=3, label=label,
                        lw=2.2 if method.startswith("gnn") else 1.0)
            ax.set_xlabel("fraction of modalities dropped at test time")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{dataset}: robustness to missing modalities")
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = out / f"robustness_{dataset}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path.name)

        corrupted = {m: r["corruption"] for m, r in rows.items() if "corruption" in r}
        if corrupted:
            modalities = list(next(iter(corrupted.values())))
            fig, axes = plt.subplots(1, len(modalities), figsize=(4.2 * len(modalities), 3.8), squeeze=False,
                                     sharey=True)
            for ax, name in zip(axes[0], modalities):
                for method, curves in corrupted.items():
                    curve = curves[name]
                    ax.plot([float(level) for level in curve], [100 * v for v in curve.values()],
                            "-" if method.startswith("gnn") else "--", lw=2.2 if method.startswith("gnn") else 1.0,
                            label=f"{method} (rel. {100 * rows[method]['relative_robustness']['mean']:.1f})")
                ax.set_xlabel(f"corruption level of {name}")
                ax.set_title(f"{dataset}: {name} corrupted")
            axes[0][0].set_ylabel("test accuracy (%)")
            axes[0][-1].legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = out / f"corruption_{dataset}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path.name)
    return written


# ---------------------------------------------------------------------------------------------- command line
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fast protocol (default): 1 split, short budget")
    mode.add_argument("--full", action="store_true", help="complete protocol: 5 splits, grid, robustness variants")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help=f"subset of {list(DATASETS)}")
    parser.add_argument("--methods", nargs="+", default=None, metavar="NAME", help="fusion names (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--modality-dropout", type=float, default=0.5,
                        help="rate for the variant trained with modality dropout")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/ for --full, results/quick/ otherwise, so a quick run "
                             "never overwrites the committed full results)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes (CPU only); each run is seeded, so results do not depend on it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads per process (default: 1 with --jobs > 1, else torch's choice)")
    parser.add_argument("--grid", action="store_true",
                        help="also select head dropout in {0, 0.3} per method and split on validation accuracy")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--update", action="store_true",
                        help="re-run only the given --datasets/--methods and replace their runs in the existing "
                             "<out>/compare_fusion.json (same protocol and seeds), keeping every other run; the "
                             "tables and plots are rebuilt from the merged runs and the command is recorded")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder with the field's benchmark files: adds " + ", ".join(
                            f"{name} ({path})" for name, path in DATA_DIR_FILES.items()) +
                        " for those present (docs/data.md)")
    return parser.parse_args(argv)


def trains_with_modality_dropout(dataset: str, method: str, full: bool) -> bool:
    """Which runs get the second variant trained with modality dropout: in --full every method on handwritten
    (the robustness comparison, same protocol for all) and the GNN elsewhere; in --quick the GNN only."""
    if dataset == "synthetic-temporal":
        return False
    return method == "gnn" or (full and dataset == "handwritten")


def plan(args: argparse.Namespace) -> tuple[list[str], dict[str, list[str]], list[int], Budget]:
    full = args.full
    datasets = args.datasets or (list(DATASETS) if full else ["handwritten", "synthetic-interaction",
                                                              "synthetic-temporal", "av-digits"])
    for name in datasets:
        if name not in DATASETS and name not in DATA_DIR_FILES:
            raise SystemExit(f"error: --datasets: unknown data set {name!r}; expected some of "
                             f"{[*DATASETS, *DATA_DIR_FILES]}")
    datasets = [name for name in datasets if name not in DATA_DIR_FILES]
    if args.data_dir is not None:
        for name, path in DATA_DIR_FILES.items():
            if args.datasets and name not in args.datasets:
                continue
            if (args.data_dir / path).exists():
                datasets.append(name)
            else:
                print(f"note: {name} skipped: {args.data_dir / path} not found (docs/data.md)", file=sys.stderr)
    elif args.datasets and any(name in DATA_DIR_FILES for name in args.datasets):
        raise SystemExit(f"error: --datasets: {[n for n in args.datasets if n in DATA_DIR_FILES]} need --data-dir")
    methods = {}
    known = {m for name in (*DATASETS, *DATA_DIR_FILES) for m in default_methods(name)}
    for dataset in datasets:
        valid = default_methods(dataset)
        chosen = args.methods or valid
        unknown = [m for m in chosen if m not in known and pruning_of(m) is None]
        if unknown:
            raise SystemExit(f"error: --methods: unknown method(s) {unknown}; expected some of "
                             f"{available_fusions()} (sequence data: {list(TEMPORAL_METHODS)}; image + audio data: "
                             f"also {[*FRAME_METHODS, *UNIMODAL]}; sequence data, opt-in: "
                             f"{PRUNED_PREFIX}<fraction in (0, 1)>)")
        methods[dataset] = [m for m in chosen if m in valid or (pruning_of(m) is not None
                                                                 and dataset == "synthetic-temporal")]
    seeds = args.seeds if args.seeds is not None else ([0, 1, 2, 3, 4] if full else [0])
    budget = Budget(epochs=args.epochs or (100 if full else 25), patience=15 if full else 6)
    budget.image_audio = (args.epochs or (40 if full else 5), 8 if full else 3)
    if args.grid:
        budget.grid = {"dropout": [0.0, 0.3]}
    return datasets, methods, seeds, budget


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads and args.jobs <= 1:
        torch.set_num_threads(args.threads)
    datasets, methods, seeds, budget = plan(args)
    device = resolve_device(args.device)
    protocol = "full" if args.full else "quick"
    args.out = args.out or Path("results" if args.full else "results/quick")
    previous = _previous_report(args, protocol, seeds) if args.update else None
    if "av-digits" in datasets:
        load_avdigits()  # build the cache once, before the worker processes read it
    jobs = []
    for dataset in datasets:
        for seed in seeds:
            for method in methods[dataset]:
                jobs.append((dataset, seed, method, 0.0))
                if trains_with_modality_dropout(dataset, method, args.full):
                    jobs.append((dataset, seed, method, args.modality_dropout))

    from tqdm.auto import tqdm

    records = []
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="compare_fusion", unit="run", dynamic_ncols=True)
    if args.jobs > 1 and device.type == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = args.threads or 1
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {pool.submit(run_job, job, budget, str(device), not args.full, threads, args.data_dir): job
                       for job in jobs}
            for future in as_completed(futures):
                records.extend(future.result())
                bar.set_postfix_str(" ".join(map(str, futures[future])))
                bar.update()
    else:
        for job in jobs:
            bar.set_postfix_str(" ".join(map(str, job)))
            records.extend(run_job(job, budget, str(device), not args.full, args.threads, args.data_dir))
            bar.update()
    bar.close()
    order = {job: i for i, job in enumerate(jobs)}
    records.sort(key=lambda r: (order[(r["dataset"], r["seed"], r["method"], r["modality_dropout"])], r["fold"]))

    if previous is not None:
        replaced = {(r["dataset"], r["method"], r["modality_dropout"]) for r in records}
        kept = [r for r in previous["runs"] if (r["dataset"], r["method"], r["modality_dropout"]) not in replaced]
        records = kept + records
    summary = summarise(records)
    meta = {
        "protocol": protocol, "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "device": str(device), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {args.jobs} process(es) x "
        f"{(args.threads or 1) if args.jobs > 1 else torch.get_num_threads()} torch thread(s)",
        "seeds": seeds, "budget": {k: v for k, v in budget.__dict__.items()},
        "versions": _versions(), "elapsed_s": time.perf_counter() - start,
        "datasets": datasets, "methods": methods,
    }
    if previous is not None:  # the original run's description, plus this update's
        update = {key: meta[key] for key in ("command", "versions", "elapsed_s", "datasets", "methods")}
        meta = {**previous["meta"], "updates": [*previous["meta"].get("updates", []), update]}
        meta["datasets"] = list(dict.fromkeys([*previous["meta"]["datasets"], *datasets]))
        meta["methods"] = {name: list(dict.fromkeys([*previous["meta"]["methods"].get(name, []),
                                                     *methods.get(name, [])])) for name in meta["datasets"]}
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(summary, meta)
    (args.out / "compare_fusion.md").write_text(table)
    meta["plots"] = [] if args.no_plots else plots(summary, args.out)
    report = {"meta": meta, "summary": summary, "runs": records}
    (args.out / "compare_fusion.json").write_text(json.dumps(report, indent=1))
    print(table)
    print(f"wrote {args.out / 'compare_fusion.md'}, {args.out / 'compare_fusion.json'} and {len(meta['plots'])} plot(s)"
          f" in {time.perf_counter() - start:.0f}s")
    return report


def _previous_report(args: argparse.Namespace, protocol: str, seeds: list[int]) -> dict:
    """The report an ``--update`` run merges into: ``<out>/compare_fusion.json`` of the same protocol and seeds."""
    path = args.out / "compare_fusion.json"
    if not path.exists():
        raise SystemExit(f"error: --update: {path} not found; run without --update first")
    previous = json.loads(path.read_text())
    meta = previous.get("meta", {})
    if meta.get("protocol") != protocol or meta.get("seeds") != seeds:
        raise SystemExit(f"error: --update: {path} holds a {meta.get('protocol')!r} run with seeds "
                         f"{meta.get('seeds')}; this run is {protocol!r} with seeds {seeds}")
    return previous


def _versions() -> dict:
    import numpy
    import sklearn
    import torch_geometric

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "numpy": numpy.__version__,
            "scikit_learn": sklearn.__version__, "cuda": torch.version.cuda}


if __name__ == "__main__":
    main()
