"""The sparse message-passing path: padded neighbour lists (ELL layout), O(N·K·R) per sample.

Every sample of a batch has the same graph layout, so each relation's sources of every destination are listed once,
per destination modality ``m`` a ``[T_m, K_rm]`` block padded to that modality's largest in-degree
(:attr:`~mmgraph.graph.GraphLayout.neighbours`, built with the layout and shared by the whole batch), and per-sample
presence only masks entries. A layer gathers ``[T_m, K, B, ...]`` source features and scores, takes the softmax (or
the GCN/SAGE normalisation) over the ``K`` dim, and sums the weighted sources: vectorised over nodes and the batch,
one relation and destination modality at a time, with time and memory linear in ``N·K`` instead of ``N²``. It wins
when nodes have few in-neighbours compared with ``N``, as in long temporal graphs (a window of ``k`` steps plus
time-aligned cross edges); on small complete graphs (``K = N``) the dense path's ``bmm`` is faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.gnn.layer import HeteroGNNLayer, masked_softmax
from mmgraph.graph import GraphLayout


def sparse_messages(layer: HeteroGNNLayer, h: Tensor, layout: GraphLayout, present: Tensor | None
                    ) -> tuple[Tensor, list[list[Tensor]]]:
    """All relations' messages of one layer from the layout's neighbour lists.

    One relation at a time, so that the largest temporaries, ``[T_m, K, B, H]``, stay small (on long sequences,
    temporaries past glibc's 32 MB mmap threshold are fresh pages on every allocation, and their page faults cost
    more than the arithmetic); within a relation, one block of destination nodes per modality, each padded to its
    own largest in-degree.

    Args:
        layer: the layer whose parameters are used.
        h: ``[N, B, H]`` node states, node-major.
        layout: the sample layout (its ``neighbours``, ``neighbour_valid`` and ``is_dst``).
        present: ``BoolTensor[N, B]`` node presence, or None when every node of every sample is present.

    Returns:
        ``(messages [N, B, H], coefficients)``: the summed messages and, per relation and destination modality, the
        weight of each listed edge ``[T_m, K_rm, B or 1, heads]`` (0 on padding and on edges touching an absent
        node).
    """
    num_nodes, batch, _ = h.shape
    blocks = [slice(first, first + count) for first, count in zip(layout.offsets(), layout.steps)]
    messages, coefficients = torch.zeros_like(h), []
    for r, conv in enumerate(layer.convs()):
        valid = []  # per destination modality: [T_m, K, B or 1], both ends of the edge present
        for rows, neighbours, listed in zip(blocks, layout.neighbours[r], layout.neighbour_valid[r]):
            listed = listed.unsqueeze(-1)
            valid.append(listed if present is None else listed & present[neighbours] & present[rows].unsqueeze(1))
        if layer.kind == "gat":
            sources, scores = layer.gat_project(h, [conv])  # [N, B, 1, heads, C], [N, B, 1, heads, 2]
            score_src, score_dst = scores.squeeze(2).unbind(-1)  # [N, B, heads] twice
            sources = sources.squeeze(2)
        elif layer.kind == "gatv2":
            sources, targets, att = layer.gatv2_project(h, [conv])  # [N, B, 1, heads, C] twice, [1, heads, C]
            sources, targets = sources.squeeze(2), targets.squeeze(2)
        else:
            sources = layer.linear_project(h, [conv]).squeeze(2)  # [N, B, 1, H]
            if layer.kind == "gcn":  # 1 / sqrt(deg_i deg_j), deg counting the self-loop (virtual off r's types)
                degree = torch.cat([v.sum(1) for v in valid]).to(h.dtype)  # [N, B or 1]
                inv_sqrt = (degree + (~layout.is_dst[r]).to(h.dtype).unsqueeze(-1)).clamp(min=1.0).rsqrt()
        parts, relation_coefficients = [], []
        for rows, neighbours, edges in zip(blocks, layout.neighbours[r], valid):
            def gather(x: Tensor) -> Tensor:
                """``x: [N, ...]`` -> ``[T_m, K, ...]``, the rows of each destination's sources (an embedding
                lookup: its backward is 5-10x faster on CPU than that of ``index_select`` or indexing)."""
                return F.embedding(neighbours.reshape(-1), x.reshape(num_nodes, -1)).view(*neighbours.shape,
                                                                                         *x.shape[1:])

            if layer.kind == "gat":
                logits = F.leaky_relu(gather(score_src) + score_dst[rows].unsqueeze(1), layer.negative_slope)
                coeff = masked_softmax(logits, edges.unsqueeze(-1), dim=1)  # [T_m, K, B, heads]
            elif layer.kind == "gatv2":
                pair = F.leaky_relu(gather(sources) + targets[rows].unsqueeze(1), layer.negative_slope)
                coeff = masked_softmax((pair * att[0]).sum(-1), edges.unsqueeze(-1), dim=1)
            else:
                weights = edges.to(h.dtype)  # [T_m, K, B or 1]
                if layer.kind == "sage":
                    weights = weights / weights.sum(1, keepdim=True).clamp(min=1.0)
                else:
                    weights = weights * inv_sqrt[rows].unsqueeze(1) * gather(inv_sqrt)
                coeff = weights.unsqueeze(-1)  # [T_m, K, B or 1, 1]
            parts.append((coeff.unsqueeze(-1) * gather(sources)).sum(1).reshape(rows.stop - rows.start, batch, -1))
            relation_coefficients.append(coeff)
        messages = messages + torch.cat(parts)
        coefficients.append(relation_coefficients)
    return messages, coefficients


def dense_coefficients(coefficients: list[list[Tensor]], layout: GraphLayout, batch: int) -> Tensor:
    """Per-relation, per-modality neighbour-list coefficients ``[T_m, K, B or 1, heads]`` as the dense
    ``[B, R, N (dst), N (src), heads]`` of :func:`~mmgraph.gnn.dense.dense_messages` (for explanations; padding
    slots hold 0 and add nothing)."""
    num_nodes = layout.num_nodes
    heads = next((c.shape[-1] for lists in coefficients for c in lists), 1)
    out = torch.zeros(batch, len(coefficients), num_nodes, num_nodes, heads, device=layout.node_type.device)
    for r, lists in enumerate(coefficients):
        for first, neighbours, coeff in zip(layout.offsets(), layout.neighbours[r], lists):
            values = coeff.expand(-1, -1, batch, -1).permute(2, 0, 1, 3)  # [B, T_m, K, heads]
            index = neighbours.view(1, *neighbours.shape, 1).expand_as(values)
            out[:, r, first:first + neighbours.shape[0]].scatter_add_(2, index, values.to(out.dtype))
    return out
