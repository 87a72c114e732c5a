"""Multiplicative (bilinear and higher-order) fusions: TFN, LMF, MFB, MFH.

All four model interactions *between* modalities with products of modality features, which additive fusions
(concat with a linear path, sum) cannot express.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgraph.fusion.base import FusionBase, ModalityLinear, neutral_where_masked, register_fusion


def _check_positive(**values: int) -> None:
    for arg, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}: expected a positive int, got {value!r}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")


def _power_l2_normalise(z: Tensor, eps: float = 1e-6) -> Tensor:
    """Signed square root then L2 normalisation over the last dim (the MFB/MFH output normalisation).

    ``z / sqrt(|z| + eps)`` is ``sign(z) sqrt(|z|)`` up to ``eps`` but has a finite gradient at 0.
    """
    z = z * torch.rsqrt(z.abs() + eps)
    return F.normalize(z, dim=-1)


@register_fusion("tfn")
class TensorFusion(FusionBase):
    """Tensor fusion (Zadeh et al., "Tensor Fusion Network for multimodal sentiment analysis", EMNLP 2017).

    .. math:: z_i = W_i m_i + b_i \\in R^r, \\quad
              Z = \\begin{bmatrix} z_1 \\\\ 1 \\end{bmatrix} \\otimes \\dots \\otimes
                  \\begin{bmatrix} z_M \\\\ 1 \\end{bmatrix} \\in R^{(r+1)^M}, \\quad
              \\mathrm{fused} = V \\mathrm{vec}(Z) + c

    The appended 1 keeps every lower-order term: ``Z`` holds the unimodal features, all pairwise products, ...,
    up to the ``M``-way product. ``Z`` has ``(r+1)^M`` entries, which grows exponentially with the number of
    modalities, so each modality is first projected to a small ``r = proj_dim`` (the paper fuses 3 modalities of
    ~32 dims; with 6 modalities, ``r = 3`` already gives 4096 entries). A linear map ``V`` replaces the paper's
    post-fusion MLP, so the whole module is a polynomial of degree ``M`` in the inputs.

    Shapes: ``nodes [B, M, D]`` -> ``z [B, M, r + 1]`` -> ``vec(Z) [B, (r+1)^M]`` -> ``[B, out_dim]``.

    Mask: a missing modality contributes ``[0; 1]`` (its projection, bias included, is zero-filled; the constant 1
    stays), so only the terms that do not involve it survive.

    Args:
        proj_dim: ``r``, the width each modality is projected to before the outer product.
        max_size: largest allowed ``(r+1)^M``; lower ``proj_dim`` (or use ``lmf``) beyond it.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, proj_dim: int = 3,
                 max_size: int = 2 ** 20) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_positive(proj_dim=proj_dim)
        size = (proj_dim + 1) ** num_modalities
        if size > max_size:
            raise ValueError(f"proj_dim: the fusion tensor would have (proj_dim + 1)^M = {proj_dim + 1}^"
                             f"{num_modalities} = {size} entries, more than max_size={max_size}; lower proj_dim "
                             "or use the low-rank 'lmf'")
        self.proj_dim, self.tensor_size = proj_dim, size
        self.proj = ModalityLinear(num_modalities, dim, proj_dim)
        self.out = nn.Linear(size, self.out_dim)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, proj_dim={self.proj_dim}, tensor_size={self.tensor_size}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        z = self.proj(nodes) * mask.unsqueeze(-1).to(nodes.dtype)  # [B, M, r]
        z = torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)  # [B, M, r + 1]
        # The outer product is sequential in the modalities: after step i it is [B, (r+1)^(i+1)].
        tensor = z[:, 0]
        for i in range(1, self.num_modalities):
            tensor = (tensor.unsqueeze(-1) * z[:, i].unsqueeze(1)).flatten(1)
        return self.out(tensor)


