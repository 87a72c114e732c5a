"""Random modality drops: the one implementation behind ``FusionModel(modality_dropout=p)`` (training),
:func:`mmgraph.data.random_modality_mask` (synthetic missingness) and the comparison's test-time drops."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmgraph.utils import describe

__all__ = ["drop_modalities"]


def drop_modalities(present: Tensor, rate: float, exact: bool = False,
                    generator: torch.Generator | None = None) -> Tensor:
    """A random subset of ``present`` (``BoolTensor[N, M]``, True = present) in which every sample keeps at least one
    of its present modalities. ``-> BoolTensor[N, M]`` on ``present``'s device.

    * ``exact=False`` (Bernoulli): each present modality is dropped with probability ``rate``, independently; a
      sample that would lose all of them keeps one of its present modalities, chosen uniformly (so ``rate=1`` keeps
      exactly one).
    * ``exact=True``: each sample drops exactly ``round(rate * M)`` of its modalities (half up), chosen uniformly
      among its present ones, but never its last present one -- "a fraction ``rate`` of the modalities is dropped".

    A sample with no present modality stays empty. Randomness from ``generator`` (a CPU generator is fine for a
    CUDA mask), else from torch's global generator on ``present``'s device.
    """
    if not isinstance(present, Tensor) or present.dtype != torch.bool or present.ndim != 2:
        raise TypeError(f"present: expected a BoolTensor [N, M], got {describe(present)}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: expected a probability in [0, 1], got {rate!r}")
    device = generator.device if generator is not None else present.device

    def uniform() -> Tensor:
        return torch.rand(present.shape, generator=generator, device=device).to(present.device)

    if exact:
        drop = min(int(math.floor(rate * present.shape[1] + 0.5)), present.shape[1] - 1)
        ranks = uniform().masked_fill(~present, 2.0).argsort(1).argsort(1)  # absent modalities rank last
        limit = (present.sum(1, keepdim=True) - 1).clamp(max=drop)  # [N, 1]: never the last present one
        return present & (ranks >= limit)
    keep = present & (uniform() >= rate)  # [N, M]
    scores = uniform().masked_fill(~present, -1.0)
    rescue = torch.nn.functional.one_hot(scores.argmax(1), present.shape[1]).bool()  # [N, M]
    return keep | (rescue & present & ~keep.any(1, keepdim=True))
