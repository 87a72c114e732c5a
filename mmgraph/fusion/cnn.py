"""Convolutional fusion: 1-D convolutions and masked pooling over the stacked modality embeddings."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmgraph.fusion.base import FusionBase, modality_steps, register_fusion

_POOLS = ("max", "mean")


@register_fusion("cnn")
class CNNFusion(FusionBase):
    """Convolution + pooling over the modality axis (or the time axis of sequences), then a linear map.

    .. math:: X^{(0)}_s = x_s, \\quad X^{(l)} = \\mathrm{ReLU}(\\mathrm{Conv1d}_l(\\mu \\odot X^{(l-1)})), \\quad
              \\mathrm{fused} = W \\, \\mathrm{pool}_{s \\in P} X^{(L)}_s + b

    The stacked embeddings are treated as a 1-D signal and fused by convolution + max-over-positions pooling, the
    text CNN of Kim ("Convolutional neural networks for sentence classification", EMNLP 2014) applied to modality
    positions. Positions ``s`` and inputs ``x_s ∈ R^{M·D}`` come from :func:`~mmgraph.fusion.base.modality_steps`:

    * ``nodes [B, M, D]``: the ``M`` modalities are the positions and the ``D`` features the channels. Position
      ``i`` enters through modality ``i``'s own slot of the ``M·D`` input channels, so the first layer's kernels are
      modality-specific (the modality order is arbitrary, so sharing one kernel across modalities would be an odd
      prior) while later layers are ordinary shared-weight convolutions over positions;
    * ``nodes [B, M, T, D]``: the ``M·D`` concatenated features are the channels over ``T`` time steps.

    One layout for both inputs means one set of weights, all of them used by either input.

    Shapes: ``[B, M, D]`` -> ``[B, M·D, M]`` (or ``[B, M, T, D]`` -> ``[B, M·D, T]``) -> ``[B, C, S]`` ->
    pooled ``[B, C]`` -> ``[B, out_dim]``.

    Mask: masked entries are zero; positions with nothing present (a missing modality; an all-missing time step)
    are zeroed again before every convolution, so padding and missing positions look alike to the kernels, and
    are excluded from the pooling (``-inf`` before max; left out of the mean's count), so a missing position
    cannot win the max with a ReLU output of 0 or dilute the mean.

    Args:
        channels: ``C``, channels of every convolution (default ``dim``).
        layers: number of convolutions.
        kernel_size: odd kernel width ("same" padding).
        pool: ``"max"`` or ``"mean"`` over present positions.
        dropout: dropout after each convolution's activation.
    """

    supports_sequences = True

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, channels: int | None = None,
                 layers: int = 2, kernel_size: int = 3, pool: str = "max", dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        channels = channels or dim
        for arg, value in (("channels", channels), ("layers", layers), ("kernel_size", kernel_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected a positive int, got {value!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int (for 'same' padding), got {kernel_size}")
        if pool not in _POOLS:
            raise ValueError(f"pool: expected one of {list(_POOLS)}, got {pool!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.channels, self.layers, self.kernel_size, self.pool, self.dropout = (
            channels, layers, kernel_size, pool, dropout)
        widths = [num_modalities * dim] + [channels] * layers
        self.convs = nn.ModuleList(nn.Conv1d(width_in, width_out, kernel_size, padding=kernel_size // 2)
                                   for width_in, width_out in zip(widths[:-1], widths[1:]))
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(channels, self.out_dim)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, channels={self.channels}, layers={self.layers}, "
                f"kernel_size={self.kernel_size}, pool={self.pool!r}")

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        steps, step_mask = modality_steps(nodes, mask)  # [B, S, M*D], [B, S]
        present = step_mask.unsqueeze(1)  # [B, 1, S]
        x = steps.transpose(1, 2)  # [B, M*D, S]
        for conv in self.convs:
            x = self.drop(F.relu(conv(x.masked_fill(~present, 0.0))))  # [B, C, S]
        if self.pool == "max":
            pooled = x.masked_fill(~present, float("-inf")).amax(-1)  # [B, C]
        else:
            pooled = x.masked_fill(~present, 0.0).sum(-1) / present.sum(-1).clamp(min=1)
        return self.proj(pooled)
