"""MultiModalGNN, laid out as its architecture.

* :mod:`~mmgraph.gnn.model`: :class:`MultiModalGNN` (validate -> project -> layers -> readout) and
  :func:`explanation_to_networkx`;
* :mod:`~mmgraph.gnn.position`: where temporal nodes are, before the graph: positional encodings
  (:class:`~mmgraph.gnn.position.TemporalEncoding`) and per-modality temporal convolutions
  (:class:`~mmgraph.gnn.position.TemporalContext`);
* :mod:`~mmgraph.gnn.layer`: :class:`HeteroGNNLayer`, one layer's parameters (PyG convolutions) and node update;
* the three message-passing paths, same parameters, same meaning, plain PyTorch autograd:
  :mod:`~mmgraph.gnn.dense` (all node pairs), :mod:`~mmgraph.gnn.sparse` (padded neighbour lists),
  :mod:`~mmgraph.gnn.pyg` (PyG ``HeteroConv``, the reference);
* :mod:`~mmgraph.gnn.readout`: :class:`GraphReadout`;
* :mod:`~mmgraph.gnn.validation`: checks at the boundary.
"""

import warnings

with warnings.catch_warnings():
    # torch-geometric scripts a few classes with torch.jit.script at import time, which recent torch deprecates
    # (a DeprecationWarning on torch 2.13, a FutureWarning on 2.15): a warning about its code, not the user's.
    # Importing it here first, filtered, keeps the submodules' plain imports quiet.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    import torch_geometric.nn  # noqa: F401

from mmgraph.gnn.layer import HeteroGNNLayer  # noqa: E402
from mmgraph.gnn.model import BACKENDS, CONVS, READOUTS, SPARSE_CROSSOVER, MultiModalGNN, explanation_to_networkx  # noqa: E402,E501
from mmgraph.gnn.readout import GraphReadout  # noqa: E402

__all__ = ["BACKENDS", "CONVS", "READOUTS", "SPARSE_CROSSOVER", "GraphReadout", "HeteroGNNLayer", "MultiModalGNN",
           "explanation_to_networkx"]