@register_fusion("lmf")
class LowRankFusion(FusionBase):
    """Low-rank multimodal fusion (Liu et al., "Efficient low-rank multimodal fusion with modality-specific
    factors", ACL 2018).

    The TFN weight tensor ``W`` acting on ``Z = ⊗_i [m_i; 1]`` is factorised as ``W = Σ_k ⊗_i W_i^{(k)}``, so
    ``W · Z`` is computed without ever forming ``Z``:

    .. math:: \\mathrm{fused} = \\sum_{k=1}^{R} w_k \\prod_{i=1}^{M} \\Big(W_i^{(k)}
              \\begin{bmatrix} m_i \\\\ 1 \\end{bmatrix}\\Big) + b

    with modality-specific factors ``W_i^{(k)} ∈ R^{out × (D+1)}`` and the paper's rank weights ``w`` and bias
    ``b``. Cost is linear in ``M`` (``M R (D+1) out`` parameters), instead of TFN's exponential.

    Shapes: ``nodes [B, M, D]`` -> factors ``[B, M, R, out_dim]`` -> product ``[B, R, out_dim]`` ->
    ``[B, out_dim]``.

    Mask: a missing modality contributes the neutral element: its factor is 1, so the product runs over the present
    modalities only. (Zero-padding, ``[0; 1]`` as in TFN, would make its factor the bias row ``W_i^{(k)} [0; 1]``:
    a sample missing five of six views then has an output ~1e-5 times smaller than a complete one, and training with
    modality dropout diverged to NaN in our handwritten benchmark.)

    Args:
        rank: ``R``, the number of rank-one terms.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, rank: int = 4) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_positive(rank=rank)
        self.rank = rank
        self.factors = nn.Parameter(torch.empty(num_modalities, rank, dim + 1, self.out_dim))
        self.rank_weights = nn.Parameter(torch.empty(rank))
        self.bias = nn.Parameter(torch.empty(self.out_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal weights per factor matrix [D+1, out], and the row that multiplies the constant 1 set to 1 (as
        # `product` starts its biases at 1): each factor starts near 1 + W m, so the product of M factors neither
        # vanishes nor explodes whatever the scale of the inputs. With a Xavier bias row instead, inputs of modest
        # scale gave factors ~0.3 and a product ~1e-3 for M = 6: the output was constant and training never started.
        nn.init.normal_(self.factors, std=math.sqrt(2.0 / (self.dim + 1 + self.out_dim)))
        with torch.no_grad():
            self.factors[:, :, -1].fill_(1.0)
        nn.init.normal_(self.rank_weights, std=math.sqrt(2.0 / (1 + self.rank)))
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        augmented = torch.cat([nodes, torch.ones_like(nodes[..., :1])], dim=-1)  # [B, M, D + 1]
        factors = torch.einsum("bmd,mrdo->bmro", augmented, self.factors)  # [B, M, R, out]
        factors = torch.where(mask[:, :, None, None], factors, torch.ones_like(factors))  # missing: neutral 1
        return torch.einsum("r,bro->bo", self.rank_weights, factors.prod(1)) + self.bias


@register_fusion("mfb")
class MFBFusion(FusionBase):
    """Multimodal factorized bilinear pooling (Yu et al., "Multi-modal factorized bilinear pooling with
    co-attention learning for visual question answering", ICCV 2017), generalised to ``M`` modalities.

    .. math:: e = \\prod_{i \\in P} (U_i^\\top m_i + b_i) \\in R^{k o}, \\quad
              z_j = \\sum_{t=1}^{k} e_{(j-1)k + t}, \\quad
              \\mathrm{fused} = \\frac{\\tilde z}{\\lVert \\tilde z \\rVert_2}, \\;
              \\tilde z = \\mathrm{sign}(z) \\sqrt{|z|}

    For two modalities this is the paper's low-rank bilinear model ``z_j = x^T U_j V_j^T y`` with rank ``k``
    (sum pooling over ``k``); for ``M`` modalities the element-wise product runs over all ``M`` projections. The
    power (signed square root) and L2 normalisations follow the paper; the square root is smoothed as
    ``z / sqrt(|z| + 1e-6)`` so its gradient is finite at 0. ``o = out_dim``.

    Shapes: ``nodes [B, M, D]`` -> projections ``[B, M, k * o]`` -> product ``[B, k * o]`` -> ``[B, o, k]`` ->
    ``[B, out_dim]`` (unit L2 norm).

    Mask: a missing modality contributes the neutral element 1 to the product. After the L2 normalisation the
    scale of the product does not matter, so dropping a factor does not shift the output's magnitude.

    Args:
        factor: ``k``, the rank of each output unit's bilinear form (the paper uses 5).
        dropout: dropout on the expanded product ``e``.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, factor: int = 5,
                 dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        _check_positive(factor=factor)
        _check_dropout(dropout)
        self.factor, self.dropout = factor, dropout
        self.proj = ModalityLinear(num_modalities, dim, factor * self.out_dim)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, factor={self.factor}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        expanded = self.drop(neutral_where_masked(self.proj(nodes), mask).prod(1))  # [B, k * o]
        pooled = expanded.view(-1, self.out_dim, self.factor).sum(-1)  # [B, o]
        return _power_l2_normalise(pooled)


@register_fusion("mfh")
class MFHFusion(FusionBase):
    """Multimodal factorized high-order pooling (Yu et al., "Beyond bilinear: generalized multimodal factorized
    high-order pooling for visual question answering", IEEE TNNLS 2018): ``p`` cascaded MFB blocks.

    .. math:: e^{(1)} = \\prod_{i \\in P} (U_i^{(1)\\top} m_i + b_i^{(1)}), \\quad
              e^{(l)} = e^{(l-1)} \\circ \\prod_{i \\in P} (U_i^{(l)\\top} m_i + b_i^{(l)}), \\quad
              z^{(l)} = \\mathrm{Norm}(\\mathrm{SumPool}_k(e^{(l)})), \\quad
              \\mathrm{fused} = W [z^{(1)}; \\dots; z^{(p)}] + c

    Block ``l`` multiplies its own MFB product by the previous block's *expanded* product, so block ``l`` is a
    polynomial of order ``l·M``; ``Norm`` is the MFB power + L2 normalisation. All ``p`` blocks' projections run
    as one batched ``einsum`` and the cascade is a ``cumprod`` over blocks.

    Shapes: ``nodes [B, M, D]`` -> ``[B, M, p * k * o]`` -> product ``[B, p, k * o]`` -> cumprod over ``p`` ->
    ``[B, p, o]`` -> ``[B, p * o]`` -> ``[B, out_dim]``, with ``o = block_dim``.

    Mask: as MFB, a missing modality contributes 1 to every block's product.

    Args:
        blocks: ``p``, the number of cascaded MFB blocks (the paper's MFH uses 2).
        factor: ``k`` of each block.
        block_dim: ``o``, each block's output width (default ``out_dim``).
        dropout: dropout on each block's own product before the cascade.
    """

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, blocks: int = 2, factor: int = 5,
                 block_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(num_modalities, dim, out_dim)
        block_dim = block_dim or self.out_dim
        _check_positive(blocks=blocks, factor=factor, block_dim=block_dim)
        _check_dropout(dropout)
        self.blocks, self.factor, self.block_dim, self.dropout = blocks, factor, block_dim, dropout
        self.proj = ModalityLinear(num_modalities, dim, blocks * factor * block_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(blocks * block_dim, self.out_dim)
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, blocks={self.blocks}, factor={self.factor}, block_dim={self.block_dim}"

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        batch = nodes.shape[0]
        products = neutral_where_masked(self.proj(nodes), mask).prod(1)  # [B, p * k * o]
        products = self.drop(products.view(batch, self.blocks, self.factor * self.block_dim))  # [B, p, k * o]
        expanded = torch.cumprod(products, dim=1)  # e^(l) = e^(l-1) * block l's product
        pooled = expanded.view(batch, self.blocks, self.block_dim, self.factor).sum(-1)  # [B, p, o]
        return self.out(_power_l2_normalise(pooled).flatten(1))
