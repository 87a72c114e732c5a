"""The pyg message-passing path: the real ``torch_geometric.nn.HeteroConv`` on the batch flattened to ``B * N`` nodes.

Every relation's ``edge_index`` over the flattened nodes is built with tensor ops, without a loop over samples
(:meth:`~mmgraph.graph.ModalityGraph.edge_index_dict`). This path is the reference the dense and sparse paths are
tested against: PyG's own convolutions, PyG's own autograd.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torch_geometric.utils import degree

from mmgraph.gnn.layer import NODE, HeteroGNNLayer


def pyg_messages(layer: HeteroGNNLayer, x: Tensor, edge_index: Mapping[str, Tensor], is_dst_flat: Tensor) -> Tensor:
    """Messages of one layer with PyG's ``HeteroConv``.

    Args:
        layer: the layer whose convolutions run.
        x: ``[B * N, H]`` flattened node states.
        edge_index: ``{relation: LongTensor[2, E]}`` over the flattened nodes.
        is_dst_flat: ``BoolTensor[R, B * N]`` (GCN normalisation only).
    """
    if not layer.relation_types:
        return torch.zeros_like(x)
    edges = {(NODE, rel, NODE): edge_index[rel] for rel in layer.relation_types}
    if layer.kind != "gcn":
        return layer.conv({NODE: x}, edges)[NODE]
    weights = {}
    for r, rel in enumerate(layer.relation_types):
        src, dst = edge_index[rel]
        deg = degree(dst, x.shape[0], dtype=x.dtype) + (~is_dst_flat[r]).to(x.dtype)
        inv_sqrt = deg.clamp(min=1.0).rsqrt()
        weights[(NODE, rel, NODE)] = inv_sqrt[src] * inv_sqrt[dst]
    return layer.conv({NODE: x}, edges, edge_weight_dict=weights)[NODE]
