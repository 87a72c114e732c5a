"""mmgraph: graph-based multimodal fusion.

Each sample's modality embeddings become the nodes of a heterogeneous graph; GCN/GAT layers propagate over it and a
readout pools it into one fused representation.

>>> from mmgraph import MultiModalGNN
>>> gnn = MultiModalGNN({"text": 300, "image": 512}, hidden=64, conv="gat")
"""

from mmgraph.fusion import available_fusions, build_fusion, register_fusion
from mmgraph.gnn import MultiModalGNN, explanation_to_networkx
from mmgraph.graph import GraphLayout, ModalityGraph
from mmgraph.utils import resolve_device, seed_everything

__version__ = "0.1.0"

__all__ = [
    "GraphLayout",
    "ModalityGraph",
    "MultiModalGNN",
    "available_fusions",
    "build_fusion",
    "explanation_to_networkx",
    "register_fusion",
    "resolve_device",
    "seed_everything",
]
