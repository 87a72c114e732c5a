"""Audio as temporal nodes: :class:`SpectrogramFramesEncoder` (``spectrogram_frames``) and :class:`RepeatSteps`
(a static modality repeated beside sequence nodes)."""

from __future__ import annotations

from torch import Tensor, nn

from mmgraph.encoders.base import register_encoder
from mmgraph.encoders.mlp import MLPEncoder
from mmgraph.utils import check_int as _check_int

__all__ = ["RepeatSteps", "SpectrogramFramesEncoder"]


@register_encoder("spectrogram_frames")
class SpectrogramFramesEncoder(nn.Module):
    """A spectrogram as a frame sequence (temporal nodes for the GNN): ``[B, 1, F, T]`` (rows = frequency, columns
    = time) averaged over time into ``frames`` frames, each encoded by an :class:`MLPEncoder`.

    Shapes: ``x: [B, C, F, T] -> [B, frames, out_dim]`` (channels are stacked with frequencies: ``C * F`` inputs).

    Args:
        out_dim: embedding width. frequencies: ``C * F``. frames: number of output steps. dropout: of the MLP.
    """

    def __init__(self, out_dim: int, frequencies: int, frames: int = 14, dropout: float = 0.0) -> None:
        super().__init__()
        _check_int("frames", frames, 1)
        self.frames = frames
        self.mlp = MLPEncoder(out_dim, in_dim=frequencies, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, C, F, T] -> [B, frames, out_dim]``."""
        if not x.is_floating_point() or x.ndim != 4 or x.shape[1] * x.shape[2] != self.mlp.in_dim:
            raise ValueError(f"x: expected a float spectrogram batch [B, C, F, T] with C * F = {self.mlp.in_dim}, "
                             f"got {x.dtype} of shape {tuple(x.shape)}")
        frames = nn.functional.adaptive_avg_pool1d(x.flatten(1, 2), self.frames)  # [B, C*F, frames]
        return self.mlp(frames.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"frames={self.frames}"


class RepeatSteps(nn.Module):
    """A static modality beside sequence nodes: its encoder's embedding ``[B, D]`` repeated as ``[B, steps, D]``."""

    def __init__(self, encoder: nn.Module, steps: int) -> None:
        super().__init__()
        _check_int("steps", steps, 1)
        self.encoder, self.steps = encoder, steps

    def forward(self, x: Tensor) -> Tensor:
        """``x -> [B, steps, D]``."""
        return self.encoder(x).unsqueeze(1).expand(-1, self.steps, -1)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"
