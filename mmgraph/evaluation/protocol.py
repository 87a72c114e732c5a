"""Protocol presets of the comparison: the shared training budget, seeds, splits and per-data-set settings.

``quick``: one split (seed 0), 25 epochs (patience 6; image + spectrogram data 5 / 3). ``full``: five seeds, 100
epochs (patience 15; image + spectrogram data 40 / 8), every method with a modality-dropout variant on handwritten.
Splits: a data set published with its split keeps it whatever the seed; nutrimouse (n = 40) runs one repetition of
stratified 5-fold cross-validation per seed; every other data set -- a user's included -- one 80/20 split per seed,
stratified by the first task's classes (plain random for regression), with validation carved as 20 % of the
training part. Configurations and early stopping are chosen on validation only; the test part is scored once per
trained model (then under the robustness sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from mmgraph.data import MultiModalDataset, stratified_split
from mmgraph.evaluation.methods import SEQUENCE_METHODS
from mmgraph.training.config import TrainConfig

__all__ = ["DATASET_PRESETS", "PROTOCOLS", "Budget", "DatasetPreset", "Protocol", "make_protocol", "splits"]

PROTOCOLS = ("quick", "full")
Split = tuple[Tensor, Tensor, Tensor]


@dataclass
class Budget:
    """The optimisation budget every method gets.

    Attributes:
        train: the training settings (:class:`~mmgraph.training.TrainConfig`: optimiser, lr, weight decay, batch
            size, label smoothing, epochs, patience; its ``seed`` is replaced by each run's); its weight decay and
            ``encoder_dropout`` were chosen on validation by ``benchmarks/tune_budget.py``.
        dim: width of every encoder's output and of the fused representation.
        encoder_dropout: dropout of every encoder. encoder_hidden: hidden width of each vector modality's MLP encoder.
        grid: ``{name: candidate values}`` (``lr``, ``weight_decay``, ``encoder_dropout``, head ``dropout``),
            selected per method and split on the validation score.
        image_audio: ``(epochs, patience)`` on image + spectrogram data (CNNs: costlier epochs).
    """

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, patience=10))
    dim: int = 64
    encoder_dropout: float = 0.4
    encoder_hidden: int = 256
    grid: dict = field(default_factory=dict)
    image_audio: tuple[int, int] = (5, 3)


@dataclass(frozen=True)
class DatasetPreset:
    """How the protocol treats one registered data set (a user's gets the defaults).

    Attributes:
        methods: default methods (None: :func:`~mmgraph.evaluation.methods.default_methods`' rule);
        folds: > 0 for repeated stratified k-fold cross-validation instead of one 80/20 split;
        robustness: run the missing-modality and corruption sweeps;
        dropout_variant: the GNN also trains with modality dropout; quick_samples: data set size under ``quick``.
    """

    methods: tuple[str, ...] | None = None
    folds: int = 0
    robustness: bool = True
    dropout_variant: bool = True
    quick_samples: int | None = None


DATASET_PRESETS = {
    "nutrimouse": DatasetPreset(folds=5),
    "synthetic-temporal": DatasetPreset(methods=SEQUENCE_METHODS, robustness=False, dropout_variant=False,
                                        quick_samples=1000),
}


@dataclass(frozen=True)
class Protocol:
    """One protocol preset: ``name`` (quick | full), ``seeds``, the ``budget``, the benchmark's default data sets,
    the test-time drop rates and the rate of the modality-dropout training variant."""

    name: str
    seeds: tuple[int, ...]
    budget: Budget
    datasets: tuple[str, ...]
    drop_rates: tuple[float, ...] = (0.0, 0.2, 0.4, 0.5, 0.6, 0.8)
    modality_dropout: float = 0.5

    @property
    def full(self) -> bool:
        return self.name == "full"

    def preset(self, dataset: str) -> DatasetPreset:
        return DATASET_PRESETS.get(dataset, DatasetPreset())

    def trains_with_modality_dropout(self, dataset: str, method: str) -> bool:
        """Which runs get the second variant trained with modality dropout: in ``full`` every method on
        handwritten (the robustness comparison, same protocol for all) and the GNN elsewhere; in ``quick`` the GNN
        only; never where the data set's preset says so."""
        if not self.preset(dataset).dropout_variant:
            return False
        return method == "gnn" or (self.full and dataset == "handwritten")


def make_protocol(name: str = "quick", seeds: list[int] | None = None, epochs: int | None = None,
                  grid: bool = False, modality_dropout: float = 0.5) -> Protocol:
    """The ``quick`` or ``full`` preset; ``epochs`` overrides every epoch budget, ``grid`` adds head dropout in
    {0, 0.3} selected per method and split on validation."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {name!r}")
    full = name == "full"
    budget = Budget(TrainConfig(epochs=epochs or (100 if full else 25), patience=15 if full else 6),
                    image_audio=(epochs or (40 if full else 5), 8 if full else 3))
    if grid:
        budget = replace(budget, grid={"dropout": [0.0, 0.3]})
    datasets = (("handwritten", "nutrimouse", "synthetic-interaction", "synthetic-temporal", "av-digits") if full
                else ("handwritten", "synthetic-interaction", "synthetic-temporal", "av-digits"))
    return Protocol(name, tuple(seeds if seeds is not None else ([0, 1, 2, 3, 4] if full else [0])), budget,
                    datasets, modality_dropout=modality_dropout)


def splits(data: MultiModalDataset, seed: int, folds: int = 0, published: Split | None = None) -> list[Split]:
    """``(train, val, test)`` index triples of one seed: ``published`` when given; ``folds``-fold stratified
    cross-validation (validation = 20 % of each training part) when ``folds > 0``; else one 80/20 split with
    validation = 20 % of the training part (stratified for classification, plain random for regression)."""
    if published is not None:
        return [published]
    if not folds:
        return [stratified_split(data, test_size=0.2, val_size=0.2, seed=seed)]
    from sklearn.model_selection import StratifiedKFold

    labels = data.labels().numpy()
    parts = []
    for k, (train_val, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(labels,
                                                                                                       labels)):
        inner, val, _ = stratified_split(labels[train_val], test_size=0.0, val_size=0.2, seed=seed * 10 + k)
        train_val = torch.as_tensor(train_val)
        parts.append((train_val[inner], train_val[val], torch.as_tensor(test)))
    return parts
