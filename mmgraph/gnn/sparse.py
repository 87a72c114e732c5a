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
                    ) -> tuple[Tensor, list[Tensor]]:
    """All relations' messages of one layer from the layout's neighbour lists.

    One relation at a time, so that the largest temporaries, ``[N, K, B, H]``, stay a third of what all relations at
    once would take (on long sequences, temporaries past glibc's 32 MB mmap threshold are fresh pages on every
    allocation, and their page faults cost more than the arithmetic).

    Args:
        layer: the layer whose parameters are used.
        h: ``[N, B, H]`` node states, node-major.
        layout: the sample layout (its ``neighbours``, ``neighbour_valid`` ``[R, N, K]`` and ``is_dst``).
        present: ``BoolTensor[N, B]`` node presence, or None when every node of every sample is present.

    Returns:
        ``(messages [N, B, H], coefficients)``: the summed messages and, per relation, the weight of each listed edge
        ``[N (dst), K (neighbour slot), B or 1, heads]`` (0 on padding and on edges touching an absent node).
    """
    num_nodes, batch, _ = h.shape
    width = layout.neighbours.shape[-1]
    messages, coefficients = torch.zeros_like(h), []
    for r, conv in enumerate(layer.convs()):
        neighbours = layout.neighbours[r]  # [N, K]
        index = neighbours.reshape(-1)

        def gather(x: Tensor) -> Tensor:
            """``x: [N, ...]`` -> ``[N (dst), K, ...]``, the rows of each destination's sources (an embedding
            lookup: its backward is 5-10x faster on CPU than that of ``index_select`` or indexing)."""
            return F.embedding(index, x.reshape(num_nodes, -1)).view(num_nodes, width, *x.shape[1:])

        valid = layout.neighbour_valid[r].unsqueeze(-1)  # [N, K, 1]
        if present is not None:
            valid = valid & present[neighbours] & present.unsqueeze(1)  # [N, K, B]: both ends present
        if layer.kind == "gat":
            sources, scores = layer.gat_project(h, [conv])  # [N, B, 1, heads, C], [N, B, 1, heads, 2]
            score_src, score_dst = scores.squeeze(2).unbind(-1)  # [N, B, heads] twice
            sources = gather(sources.squeeze(2))  # [N, K, B, heads, C]
            logits = F.leaky_relu(gather(score_src) + score_dst.unsqueeze(1), layer.negative_slope)
            coeff = masked_softmax(logits, valid.unsqueeze(-1), dim=1)  # [N, K, B, heads]
        elif layer.kind == "gatv2":
            sources, targets, att = layer.gatv2_project(h, [conv])  # [N, B, 1, heads, C] twice, [1, heads, C]
            sources = gather(sources.squeeze(2))  # [N, K, B, heads, C]
            pair = F.leaky_relu(sources + targets.squeeze(2).unsqueeze(1), layer.negative_slope)
            coeff = masked_softmax((pair * att[0]).sum(-1), valid.unsqueeze(-1), dim=1)
        else:
            sources = gather(layer.linear_project(h, [conv]).squeeze(2))  # [N, K, B, 1, H]
            weights = valid.to(h.dtype)  # [N, K, B or 1]
            if layer.kind == "sage":
                weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
            else:  # GCN: 1 / sqrt(deg_i deg_j), deg counting the self-loop (a virtual one off the relation's types)
                degree = weights.sum(1) + (~layout.is_dst[r]).to(h.dtype).unsqueeze(-1)  # [N, B or 1]
                inv_sqrt = degree.clamp(min=1.0).rsqrt()
                weights = weights * inv_sqrt.unsqueeze(1) * gather(inv_sqrt)
            coeff = weights.unsqueeze(-1)  # [N, K, B or 1, 1]
        messages = messages + (coeff.unsqueeze(-1) * sources).sum(1).view(num_nodes, batch, -1)
        coefficients.append(coeff)
    return messages, coefficients


def dense_coefficients(coefficients: list[Tensor], layout: GraphLayout, batch: int) -> Tensor:
    """Per-relation neighbour-list coefficients ``[N, K, B or 1, heads]`` as the dense
    ``[B, R, N (dst), N (src), heads]`` of :func:`~mmgraph.gnn.dense.dense_messages` (for explanations; padding
    slots hold 0 and add nothing)."""
    num_nodes, width = layout.neighbours.shape[1:]
    if not coefficients:
        return layout.neighbours.new_zeros(batch, 0, num_nodes, num_nodes, 1, dtype=torch.float)
    coeff = torch.stack([c.expand(-1, -1, batch, -1) for c in coefficients])  # [R, N, K, B, heads]
    relations, heads = coeff.shape[0], coeff.shape[-1]
    values = coeff.permute(3, 0, 1, 2, 4)  # [B, R, N, K, heads]
    index = layout.neighbours.view(1, relations, num_nodes, width, 1).expand_as(values)
    return coeff.new_zeros(batch, relations, num_nodes, num_nodes, heads).scatter_add_(3, index, values)
