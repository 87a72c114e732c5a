"""Cross-modal attention: a small transformer encoder over the modality tokens."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmgraph.fusion.base import FusionBase, masked_mean, register_fusion


@register_fusion("cross_attention")
class CrossAttentionFusion(FusionBase):
    """Multi-head self-attention across modality tokens (every modality attends to every other), then pooling.

    .. math:: X^{(0)} = [m_1 + e_1; \\dots; m_M + e_M], \\quad X^{(l+1)} = \\mathrm{TransformerLayer}(X^{(l)}),
              \\quad \\mathrm{fused} = W \\cdot \\frac{1}{|P|}\\sum_{i \\in P} \\mathrm{LN}(X^{(L)})_i + b

    with learned modality-type embeddings ``e_i`` (the tokens carry no order otherwise) and pre-norm transformer
    layers (Vaswani et al., NeurIPS 2017) applied across modalities, as in cross-modal transformers for multimodal
    fusion (Tsai et al., "Multimodal Transformer for unaligned multimodal language sequences", ACL 2019).

    Shapes: ``nodes [B, M, D]`` -> tokens ``[B, M, D]`` -> pooled ``[B, D]`` -> ``[B, out_dim]``.

    Mask: missing modalities are a ``key_padding_mask``: no token attends to them, and they are left out of the
    masked mean, so their features cannot change the output.

    Args:
        layers: transformer layers.
        heads: attention heads (``dim % heads == 0``).
        ff_mult: feed-forward width is ``ff_mult * dim``.
        dropout: dropout inside the transformer layers.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, layers: int = 1, heads: int = 4,
                 ff_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        for arg, value in (("layers", layers), ("heads", heads), ("ff_mult", ff_mult)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected a positive int, got {value!r}")
        if dim % heads:
            raise ValueError(f"heads: dim must be divisible by heads; got dim={dim}, heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.layers, self.heads, self.ff_mult, self.dropout = layers, heads, ff_mult, dropout
        self.type_embedding = nn.Parameter(torch.empty(num_modalities, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff_mult * dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.proj = nn.Linear(dim, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.normal_(self.type_embedding, std=0.02)
        for layer in self.encoder.layers:
            layer.self_attn._reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layers={self.layers}, heads={self.heads}, ff_mult={self.ff_mult}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        tokens = nodes + self.type_embedding  # [B, M, D]
        tokens = self.encoder(tokens, src_key_padding_mask=~mask)  # [B, M, D]
        return self.proj(masked_mean(tokens, mask))
