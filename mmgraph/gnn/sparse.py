"""The sparse message-passing path: padded neighbour lists (ELL layout), O(N·K·R) per sample.

Every sample of a batch has the same graph layout, so each relation's sources of every destination are listed once,
``neighbours: [R, N, K]`` padded to the largest in-degree ``K`` (:attr:`~mmgraph.graph.GraphLayout.neighbours`,
built with the layout and shared by the whole batch), and per-sample presence only masks entries. A layer then
gathers ``[R, N, K, B, ...]`` source features and scores, takes the softmax (or the GCN/SAGE normalisation) over the
``K`` dim, and sums the weighted sources: all vectorised over relations, nodes and the batch, with time and memory
linear in ``N·K`` instead of ``N²``. It wins when nodes have few in-neighbours compared with ``N``, as in long
temporal graphs (a window of ``k`` steps plus time-aligned cross edges); on small complete graphs
(``K = N``) the dense path's ``bmm`` is faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.gnn.layer import HeteroGNNLayer, masked_softmax
from mmgraph.graph import GraphLayout


def sparse_messages(layer: HeteroGNNLayer, h: Tensor, layout: GraphLayout, present: Tensor | None
                    ) -> tuple[Tensor, Tensor]:
    """All relations' messages of one layer at once from the layout's neighbour lists.

    Args:
        layer: the layer whose parameters are used.
        h: ``[N, B, H]`` node states, node-major.
        layout: the sample layout (its ``neighbours``, ``neighbour_valid`` ``[R, N, K]`` and ``is_dst``).
        present: ``BoolTensor[N, B]`` node presence, or None when every node of every sample is present.

    Returns:
        ``(messages [N, B, H], coefficients [R, N (dst), K (neighbour slot), B or 1, heads])``: the summed messages
        and the weight of each listed edge (0 on padding and on edges touching an absent node).
    """
    num_nodes, batch, _ = h.shape
    neighbours = layout.neighbours  # [R, N, K]
    relations, _, width = neighbours.shape
    if not layer.relation_types:
        return torch.zeros_like(h), h.new_zeros(0, num_nodes, width, 1, 1)
    # row r * N + j of a relation-major [R * N, ...] tensor is node j under relation r
    index = (neighbours + torch.arange(relations, device=h.device).view(-1, 1, 1) * num_nodes).reshape(-1)

    def gather(x: Tensor) -> Tensor:
        """``x: [N, B, R, ...]`` -> ``[R, N (dst), K, B, ...]``, the values at each destination's sources."""
        x = x.movedim(2, 0)  # [R, N, B, ...]
        rows = x.reshape(relations * num_nodes, -1).index_select(0, index)
        return rows.view(relations, num_nodes, width, *x.shape[2:])

    valid = layout.neighbour_valid.unsqueeze(-1)  # [R, N, K, 1]
    if present is not None:
        valid = valid & present[neighbours] & present.unsqueeze(1)  # [R, N, K, B]: both ends present
    if layer.kind == "gat":
        sources, score_src, score_dst = layer.gat_project(h)  # [N, B, R, K, C], [N, B, R, K] twice
        logits = F.leaky_relu(gather(score_src) + score_dst.movedim(2, 0).unsqueeze(2), layer.negative_slope)
        coeff = masked_softmax(logits, valid.unsqueeze(-1), dim=2)  # [R, N, K, B, heads]
    elif layer.kind == "gatv2":
        sources, targets, att = layer.gatv2_project(h)  # [N, B, R, K, C] twice, [R, K, C]
        pair = F.leaky_relu(gather(sources) + targets.movedim(2, 0).unsqueeze(2), layer.negative_slope)
        coeff = masked_softmax((pair * att.view(relations, 1, 1, 1, *att.shape[1:])).sum(-1), valid.unsqueeze(-1),
                               dim=2)
    else:
        sources = layer.linear_project(h)  # [N, B, R, 1, H]
        weights = valid.to(h.dtype)  # [R, N, K, B or 1]
        if layer.kind == "sage":
            weights = weights / weights.sum(2, keepdim=True).clamp(min=1.0)
        else:  # GCN: 1 / sqrt(deg_i deg_j), deg counting the self-loop (a virtual one off the relation's types)
            degree = weights.sum(2) + (~layout.is_dst).to(h.dtype).unsqueeze(-1)  # [R, N, B or 1]
            inv_sqrt = degree.clamp(min=1.0).rsqrt()
            inv_sqrt_src = inv_sqrt.reshape(relations * num_nodes, -1).index_select(0, index)
            weights = weights * inv_sqrt.unsqueeze(2) * inv_sqrt_src.view(relations, num_nodes, width, -1)
        coeff = weights.unsqueeze(-1)  # [R, N, K, B or 1, 1]
    messages = (coeff.unsqueeze(-1) * gather(sources)).sum((0, 2))  # [N, B, heads, C]
    return messages.reshape(num_nodes, batch, -1), coeff


def dense_coefficients(coeff: Tensor, layout: GraphLayout, batch: int) -> Tensor:
    """Neighbour-list coefficients ``[R, N, K, B or 1, heads]`` as the dense ``[B, R, N (dst), N (src), heads]``
    of :func:`~mmgraph.gnn.dense.dense_messages` (for explanations; padding slots hold 0 and add nothing)."""
    relations, num_nodes, width, _, heads = coeff.shape
    values = coeff.expand(-1, -1, -1, batch, -1).permute(3, 0, 1, 2, 4)  # [B, R, N, K, heads]
    index = layout.neighbours.view(1, relations, num_nodes, width, 1).expand_as(values)
    return coeff.new_zeros(batch, relations, num_nodes, num_nodes, heads).scatter_add_(3, index, values)
