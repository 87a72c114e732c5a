"""Robustness sweeps of a trained model: modalities missing at test time, and one modality corrupted.

Test-time drops never leave a sample without a modality: the drop mask is and-ed with the data's own presence mask,
and a sample left with none (a modality it lacked anyway, the others dropped) keeps one of its present modalities,
chosen at random (seeded) -- so data with naturally missing modalities (MOSI, MOSEI, a user's) run through.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch
from torch import Tensor

from mmgraph.data import MultiModalDataset, random_modality_mask
from mmgraph.metrics import corrupt, corruption_levels, effective_robustness, relative_robustness

__all__ = ["add_robustness_scores", "corruption_curves", "drop_curves", "drop_fraction", "keep_one_present"]

Scorer = Callable[[MultiModalDataset], float]


def drop_fraction(n: int, num_modalities: int, rate: float, seed: int) -> Tensor:
    """Presence mask ``BoolTensor[n, M]`` with exactly ``round(rate * M)`` modalities dropped per sample (at most
    ``M - 1``: never all), chosen uniformly at random: "a fraction p of the modalities is dropped"."""
    drop = min(int(math.floor(rate * num_modalities + 0.5)), num_modalities - 1)
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.rand(n, num_modalities, generator=generator).argsort(1).argsort(1)  # random rank per modality
    return ranks >= drop


def keep_one_present(keep: Tensor, present: Tensor, seed: int) -> Tensor:
    """``keep & present`` (both ``BoolTensor[N, M]``), where a sample left with no modality keeps one of its
    ``present`` ones, drawn at random with ``seed``. ``present`` must have a True in every row."""
    kept = keep & present
    empty = ~kept.any(1)
    if bool(empty.any()):
        draw = torch.rand(present.shape, generator=torch.Generator().manual_seed(seed)).masked_fill(~present, -1.0)
        kept[empty, draw[empty].argmax(1)] = True
    return kept


def drop_curves(test: MultiModalDataset, rates: tuple[float, ...], seed: int, score: Scorer
                ) -> tuple[dict[str, float], dict[str, float]]:
    """``(exact, bernoulli)``: ``{rate: score}`` with :func:`drop_fraction` masks and with Bernoulli(rate) masks
    (:func:`~mmgraph.data.random_modality_mask`), each and-ed with ``test``'s own mask by :func:`keep_one_present`.
    Rates giving the same masks (few modalities) are scored once."""
    n, num_modalities = test.mask.shape
    seen: dict[bytes, float] = {}

    def score_with(keep: Tensor) -> float:
        keep = keep_one_present(keep, test.mask, seed=3000 + seed)
        key = keep.numpy().tobytes()
        if key not in seen:
            seen[key] = score(test.with_mask(keep))
        return seen[key]

    exact, bernoulli = {}, {}
    for rate in rates:
        exact[str(rate)] = score_with(drop_fraction(n, num_modalities, rate, seed=1000 + seed))
        bernoulli[str(rate)] = score_with(random_modality_mask(n, num_modalities, rate, seed=1000 + seed))
    return exact, bernoulli


def corruption_curves(test: MultiModalDataset, modalities: list[str], clean: float, seed: int, score: Scorer
                      ) -> dict[str, dict[str, float]]:
    """MultiBench's protocol: the score with one modality corrupted at each of 11 levels (Gaussian noise on z-scored
    features and images, steps masked on sequences), the others clean: ``{modality: {level: score}}``. A modality
    the model does not read (a unimodal baseline) leaves its score at the clean value; token and text modalities
    get no curve."""
    curves: dict[str, dict[str, float]] = {}
    for position, name in enumerate(modalities):
        if name in test.modalities and not test.features[name].is_floating_point():
            continue  # token ids and text (code points): the protocol's noise is defined on features, not symbols
        curves[name] = {"0.0": clean}
        for level in corruption_levels()[1:]:
            if name not in test.modalities:
                curves[name][str(level)] = clean
                continue
            sequence = test.step_mask is not None and name in test.step_mask
            noisy = corrupt(test.features[name], level, sequence, seed=2000 + 100 * seed + position)
            curves[name][str(level)] = score(test.with_features({name: noisy}))
    return curves


def add_robustness_scores(rows: dict, late: dict | None) -> None:
    """MultiBench's relative robustness (area under each corrupted modality's mean score curve) and effective
    robustness (area between that curve and late fusion's, shifted to the same clean score; late fusion trained
    without modality dropout is the reference), per modality and their mean over modalities, added to ``rows``."""
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
