"""mmgraph: graph-based multimodal fusion.

Each sample's modality embeddings become the nodes of a heterogeneous graph; GCN/GAT layers propagate over it and a
readout pools it into one fused representation.

>>> from mmgraph import MultiModalGNN
>>> gnn = MultiModalGNN({"text": 300, "image": 512}, hidden=64, conv="gat")
"""

from mmgraph.data import MultiModalBatch, MultiModalDataset
from mmgraph.encoders import available_encoders, build_encoder, register_encoder
from mmgraph.evaluation import Comparison, compare
from mmgraph.fusion import available_fusions, build_fusion, register_fusion
from mmgraph.gnn import MultiModalGNN, explanation_to_networkx
from mmgraph.graph import GraphLayout, ModalityGraph
from mmgraph.models import FusionModel
from mmgraph.training import FitResult, evaluate, fit, predict
from mmgraph.utils import resolve_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "FitResult",
    "FusionModel",
    "GraphLayout",
    "ModalityGraph",
    "MultiModalBatch",
    "MultiModalDataset",
    "MultiModalGNN",
    "available_encoders",
    "available_fusions",
    "build_encoder",
    "build_fusion",
    "compare",
    "evaluate",
    "explanation_to_networkx",
    "fit",
    "predict",
    "register_encoder",
    "register_fusion",
    "resolve_device",
    "seed_everything",
]
