"""Temporal convolutions over frames: :class:`Conv1dEncoder` (``conv1d``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmgraph.encoders.base import _check_dropout, _check_step_mask, _reset_children, register_encoder, segment_mean
from mmgraph.utils import check_int as _check_int

__all__ = ["Conv1dEncoder"]


@register_encoder("conv1d")
class Conv1dEncoder(nn.Module):
    """1-D convolutions over time (``same`` padding, ReLU), then masked pooling over the real steps.

    Shapes: ``x: [B, T, in_dim]``, ``step_mask: BoolTensor[B, T] | None`` (True = real step, any positions) ->
    ``[B, out_dim]`` (pooled), or ``[B, T, out_dim]`` with ``return_sequence=True`` (zero at padded steps), or with
    ``segments=K`` the pair ``([B, K, out_dim], None)``: the per-step outputs averaged over ``K`` equal spans of each
    sample's real duration (:func:`~mmgraph.encoders.base.segment_mean`), a fixed number of temporal nodes whatever
    the lengths (None: every segment is real).
    Padded steps are zeroed before every convolution and excluded from the pooling, so a padded sequence whose
    real steps come first encodes exactly like the unpadded one.

    Args:
        out_dim: embedding width. in_dim: ``F``. channels: conv width (default ``out_dim``). kernel_size: odd.
        layers: number of conv layers. pool: ``"max"`` (detects events wherever they are) or ``"mean"``.
        dropout: before the output projection. return_sequence: per-step outputs instead of pooling.
        segments: ``K`` time segments instead of pooling (ragged sequences as temporal nodes).
    """

    def __init__(self, out_dim: int, in_dim: int, channels: int | None = None, kernel_size: int = 3,
                 layers: int = 2, pool: str = "max", dropout: float = 0.0, return_sequence: bool = False,
                 segments: int | None = None) -> None:
        super().__init__()
        _check_int("out_dim", out_dim, 1)
        _check_int("in_dim", in_dim, 1)
        channels = out_dim if channels is None else channels
        _check_int("channels", channels, 1)
        _check_int("layers", layers, 1)
        _check_int("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int (same-length output), got {kernel_size}")
        if pool not in ("max", "mean"):
            raise ValueError(f"pool: expected 'max' or 'mean', got {pool!r}")
        _check_dropout(dropout)
        if segments is not None:
            _check_int("segments", segments, 1)
            if return_sequence:
                raise ValueError("return_sequence, segments: give at most one (per-step outputs or K segments)")
        self.segments = segments
        self.in_dim, self.out_dim, self.channels, self.kernel_size = in_dim, out_dim, channels, kernel_size
        self.layers, self.pool, self.return_sequence = layers, pool, bool(return_sequence)
        self.convs = nn.ModuleList(
            nn.Conv1d(in_dim if i == 0 else channels, channels, kernel_size, padding=kernel_size // 2)
            for i in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(channels, out_dim)

    def reset_parameters(self) -> None:
        _reset_children(self)

    def forward(self, x: Tensor, step_mask: Tensor | None = None) -> Tensor | tuple[Tensor, None]:
        """``x: [B, T, in_dim] -> [B, out_dim]``, ``[B, T, out_dim]`` or ``([B, K, out_dim], None)``."""
        if x.ndim != 3 or not x.is_floating_point() or x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected frames FloatTensor[B, T, {self.in_dim}], got {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        batch, num_steps = x.shape[:2]
        if step_mask is None:
            step_mask = torch.ones(batch, num_steps, dtype=torch.bool, device=x.device)
        else:
            _check_step_mask(step_mask, batch, num_steps, prefix=False)
        real = step_mask.unsqueeze(1)  # [B, 1, T]
        hidden = x.transpose(1, 2)  # [B, F, T]
        for conv in self.convs:
            # zero the padded steps before every layer, so padding acts exactly like the convolution's zero border
            hidden = torch.relu(conv(hidden * real))  # [B, channels, T]
        hidden = hidden.transpose(1, 2)  # [B, T, channels]
        real = step_mask.unsqueeze(-1)  # [B, T, 1]
        if self.return_sequence:
            return self.proj(self.dropout(hidden)) * real  # [B, T, D]
        if self.segments is not None:
            return self.proj(self.dropout(segment_mean(hidden, step_mask, self.segments))), None  # [B, K, D]
        if self.pool == "max":
            pooled = hidden.masked_fill(~real, float("-inf")).amax(dim=1)  # [B, channels]
            pooled = pooled.masked_fill(~real.any(dim=1), 0.0)
        else:
            pooled = (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1)
        return self.proj(self.dropout(pooled))

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, out_dim={self.out_dim}, channels={self.channels}, "
                f"kernel_size={self.kernel_size}, layers={self.layers}, pool={self.pool!r}, "
                f"return_sequence={self.return_sequence}, segments={self.segments}")
