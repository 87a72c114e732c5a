"""Simple fusions: concatenation (early), late (per-modality predictors), sum, product, attention-weighted sum."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from mmgraph.fusion.base import (FusionBase, ModalityLinear, masked_mean, masked_softmax, neutral_where_masked,
                                 register_fusion)


def _mlp(widths: list[int], dropout: float = 0.0, linear: Callable[[int, int], nn.Module] = nn.Linear
         ) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout -> ... -> Linear`` through ``widths``; no activation after the last layer."""
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers += [nn.ReLU(), nn.Dropout(dropout)] if dropout else [nn.ReLU()]
        layers.append(linear(width_in, width_out))
    return nn.Sequential(*layers)


def _check_mlp_args(hidden_layers: int, hidden: int | None, dropout: float) -> None:
    if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, int) or hidden_layers < 0:
        raise ValueError(f"hidden_layers: expected an int >= 0, got {hidden_layers!r}")
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
        raise ValueError(f"hidden: expected a positive int or None, got {hidden!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")


@register_fusion("concat")
class ConcatFusion(FusionBase):
    """Early fusion: concatenate every modality, then an MLP.

    .. math:: \\mathrm{fused} = \\mathrm{MLP}([\\tilde m_1; \\dots; \\tilde m_M; \\mu]),
              \\quad \\tilde m_i = \\mu_i m_i

    where ``μ ∈ {0, 1}^M`` is the presence mask. Early fusion is the classic baseline (e.g. Snoek et al., "Early
    versus late fusion in semantic video analysis", ACM MM 2005).

    Shapes: ``nodes [B, M, D]`` -> input ``[B, M*D + M]`` -> ``[B, out_dim]``.

    Mask: a missing modality is zero-filled *and* flagged by its mask bit ``μ_i`` in the input, so the MLP can tell
    "missing" from "present with value 0"; its features never reach the output.

    Args:
        hidden: width of the hidden layers (default ``dim``).
        hidden_layers: number of hidden layers; 0 makes the fusion a single linear map (an additive model of the
            modalities, which cannot represent interactions between them).
        dropout: dropout after each hidden activation.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, hidden: int | None = None,
                 hidden_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_mlp_args(hidden_layers, hidden, dropout)
        self.hidden, self.hidden_layers, self.dropout = hidden or dim, hidden_layers, dropout
        widths = [num_modalities * (dim + 1)] + [self.hidden] * hidden_layers + [self.out_dim]
        self.mlp = _mlp(widths, dropout)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}, hidden_layers={self.hidden_layers}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        flat = torch.cat([nodes.flatten(1), mask.to(nodes.dtype)], dim=1)  # [B, M*D + M]
        return self.mlp(flat)


@register_fusion("late")
class LateFusion(FusionBase):
    """Late fusion: one predictor per modality, combined by the mean over the present modalities.

    .. math:: \\mathrm{fused} = \\frac{1}{|P|} \\sum_{i \\in P} f_i(m_i), \\quad f_i = \\mathrm{MLP}_i: R^D \\to
              R^{out\\_dim}

    with ``P`` the present modalities (Snoek et al., ACM MM 2005; the per-modality "expert" averaging of ensemble
    late fusion). The ``M`` MLPs run as one batched ``einsum`` with weights ``[M, in, out]``.

    Why this is averaging logits: the fused vector goes to a *linear* head ``W, b``; since the weights ``1/|P|`` sum
    to one, ``W (1/|P| Σ f_i) + b = 1/|P| Σ (W f_i + b)`` -- the mean of the per-modality logits of the classifiers
    ``W f_i + b``. So averaging here, before the shared linear head, is exactly late fusion of logits.

    Shapes: ``nodes [B, M, D]`` -> per-modality outputs ``[B, M, out_dim]`` -> ``[B, out_dim]``.

    Mask: missing modalities are left out of the mean (weight 0, the others renormalised).

    Args:
        hidden: width of each predictor's hidden layers (default ``dim``).
        hidden_layers: hidden layers per predictor (0 = one linear map per modality).
        dropout: dropout after each hidden activation.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, hidden: int | None = None,
                 hidden_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_mlp_args(hidden_layers, hidden, dropout)
        self.hidden, self.hidden_layers, self.dropout = hidden or dim, hidden_layers, dropout
        widths = [dim] + [self.hidden] * hidden_layers + [self.out_dim]
        self.predictors = _mlp(widths, dropout, linear=partial(ModalityLinear, num_modalities))
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}, hidden_layers={self.hidden_layers}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        predictions = self.predictors(nodes)  # [B, M, out_dim]
        return masked_mean(predictions, mask)


