"""Preprocessing inside the model: :class:`Standardize` (z-scoring with the statistics kept as buffers, so raw
features go in at train and predict time) and the check that an input has the shape its statistics were taken on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from mmgraph.utils import tracing

__all__ = ["Standardize"]


class Standardize(nn.Module):
    """``(x - mean) / std`` with the statistics as buffers (saved and moved with the model).

    Shapes: ``mean``, ``std`` broadcast against ``x: [B, ...]`` (``[1, F]``, ``[1, 1, F]``, ``[1, C, 1, 1]``).
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if not isinstance(mean, Tensor) or not isinstance(std, Tensor) or mean.shape != std.shape:
            raise ValueError(f"input_stats: expected (mean, std) tensors of one shape, got {_describe(mean)} and "
                             f"{_describe(std)}")
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}"


def _check_standardized_shape(name: str, x: Tensor, mean: Tensor) -> None:
    """``inputs[name]`` must have the per-sample shape the standardisation statistics were taken on (``mean``:
    ``[1, F]``, ``[1, 1, F]``, ``[1, C, 1, 1]``; a 1 there matches any size), or broadcasting would fail inside
    the model, or silently succeed on a wrong layout."""
    if tracing():
        return
    _check_input_shape(name, x, [None if m == 1 else m for m in mean.shape[1:]])


def _check_input_shape(name: str, x: Tensor, shape: Sequence[int | None]) -> None:
    """``inputs[name]: [B, *shape]`` (None in ``shape`` = any size), whatever the rank of ``x``."""
    if x.dim() != len(shape) + 1 or any(s is not None and s != n for s, n in zip(shape, x.shape[1:])):
        expected = ", ".join(["B", *("*" if s is None else str(s) for s in shape)])
        raise ValueError(f"inputs[{name!r}]: expected shape [{expected}] (the shape the model was trained on), got "
                         f"{tuple(x.shape)}")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]
