"""One run of the comparison (train with the shared budget, select on validation, score the test part once, then the
robustness sweeps) and the runner of many runs, inline or in worker processes.

Nothing is cached between runs in module state: a job carries its data source -- the name of a built-in data set,
loaded in the process that runs the job, or the data themselves.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmgraph.data import MultiModalDataset, standardize
from mmgraph.data.registry import load_dataset_with_split
from mmgraph.encoders import RepeatSteps, SpatialCNNEncoder, SpectrogramCNNFramesEncoder
from mmgraph.encoders.cnn import default_stem
from mmgraph.evaluation.methods import Method, has_sequences, is_audio_visual, resolve_method
from mmgraph.evaluation.protocol import Budget, Split, splits
from mmgraph.evaluation.robustness import corruption_curves, drop_curves
from mmgraph.evaluation.scores import run_scores, task_scores
from mmgraph.models import FusionModel
from mmgraph.training import fit, predict

__all__ = ["DataSource", "Job", "audio_visual_encoders", "budget_for", "only", "outputs", "run_job", "run_jobs",
           "run_one", "score", "train_once"]


@dataclass(frozen=True)
class DataSource:
    """Where a job's data come from: a registered ``name`` loaded with ``load_kwargs`` in the process running the
    job (built-in data sets), or the ``data`` themselves with their ``published`` split (if any)."""

    name: str
    load_kwargs: dict | None = None
    data: MultiModalDataset | None = None
    published: Split | None = None
    folds: int = 0
    robustness: bool = True
    sentiment: tuple[str, ...] = ()

    def load(self) -> tuple[MultiModalDataset, Split | None]:
        if self.data is not None:
            return self.data, self.published
        return load_dataset_with_split(self.name, **(self.load_kwargs or {}))


@dataclass(frozen=True)
class Job:
    """All folds of one (data set, seed, method, modality dropout) combination."""

    source: DataSource
    seed: int
    method: str
    modality_dropout: float

    @property
    def key(self) -> tuple:
        return self.source.name, self.seed, self.method, self.modality_dropout


def only(data: MultiModalDataset, modality: str) -> MultiModalDataset:
    """``data`` restricted to one modality, present in every sample (the split indices stay valid)."""
    if modality not in data.modalities:
        raise ValueError(f"unimodal:{modality}: {data.name} has no modality {modality!r}; it has {data.modalities}")
    if not bool(data.mask[:, data.modalities.index(modality)].all()):
        raise ValueError(f"unimodal:{modality}: {data.name} lacks {modality!r} in some samples; a unimodal baseline "
                         "needs it in every sample")
    steps = (data.step_mask or {}).get(modality)
    return MultiModalDataset({modality: data.features[modality]}, data.targets, None,
                             None if steps is None else {modality: steps}, task_types=data.tasks, name=data.name,
                             class_names=data.class_names)


def audio_visual_encoders(data: MultiModalDataset, frames: bool, dim: int, dropout: float) -> dict[str, nn.Module]:
    """The encoders every method gets on image + spectrogram data: a :class:`~mmgraph.encoders.SpatialCNNEncoder`
    per modality, with the strided stem of :func:`~mmgraph.encoders.cnn.default_stem` (1 for 28 x 28 digits, 4 for
    112 x 112 spectrograms); with ``frames`` the spectrogram as the frames of a
    :class:`~mmgraph.encoders.SpectrogramCNNFramesEncoder` (the same convolutions and stem;
    :data:`~mmgraph.evaluation.methods.AUDIO_FRAMES` frames for a 112-column spectrogram) and the image repeated
    at every frame."""
    encoders: dict[str, nn.Module] = {}
    steps = 0
    for name, shape in data.input_shapes.items():
        stem = default_stem(*shape[1:])
        if name == "audio" and frames:
            encoders[name] = SpectrogramCNNFramesEncoder(dim, tuple(shape[1:]), in_channels=shape[0], stem=stem,
                                                         dropout=dropout)
            steps = encoders[name].frames
        else:
            encoders[name] = SpatialCNNEncoder(dim, tuple(shape[1:]), in_channels=shape[0], stem=stem,
                                               dropout=dropout)
    if frames:
        encoders = {name: e if name == "audio" else RepeatSteps(e, steps) for name, e in encoders.items()}
    return encoders


def budget_for(data: MultiModalDataset, budget: Budget) -> Budget:
    """``budget`` as it applies to ``data``: image + spectrogram data train for ``budget.image_audio``'s
    ``(epochs, patience)`` (CNN epochs cost more), everything else for ``budget.train``'s."""
    if not is_audio_visual(data):
        return budget
    epochs, patience = budget.image_audio
    return dataclasses.replace(budget, train=dataclasses.replace(budget.train, epochs=epochs, patience=patience))


