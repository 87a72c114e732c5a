"""MultiModalGNN, laid out as its architecture.

* :mod:`~mmgraph.gnn.model`: :class:`MultiModalGNN` (validate -> project -> layers -> readout) and
  :func:`explanation_to_networkx`;
* :mod:`~mmgraph.gnn.layer`: :class:`HeteroGNNLayer`, one layer's parameters (PyG convolutions) and node update;
* the three message-passing paths, same parameters, same meaning, plain PyTorch autograd:
  :mod:`~mmgraph.gnn.dense` (all node pairs), :mod:`~mmgraph.gnn.sparse` (padded neighbour lists),
  :mod:`~mmgraph.gnn.pyg` (PyG ``HeteroConv``, the reference);
* :mod:`~mmgraph.gnn.readout`: :class:`GraphReadout`;
* :mod:`~mmgraph.gnn.validation`: checks at the boundary.
"""

from mmgraph.gnn.layer import HeteroGNNLayer
from mmgraph.gnn.model import BACKENDS, CONVS, READOUTS, SPARSE_CROSSOVER, MultiModalGNN, explanation_to_networkx
from mmgraph.gnn.readout import GraphReadout

__all__ = ["BACKENDS", "CONVS", "READOUTS", "SPARSE_CROSSOVER", "GraphReadout", "HeteroGNNLayer", "MultiModalGNN",
           "explanation_to_networkx"]
