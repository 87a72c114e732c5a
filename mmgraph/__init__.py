"""mmgraph: graph-based multimodal fusion.

Each sample's modality embeddings become the nodes of a heterogeneous graph; GCN/GAT layers propagate over it and a
readout pools it into one fused representation.

>>> from mmgraph import MultiModalGNN
>>> gnn = MultiModalGNN({"text": 300, "image": 512}, hidden=64, conv="gat")
"""

from mmgraph.data import MultiModalBatch, MultiModalDataset
from mmgraph.encoders import available_encoders, build_encoder, register_encoder
from mmgraph.fusion import available_fusions, build_fusion, register_fusion
from mmgraph.gnn import MultiModalGNN, explanation_to_networkx
from mmgraph.graph import GraphLayout, ModalityGraph
from mmgraph.model import FusionModel
from mmgraph.utils import resolve_device, seed_everything

__version__ = "0.1.0"

_TRAIN_API = ("FitResult", "evaluate", "fit", "predict")
_EVALUATION_API = ("Comparison", "compare")


def __getattr__(name: str):
    # mmgraph.train is imported on first use, so that `python -m mmgraph.train` does not find it already imported
    if name in _TRAIN_API:
        from mmgraph import train

        return getattr(train, name)
    if name in _EVALUATION_API:
        from mmgraph import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'mmgraph' has no attribute {name!r}")


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
