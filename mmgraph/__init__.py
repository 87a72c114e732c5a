"""mmgraph: graph-based multimodal fusion.

Each sample's modality embeddings become the nodes of a heterogeneous graph; GCN/GAT layers propagate over it and a
readout pools it into one fused representation.

>>> from mmgraph import MultiModalGNN
>>> gnn = MultiModalGNN({"text": 300, "image": 512}, hidden=64, conv="gat")

``import mmgraph`` does not import torch-geometric, networkx or matplotlib: the GNN (:mod:`mmgraph.gnn`, PyG), the
graph description (:mod:`mmgraph.graph`, networkx), the comparison (:mod:`mmgraph.evaluation`) and the plots
(:mod:`mmgraph.viz`) are imported when first used (``mmgraph.MultiModalGNN``, ``mmgraph.compare``, building a
``"gnn"`` fusion, ``model.explain``), which keeps the import fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmgraph.data import MultiModalBatch, MultiModalDataset
from mmgraph.encoders import available_encoders, build_encoder, register_encoder
from mmgraph.fusion import available_fusions, build_fusion, register_fusion
from mmgraph.models import FusionModel
from mmgraph.training import FitResult, evaluate, fit, predict
from mmgraph.utils import resolve_device, seed_everything

if TYPE_CHECKING:
    from mmgraph.evaluation import Comparison, compare
    from mmgraph.gnn import MultiModalGNN, explanation_to_networkx
    from mmgraph.graph import GraphLayout, ModalityGraph

__version__ = "0.1.0"

# public names whose modules import heavy dependencies (torch-geometric, networkx, the comparison's plots):
# imported on first access
_LAZY = {"MultiModalGNN": "mmgraph.gnn", "explanation_to_networkx": "mmgraph.gnn", "GraphLayout": "mmgraph.graph",
         "ModalityGraph": "mmgraph.graph", "Comparison": "mmgraph.evaluation", "compare": "mmgraph.evaluation"}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mmgraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
