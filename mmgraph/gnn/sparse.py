"""The sparse message-passing path: padded neighbour lists (ELL layout), O(N·K·R) per sample.

Every sample of a batch has the same graph layout, so each relation's sources of every destination are listed once,
per destination modality ``m`` a ``[T_m, K_rm]`` block padded to that modality's largest in-degree
(:attr:`~mmgraph.graph.GraphLayout.neighbours`, built with the layout and shared by the whole batch), and per-sample
presence only masks entries. A layer gathers ``[T_m, K, B, ...]`` source features and scores, takes the softmax (or
the GCN/SAGE normalisation) over the ``K`` dim, and sums the weighted sources: vectorised over nodes and the batch,
one relation and destination modality at a time, with time and memory linear in ``N·K`` instead of ``N²``. It wins
when nodes have few in-neighbours compared with ``N``, as in long temporal graphs (a window of ``k`` steps plus
time-aligned cross edges); on small complete graphs (``K = N``) the dense path's ``bmm`` is faster.

Edge pruning (:func:`prune_lists`) turns the shared lists into per-sample ones, ``[T_m, K', B]``: each sample keeps
its own highest-attention sources, and the next layer gathers them from the flattened ``[N * B, ...]`` states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.gnn.layer import HeteroGNNLayer, keep_counts, masked_softmax
from mmgraph.graph import GraphLayout

# per relation type, per destination modality: (sources, valid). sources: LongTensor[T_m, K] node indices shared by
# the batch, or [T_m, K, B] per sample (after pruning); valid: BoolTensor[T_m, K, B or 1], False on padding and on
# edges that touch an absent node or were pruned.
NeighbourLists = list[list[tuple[Tensor, Tensor]]]


def neighbour_lists(layout: GraphLayout, present: Tensor | None) -> NeighbourLists:
    """The layout's neighbour lists with per-sample presence applied.

    Args:
        layout: the sample layout (its ``neighbours`` and ``neighbour_valid``).
        present: ``BoolTensor[N, B]`` node presence, or None when every node of every sample is present.
    """
    blocks = _blocks(layout)
    lists = []
    for neighbours, listed in zip(layout.neighbours, layout.neighbour_valid):
        per_modality = []
        for rows, sources, valid in zip(blocks, neighbours, listed):
            valid = valid.unsqueeze(-1)
            if present is not None:  # both ends of the edge present
                valid = valid & present[sources] & present[rows].unsqueeze(1)
            per_modality.append((sources, valid))
        lists.append(per_modality)
    return lists


def sparse_messages(layer: HeteroGNNLayer, h: Tensor, layout: GraphLayout, present: Tensor | None,
                    lists: NeighbourLists | None = None) -> tuple[Tensor, list[list[Tensor]]]:
    """All relations' messages of one layer from neighbour lists.

    One relation at a time, so that the largest temporaries, ``[T_m, K, B, H]``, stay small (on long sequences,
    temporaries past glibc's 32 MB mmap threshold are fresh pages on every allocation, and their page faults cost
    more than the arithmetic); within a relation, one block of destination nodes per modality, each padded to its
    own largest in-degree.

    Args:
        layer: the layer whose parameters are used.
        h: ``[N, B, H]`` node states, node-major.
        layout: the sample layout (its ``neighbours``, ``neighbour_valid`` and ``is_dst``).
        present: ``BoolTensor[N, B]`` node presence, or None when every node of every sample is present.
        lists: neighbour lists to use instead of the layout's (:func:`neighbour_lists`, :func:`prune_lists`);
            ``present`` is then already applied to them.

    Returns:
        ``(messages [N, B, H], coefficients)``: the summed messages and, per relation and destination modality, the
        weight of each listed edge ``[T_m, K_rm, B or 1, heads]`` (0 on padding and on edges touching an absent
        node).
    """
    num_nodes, batch, _ = h.shape
    if lists is None:
        lists = neighbour_lists(layout, present)
    blocks = _blocks(layout)
    messages, coefficients = torch.zeros_like(h), []
    for r, conv in enumerate(layer.convs()):
        valid = [v for _, v in lists[r]]  # per destination modality: [T_m, K, B or 1]
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
        for rows, (neighbours, edges) in zip(blocks, lists[r]):
            def gather(x: Tensor) -> Tensor:
                """``x: [N, B or 1, ...]`` -> ``[T_m, K, B or 1, ...]``, the rows of each destination's sources (an
                embedding lookup: its backward is 5-10x faster on CPU than that of ``index_select`` or indexing)."""
                if neighbours.dim() == 3:  # per-sample lists: rows n * B + b of the flattened states
                    flat = neighbours * batch + torch.arange(batch, device=neighbours.device)
                    x = x.expand(num_nodes, batch, *x.shape[2:])
                    return F.embedding(flat.reshape(-1), x.reshape(num_nodes * batch, -1)).view(
                        *flat.shape, *x.shape[2:])
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


def prune_lists(lists: NeighbourLists, coefficients: list[list[Tensor]], pruning: float) -> NeighbourLists:
    """MTAG-style dynamic edge pruning on neighbour lists: per sample, relation and destination, keep the
    :func:`~mmgraph.gnn.layer.keep_counts` sources of highest attention (mean over heads; ties go to the lower node
    index, as on the dense path) and drop the rest for the following layers.

    Args:
        lists: the lists the layer ran on.
        coefficients: the layer's edge weights, per relation and modality ``[T_m, K, B, heads]``.
        pruning: the fraction of each node's in-edges to drop, in ``[0, 1)``.

    Returns:
        per-sample lists ``([T_m, K', B], [T_m, K', B])``, ``K' = max(1, floor((1 - pruning) · K))``.
    """
    pruned = []
    for per_modality, relation_coefficients in zip(lists, coefficients):
        out = []
        for (sources, valid), coeff in zip(per_modality, relation_coefficients):
            steps, width, batch = coeff.shape[:3]
            valid = valid.expand(steps, width, batch)
            score = coeff.detach().mean(-1).masked_fill(~valid, -1.0)  # [T_m, K, B]; kept edges score >= 0
            keep = max(1, math.floor((1.0 - pruning) * width + 1e-9))
            order = score.argsort(dim=1, descending=True, stable=True)[:, :keep]  # [T_m, K', B]
            rank = torch.arange(keep, device=order.device).view(1, -1, 1)
            kept = valid.gather(1, order) & (rank < keep_counts(valid.sum(1, keepdim=True), pruning))
            if sources.dim() == 2:
                sources = sources.unsqueeze(-1).expand(steps, width, batch)
            out.append((sources.gather(1, order), kept))
        pruned.append(out)
    return pruned


def dense_coefficients(coefficients: list[list[Tensor]], layout: GraphLayout, batch: int,
                       lists: NeighbourLists | None = None) -> Tensor:
    """Per-relation, per-modality neighbour-list coefficients ``[T_m, K, B or 1, heads]`` as the dense
    ``[B, R, N (dst), N (src), heads]`` of :func:`~mmgraph.gnn.dense.dense_messages` (for explanations; padding
    slots hold 0 and add nothing). ``lists``: the (possibly pruned) lists the coefficients belong to; default the
    layout's."""
    num_nodes = layout.num_nodes
    heads = next((c.shape[-1] for per in coefficients for c in per), 1)
    out = torch.zeros(batch, len(coefficients), num_nodes, num_nodes, heads, device=layout.node_type.device)
    sources_of = [[s for s, _ in per] for per in lists] if lists is not None else layout.neighbours
    for r, per in enumerate(coefficients):
        for first, sources, coeff in zip(layout.offsets(), sources_of[r], per):
            values = coeff.expand(-1, -1, batch, -1).permute(2, 0, 1, 3)  # [B, T_m, K, heads]
            index = (sources.permute(2, 0, 1) if sources.dim() == 3 else sources.unsqueeze(0)).unsqueeze(-1)
            out[:, r, first:first + sources.shape[0]].scatter_add_(2, index.expand_as(values), values.to(out.dtype))
    return out


def _blocks(layout: GraphLayout) -> list[slice]:
    """Each modality's rows of the node dim."""
    return [slice(first, first + count) for first, count in zip(layout.offsets(), layout.steps)]