def train_once(train: MultiModalDataset, val: MultiModalDataset, method: Method, budget: Budget, config: dict,
               seed: int, device: torch.device, modality_dropout: float) -> tuple[nn.Module, dict]:
    """Train one model of ``method`` with ``budget`` (its :class:`~mmgraph.training.TrainConfig` ``budget.train``,
    seeded with ``seed``; ``config`` overrides ``lr``, ``weight_decay``, ``encoder_dropout`` and head ``dropout``);
    image + spectrogram data get :func:`audio_visual_encoders`."""
    torch.manual_seed(seed)
    encoder_dropout = config.get("encoder_dropout", budget.encoder_dropout)
    if is_audio_visual(train):
        model = FusionModel(audio_visual_encoders(train, method.frames, budget.dim, encoder_dropout), method.fusion,
                            train.tasks, dim=budget.dim, fusion_kwargs=dict(method.fusion_kwargs),
                            modality_dropout=modality_dropout, head_dropout=config.get("dropout", 0.0))
    else:
        if method.frames:
            raise ValueError(f"methods: {method.name!r} needs image + spectrogram data (modalities image and audio)")
        model = FusionModel.from_dataset(train, method.fusion, dim=budget.dim, fusion_kwargs=dict(method.fusion_kwargs),
                                         encoder_kwargs={"hidden": budget.encoder_hidden,
                                                         "dropout": encoder_dropout},
                                         modality_dropout=modality_dropout, head_dropout=config.get("dropout", 0.0))
    settings = dataclasses.replace(budget.train, seed=seed, lr=config.get("lr", budget.train.lr),
                                   weight_decay=config.get("weight_decay", budget.train.weight_decay))
    result = fit(model, train, val, config=settings, device=device, progress=False)
    return model, {"best_val": result.best_score, "epochs_run": result.epochs_run, "train_time_s": result.time_s,
                   "config": config, "history": result.history}


def outputs(model: nn.Module, data: MultiModalDataset, device: torch.device) -> dict[str, torch.Tensor]:
    """The model's raw outputs ``{task: Tensor[N, C]}`` on ``data`` (its mask included), by the library's
    :func:`~mmgraph.training.predict`."""
    return predict(model, data, batch_size=512, device=device, logits=True)


def score(model: nn.Module, data: MultiModalDataset, device: torch.device, sentiment: set[str] | None = None) -> float:
    """The model's ``score`` on ``data`` (mean over tasks of each task's primary metric; see
    :mod:`~mmgraph.evaluation.scores`), ``sentiment`` naming the regression tasks scored as sentiment."""
    sentiment = sentiment or set()
    return run_scores(data, task_scores(data, outputs(model, data, device), sentiment), sentiment)["score"]


