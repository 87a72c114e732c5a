"""The dense message-passing path: every (destination, source) pair of a sample at once, O(N²·R) per sample.

Node states are NODE-MAJOR, ``[N, B, H]``, and attention logits ``[N (src j), B, R, K, N (dst i)]``. The softmax
over a destination's sources and the readout over a sample's nodes then reduce over the OUTER dim, which the CPU
kernels vectorise across the batch, instead of over an innermost dim of ~6 entries, which they walk one short row at
a time (4-20x slower at these sizes); and both the attention matrices (``[i, j]`` with unit stride along ``i``) and
the node-major sources (``[j, c]`` with unit stride along ``c``) are BLAS-compatible strided views, so the
aggregation ``bmm`` reads them without copies. It wins on small graphs (a few modalities, short sequences), where
per-operation overhead, not arithmetic, bounds a step; :mod:`~mmgraph.gnn.sparse` wins on long sequences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmgraph.gnn.layer import HeteroGNNLayer, keep_counts, masked_softmax


def dense_messages(layer: HeteroGNNLayer, h: Tensor, adjacency: Tensor, is_dst: Tensor, complete: bool = False
                   ) -> tuple[Tensor, Tensor]:
    """All relations' messages of one layer at once on dense node-major tensors.

    Args:
        layer: the layer whose parameters are used.
        h: ``[N, B, H]`` node states, node-major.
        adjacency: ``BoolTensor[B or 1, R, N, N]`` (dst, src), self-loops included, absent nodes cut off.
        is_dst: ``BoolTensor[R, N]``, nodes whose type is a destination of each relation.
        complete: every entry of ``adjacency`` is True (lets GAT skip the masking).

    Returns:
        ``(messages [N, B, H], coefficients [B, R, K, N (dst i), N (src j)])``: the summed messages and the
        per-edge attention (GAT/GATv2) or normalised aggregation weights (GCN/SAGE, ``K = 1``) of ``j -> i``
        (a strided view).
    """
    num_nodes, batch, _ = h.shape
    if not layer.relation_types:
        return torch.zeros_like(h), h.new_zeros(batch, 0, 1, num_nodes, num_nodes)
    valid = adjacency.permute(3, 0, 1, 2).unsqueeze(3)  # [N (j), B or 1, R, 1, N (i)]
    convs = layer.convs()
    if layer.kind == "gat":
        sources, scores = layer.gat_project(h, convs)  # [N, B, R, K, C], [N, B, R, K, 2]
        score_src, score_dst = scores.unbind(-1)
        # [N (j), B, R, K, N (i)]: the softmax runs over the outer source dim
        logits = F.leaky_relu(score_src.unsqueeze(-1) + score_dst.permute(1, 2, 3, 0), layer.negative_slope)
        coeff = torch.softmax(logits, 0) if complete else masked_softmax(logits, valid, dim=0)
        coeff = coeff.permute(1, 2, 3, 4, 0)  # [B, R, K, N (i), N (j)], a view
    elif layer.kind == "gatv2":
        sources, targets, att = layer.gatv2_project(h, convs)  # [N, B, R, K, C] twice, [R, K, C]
        # [N (j), B, R, K, N (i), C]
        pair = F.leaky_relu(sources.unsqueeze(-2) + targets.permute(1, 2, 3, 0, 4), layer.negative_slope)
        coeff = masked_softmax((pair * att.unsqueeze(-2)).sum(-1), valid, dim=0).permute(1, 2, 3, 4, 0)
    else:
        # GCN: w_ij = 1 / sqrt(deg_i deg_j), deg counting the self-loop (a virtual one off the relation's types)
        sources = layer.linear_project(h, convs)  # [N, B, R, 1, H]
        adj = adjacency.to(h.dtype)
        if layer.kind == "sage":
            weights = adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
        else:
            inv_sqrt = (adj.sum(-1) + (~is_dst).to(h.dtype)).clamp(min=1.0).rsqrt()  # [B, R, N]
            weights = adj * inv_sqrt.unsqueeze(-1) * inv_sqrt.unsqueeze(-2)
        coeff = weights.unsqueeze(2)  # [B or 1, R, 1, N (i), N (j)]
    return _aggregate(coeff, sources), coeff.expand(batch, -1, -1, -1, -1)


def _aggregate(coeff: Tensor, sources: Tensor) -> Tensor:
    """``out[i, b, k, c] = Σ_r Σ_j coeff[b, r, k, i, j] * sources[j, b, r, k, c]``.

    Args:
        coeff: ``[B or 1, R, K, N (dst i), N (src j)]`` aggregation weights; any strides (a ``[B*R*K, N, N]`` view
            without copy when they allow one). A batch dim of 1 (weights shared by the batch) needs ``K = 1``.
        sources: node-major ``[N, B, R, K, C]`` per-relation, per-head source features.

    Returns:
        node-major ``[N, B, K * C]`` messages summed over relations, heads concatenated.
    """
    nodes, batch, relations, heads, channels = sources.shape
    if coeff.shape[0] == 1 and batch > 1:  # one graph for the whole batch: R matmuls [N, N] x [N, B * C]
        x = sources.permute(2, 0, 1, 3, 4).reshape(relations, nodes, batch * heads * channels)
        out = torch.bmm(coeff[0, :, 0], x)  # [R, N (i), B * C]
        return (out[0] if relations == 1 else out.sum(0)).view(nodes, batch, heads * channels)
    x = sources.permute(1, 2, 3, 0, 4).reshape(-1, nodes, channels)  # [(b, r, k), j, c]
    out = torch.bmm(coeff.reshape(-1, nodes, nodes), x).view(batch, relations, heads, nodes, channels)
    out = out[:, 0] if relations == 1 else out.sum(1)  # [B, K, N, C]
    return out.permute(2, 0, 1, 3).reshape(nodes, batch, heads * channels)


def prune_adjacency(adjacency: Tensor, coeff: Tensor, pruning: float) -> Tensor:
    """MTAG-style dynamic edge pruning on the dense path: per sample, relation and destination, keep the
    :func:`~mmgraph.gnn.layer.keep_counts` sources of highest attention (mean over heads; ties go to the lower
    node index) and drop the rest for the following layers.

    Args:
        adjacency: ``BoolTensor[B or 1, R, N (dst), N (src)]`` the layer ran on.
        coeff: the layer's ``[B, R, K, N (dst), N (src)]`` edge weights.
        pruning: the fraction of each node's in-edges to drop, in ``[0, 1)``.

    Returns:
        ``BoolTensor[B, R, N, N]``.
    """
    score = coeff.detach().mean(2)  # [B, R, N, N]
    valid = adjacency.expand_as(score)
    score = score.masked_fill(~valid, -1.0)  # kept edges score >= 0
    order = score.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device)
                                            .expand_as(order))
    return valid & (rank < keep_counts(valid.sum(-1, keepdim=True), pruning))
