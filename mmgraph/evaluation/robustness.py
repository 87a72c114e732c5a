"""Robustness sweeps of a trained model: modalities missing at test time, and one modality corrupted.

Test-time drops are :func:`mmgraph.data.drop_modalities` of the data's own presence mask (the library's one drop
mask): only present modalities are dropped and every sample keeps at least one of them, so data with naturally
missing modalities (MOSI, MOSEI, a user's) run through.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import Tensor

from mmgraph.data import MultiModalDataset, drop_modalities
from mmgraph.metrics import corrupt, corruption_levels, effective_robustness, relative_robustness

__all__ = ["add_robustness_scores", "corruption_curves", "drop_curves"]

Scorer = Callable[[MultiModalDataset], float]


def drop_curves(test: MultiModalDataset, rates: tuple[float, ...], seed: int, score: Scorer
                ) -> tuple[dict[str, float], dict[str, float]]:
    """``(exact, bernoulli)``: ``{rate: score}`` of ``test`` with masks ``drop_modalities(test.mask, rate,
    exact=True)`` (``round(rate * M)`` modalities dropped per sample, never its last present one) and with Bernoulli
    masks ``drop_modalities(test.mask, rate)`` (each present modality dropped with probability ``rate``), each drawn
    from a generator seeded with ``1000 + seed``: the same masks for every method. Rates giving the same masks (few
    modalities) are scored once."""
    seen: dict[bytes, float] = {}

    def score_with(keep: Tensor) -> float:
        key = keep.numpy().tobytes()
        if key not in seen:
            seen[key] = score(test.with_mask(keep))
        return seen[key]

    exact, bernoulli = {}, {}
    for rate in rates:
        for curve, is_exact in ((exact, True), (bernoulli, False)):
            generator = torch.Generator().manual_seed(1000 + seed)
            curve[str(rate)] = score_with(drop_modalities(test.mask, rate, exact=is_exact, generator=generator))
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