def inference_rate(model: nn.Module, data: MultiModalDataset, device: torch.device) -> float:
    """Test-set samples per second in eval mode (batches of 512, best of 3 passes)."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        outputs(model, data, device)
        best = min(best, time.perf_counter() - start)
    return len(data) / best


def run_one(source: DataSource, data: MultiModalDataset, method_name: str, split: Split, seed: int, budget: Budget,
            device: torch.device, modality_dropout: float, drop_rates: Sequence[float]) -> dict:
    """Select the configuration on validation, score the test split once, then under test-time drops and
    corruption (when ``source.robustness``)."""
    train_idx, val_idx, test_idx = split
    modalities = list(data.modalities)
    method = resolve_method(method_name, has_sequences(data))
    if method.modality is not None:
        data = only(data, method.modality)
    train, val, test = standardize(data.subset(train_idx), data.subset(val_idx), data.subset(test_idx))
    keys = sorted(budget.grid)
    configs = [dict(zip(keys, values)) for values in itertools.product(*(budget.grid[k] for k in keys))] or [{}]
    best_model, best_info, total_time = None, None, 0.0
    for config in configs:
        model, info = train_once(train, val, method, budget, config, seed, device, modality_dropout)
        total_time += info["train_time_s"]
        if best_info is None or info["best_val"] > best_info["best_val"]:
            best_model, best_info = model, info
    sentiment = set(source.sentiment)

    def score_of(part: MultiModalDataset) -> float:
        return score(best_model, part, device, sentiment)

    per_task = task_scores(test, outputs(best_model, test, device), sentiment)
    record = {
        "dataset": source.name, "method": method_name, "seed": seed, "modality_dropout": modality_dropout,
        "test": per_task, **run_scores(test, per_task, sentiment),
        "val_score": best_info["best_val"], "config": best_info["config"], "epochs_run": best_info["epochs_run"],
        "train_time_s": total_time, "parameters": sum(p.numel() for p in best_model.parameters()),
        "fusion_parameters": sum(p.numel() for p in best_model.fusion.parameters()),
        "inference_samples_per_s": inference_rate(best_model, test, device),
    }
    if source.robustness:
        record["robustness"], record["robustness_bernoulli"] = drop_curves(test, tuple(drop_rates), seed, score_of)
        record["corruption"] = corruption_curves(test, modalities, record["score"], seed, score_of)
    return record


def run_job(job: Job, budget: Budget, device: str, drop_rates: Sequence[float], threads: int | None = None
            ) -> list[dict]:
    """All folds of one job; runs in a worker process or inline."""
    if threads:
        torch.set_num_threads(threads)
    data, published = job.source.load()
    budget = budget_for(data, budget)
    records = []
    for fold, split in enumerate(splits(data, job.seed, job.source.folds, published)):
        record = run_one(job.source, data, job.method, split, job.seed, budget, torch.device(device),
                         job.modality_dropout, drop_rates)
        record["fold"] = fold
        records.append(record)
    return records


def run_jobs(jobs: Sequence[Job], budget: Budget, device: torch.device, drop_rates: Sequence[float], workers: int = 1,
             threads: int | None = None, progress: bool | None = None) -> list[dict]:
    """Every job's records, in job order (then fold). With ``workers > 1`` on CPU the jobs run in that many spawned
    processes (``threads`` torch threads each, default 1); each run is seeded, so the records do not depend on it."""
    from tqdm.auto import tqdm

    results: dict[int, list[dict]] = {}
    bar = tqdm(total=len(jobs), desc="compare", unit="run", dynamic_ncols=True, disable=progress is False)
    if workers > 1 and device.type == "cpu":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_job, job, budget, str(device), drop_rates, threads or 1): i
                       for i, job in enumerate(jobs)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.set_postfix_str(" ".join(map(str, jobs[futures[future]].key)))
                bar.update()
    else:
        for i, job in enumerate(jobs):
            bar.set_postfix_str(" ".join(map(str, job.key)))
            results[i] = run_job(job, budget, str(device), drop_rates, threads)
            bar.update()
    bar.close()
    return [record for i in range(len(jobs)) for record in results[i]]