@register_fusion("sum")
class SumFusion(FusionBase):
    """Per-modality fully connected layer, then the sum over present modalities (the "multi-modal neural network").

    .. math:: \\mathrm{fused} = \\sum_{i \\in P} (W_i m_i + b_i)

    A modality-specific layer maps each modality into a shared space where the modalities are added (the joint
    layer of multimodal deep networks, Ngiam et al., "Multimodal deep learning", ICML 2011). Computed as one
    batched ``einsum`` with ``W [M, D, out_dim]``.

    Shapes: ``nodes [B, M, D]`` -> ``[B, M, out_dim]`` -> ``[B, out_dim]``.

    Mask: missing modalities are left out of the sum (bias included), i.e. they contribute 0.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__(num_modalities, dim, out_dim)
        self.proj = ModalityLinear(num_modalities, dim, self.out_dim)
        self.reset_parameters()

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        projected = self.proj(nodes)  # [B, M, out_dim]
        return (projected * mask.unsqueeze(-1).to(projected.dtype)).sum(1)


@register_fusion("product")
class ProductFusion(FusionBase):
    """Element-wise (Hadamard) product of per-modality projections.

    .. math:: \\mathrm{fused} = \\prod_{i \\in P} (W_i m_i + b_i)

    the multiplicative fusion of e.g. gated/Hadamard multimodal models (Kim et al., "Hadamard product for low-rank
    bilinear pooling", ICLR 2017, with the projections but without the outer non-linearities). The biases start at
    1 so that at initialisation every factor is close to 1 and the product of many modalities neither vanishes
    nor explodes; the product then starts as ``1 + Σ_i W_i m_i + (interactions)``.

    Shapes: ``nodes [B, M, D]`` -> ``[B, M, out_dim]`` -> ``[B, out_dim]``.

    Mask: a missing modality contributes the neutral element 1, so the output is the product of the present ones.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__(num_modalities, dim, out_dim)
        self.proj = ModalityLinear(num_modalities, dim, self.out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()
        nn.init.ones_(self.proj.bias)

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        factors = neutral_where_masked(self.proj(nodes), mask)  # [B, M, out_dim]
        return factors.prod(1)


@register_fusion("attention")
class AttentionFusion(FusionBase):
    """Attention-weighted sum of the modalities, with a learned scorer.

    .. math:: s_i = v^\\top \\tanh(W m_i + b), \\quad \\alpha = \\mathrm{softmax}_{i \\in P}(s), \\quad
              \\mathrm{fused} = P_{out}\\Big(\\sum_i \\alpha_i m_i\\Big)

    additive attention (Bahdanau et al., ICLR 2015) over modalities as in attention-based multimodal fusion (e.g.
    Hori et al., "Attention-based multimodal fusion for video description", ICCV 2017). ``P_out`` is the identity
    when ``out_dim == dim``, else a linear map. The weights of the last forward are kept in ``last_weights``
    (``[B, M]``, detached) for inspection.

    Shapes: ``nodes [B, M, D]`` -> scores ``[B, M]`` -> ``[B, D]`` -> ``[B, out_dim]``.

    Mask: masked modalities get score ``-inf`` before the softmax, so their weight is exactly 0 and the weights of
    the present ones sum to 1.

    Args:
        hidden: width of the scorer (default ``dim``).
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, hidden: int | None = None
                 ) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_mlp_args(0, hidden, 0.0)
        self.hidden = hidden or dim
        self.scorer = nn.Sequential(nn.Linear(dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, 1, bias=False))
        self.proj = nn.Identity() if self.out_dim == dim else nn.Linear(dim, self.out_dim)
        self.last_weights: Tensor | None = None
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        scores = self.scorer(nodes).squeeze(-1)  # [B, M]
        weights = masked_softmax(scores, mask, dim=1)  # [B, M]
        self.last_weights = weights.detach()
        return self.proj(torch.einsum("bm,bmd->bd", weights, nodes))
