"""The fusion zoo: every method maps ``nodes [B, M, D]`` and ``mask [B, M]`` to ``[B, out_dim]``.

>>> from mmgraph.fusion import available_fusions, build_fusion
>>> fusion = build_fusion("attention", num_modalities=3, dim=64)
>>> fused = fusion(nodes, mask)    # [B, 64]
"""

from mmgraph.fusion.attention import CrossAttentionFusion
from mmgraph.fusion.base import (FusionBase, ModalityLinear, available_fusions, build_fusion, check_mask,
                                 fusion_class, masked_mean, masked_softmax, modality_steps, neutral_where_masked,
                                 register_fusion)
from mmgraph.fusion.bilinear import LowRankFusion, MFBFusion, MFHFusion, TensorFusion
from mmgraph.fusion.cnn import CNNFusion
from mmgraph.fusion.graph import GNNFusion
from mmgraph.fusion.seq2seq import Seq2SeqFusion
from mmgraph.fusion.simple import AttentionFusion, ConcatFusion, LateFusion, ProductFusion, SumFusion

__all__ = [
    "AttentionFusion",
    "CNNFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "FusionBase",
    "GNNFusion",
    "LateFusion",
    "LowRankFusion",
    "MFBFusion",
    "MFHFusion",
    "ModalityLinear",
    "ProductFusion",
    "Seq2SeqFusion",
    "SumFusion",
    "TensorFusion",
    "available_fusions",
    "build_fusion",
    "check_mask",
    "fusion_class",
    "masked_mean",
    "masked_softmax",
    "modality_steps",
    "neutral_where_masked",
    "register_fusion",
]
