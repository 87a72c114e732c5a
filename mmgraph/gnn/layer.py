"""One heterogeneous message-passing layer: its parameters, the node update, and the maths its paths share.

A layer updates node ``i`` of type ``τ(i)`` as

.. math::

    m_i = \\sum_{r \\in \\mathcal{R}} \\mathrm{conv}_r(H, E_r)_i + b_{τ(i)}, \\qquad
    h_i' = \\mathrm{LN}_{τ(i)}\\big(h_i + \\mathrm{dropout}(\\mathrm{ReLU}(g_i \\odot m_i))\\big),

with ``g_i = 1`` or, with ``gate=True``, ``g_i = σ(W_g [h_i \\| m_i] + c_g)``: a multiplicative interaction
between the receiver and what it hears (what TFN and MFB do with outer and element-wise products, and additive
attention alone cannot).

The parameters are PyG's own convolutions inside a ``HeteroConv`` (so the ``pyg`` path runs them as they are and
every path has the same ``state_dict``); the messages ``Σ_r conv_r`` are computed by one of three paths
(:mod:`~mmgraph.gnn.dense`, :mod:`~mmgraph.gnn.sparse`, :mod:`~mmgraph.gnn.pyg`), the update here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, HeteroConv, SAGEConv

from mmgraph.fusion.base import masked_softmax  # noqa: F401 (the package's one masked softmax, for the paths)

NODE = "node"  # the single PyG node type of the flattened batch; modality types live in `node_type`


def keep_counts(degree: Tensor, pruning: float) -> Tensor:
    """How many of a node's ``degree`` in-edges (of one relation) edge pruning keeps: ``max(1, floor((1 - pruning)
    · d))`` for ``d >= 1``, so that any ``pruning > 0`` drops at least one edge of every node with two or more (the
    same rule on the dense and sparse paths)."""
    # plus a hair, so that products like 0.7 * 10 that land a rounding error below an integer keep that integer
    kept = torch.floor(degree.to(torch.float64) * (1.0 - pruning) + 1e-9).to(torch.long)
    return torch.minimum(kept.clamp(min=1), degree)


def cat(tensors: list[Tensor]) -> Tensor:
    """``torch.cat`` along dim 0 that is the tensor itself for the common single relation type."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _make_conv(conv: str, hidden: int, heads: int) -> nn.Module:
    # Self-loops come from the graph layout (only on a relation's destination nodes) and biases are per node type,
    # so every conv runs without its own self-loops and bias: then a node that is not a destination of relation r
    # gets exactly zero from r, on every path.
    if conv == "gcn":
        return GCNConv(hidden, hidden, add_self_loops=False, normalize=False, bias=False)
    if conv == "gat":
        return GATConv(hidden, hidden // heads, heads=heads, add_self_loops=False, bias=False)
    if conv == "gatv2":
        return GATv2Conv(hidden, hidden // heads, heads=heads, add_self_loops=False, bias=False)
    return SAGEConv(hidden, hidden, aggr="mean", root_weight=False, bias=False)


class HeteroGNNLayer(nn.Module):
    """One message-passing layer over all relation types, with per-type bias, residual, LayerNorm and dropout.

    Args:
        relation_types: the ``R`` relation type names (one conv each).
        num_types: number of node types ``M``.
        hidden: node width ``H``.
        conv: ``"gcn" | "gat" | "gatv2" | "sage"``.
        heads: attention heads (GAT/GATv2), ``H % heads == 0``.
        dropout: dropout on the layer's update.
        gate: gate the messages by the receiver, ``σ(W_g [h_i || m_i]) ⊙ m_i`` (a ``Linear(2H, H)``).
    """

    def __init__(self, relation_types: tuple[str, ...], num_types: int, hidden: int, conv: str, heads: int,
                 dropout: float, gate: bool = False) -> None:
        super().__init__()
        self.relation_types, self.kind, self.hidden, self.dropout = relation_types, conv, hidden, dropout
        self.heads = heads if conv in ("gat", "gatv2") else 1
        self.conv = HeteroConv({(NODE, rel, NODE): _make_conv(conv, hidden, heads) for rel in relation_types},
                               aggr="sum")
        self.type_bias = nn.Parameter(torch.empty(num_types, hidden))
        self.norm_weight = nn.Parameter(torch.empty(num_types, hidden))
        self.norm_bias = nn.Parameter(torch.empty(num_types, hidden))
        self.gate = nn.Linear(2 * hidden, hidden) if gate else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.convs():
            conv.reset_parameters()
        nn.init.zeros_(self.type_bias)
        nn.init.ones_(self.norm_weight)
        nn.init.zeros_(self.norm_bias)
        if self.gate is not None:
            self.gate.reset_parameters()

    def convs(self) -> list[nn.Module]:
        """The ``R`` PyG convolutions, in relation-type order."""
        return [self.conv.convs[(NODE, rel, NODE)] for rel in self.relation_types]

    def extra_repr(self) -> str:
        return (f"{self.kind}, hidden={self.hidden}, heads={self.heads}, relations={list(self.relation_types)}"
                + (", gate=True" if self.gate is not None else ""))

    @property
    def negative_slope(self) -> float:
        """LeakyReLU slope of the GAT/GATv2 attention."""
        return self.convs()[0].negative_slope

    def update(self, h: Tensor, message: Tensor, node_type: Tensor | None) -> Tensor:
        """``LN_τ(h + dropout(ReLU(g ⊙ (message + b_τ))))``, ``g = σ(W_g [h || message + b_τ])`` with ``gate``
        (else 1).

        Args:
            h, message: node-major ``[N, B, H]`` (dense and sparse paths) or flattened ``[B * N, H]`` (pyg path).
            node_type: the type of each row of the node dim (``[N]`` or ``[B * N]``), or None when node ``n`` is
                of type ``n`` (static node-major layout): then the per-type parameters broadcast without a gather.
        """
        node_major = h.dim() == 3
        bias, scale, shift = (self._rows(p, node_type, node_major) for p in (self.type_bias, self.norm_weight,
                                                                             self.norm_bias))
        message = message + bias
        if self.gate is not None:  # a module call (int8 quantisation can swap it)
            message = torch.sigmoid(self.gate(torch.cat([h, message.expand_as(h)], dim=-1))) * message
        active = torch.relu(message)
        if self.training and self.dropout > 0:
            # the mask is drawn sample-major ([B, N, H]) in both layouts: every path draws it from the same seed
            shape = (active.shape[1], active.shape[0], active.shape[2]) if node_major else active.shape
            keep = active.new_empty(shape).bernoulli_(1.0 - self.dropout).div_(1.0 - self.dropout)
            active = active * (keep.transpose(0, 1) if node_major else keep)
        # the per-type affine cannot go into F.layer_norm (its weight is per channel only)
        return torch.addcmul(shift, F.layer_norm(h + active, h.shape[-1:]), scale)

    @staticmethod
    def _rows(params: Tensor, node_type: Tensor | None, node_major: bool) -> Tensor:
        """Per-node rows of per-type ``params [M, H]`` (``params`` itself when node ``n`` is of type ``n``), with a
        broadcast batch dim after the node dim in the node-major layout."""
        rows = params if node_type is None else params[node_type]
        return rows.unsqueeze(1) if node_major else rows

    # ------------------------------------------------------------------ projections (dense and sparse paths)
    def gat_project(self, h: Tensor, convs: list[nn.Module]) -> tuple[Tensor, Tensor]:
        """GAT features and attention scores of the relations of ``convs``, every head.

        Since ``(h W) · a = h (Wᵀ a)``, the attention vectors fold into the weights. ``h: [..., H]`` ->
        ``(features [..., R, K, C], scores [..., R, K, 2])``: ``x_j = W h_j``, then ``a_src · x_j`` and
        ``a_dst · x_j``.
        """
        relations, heads, channels = len(convs), self.heads, self.hidden // self.heads
        weight = cat([c.lin.weight for c in convs]).view(relations, heads, channels, -1)  # [R, K, C, H]
        att = torch.stack([cat([c.att_src for c in convs]), cat([c.att_dst for c in convs])], 2)  # [R, K, 2, C]
        lead = h.shape[:-1]
        features = F.linear(h, weight.flatten(0, 2)).view(*lead, relations, heads, channels)
        scores = F.linear(h, (att @ weight).flatten(0, 2)).view(*lead, relations, heads, 2)
        return features, scores

    def gatv2_project(self, h: Tensor, convs: list[nn.Module]) -> tuple[Tensor, Tensor, Tensor]:
        """GATv2 source and target features ``[..., R, K, C]`` and attention vectors ``[R, K, C]`` of ``convs``."""
        relations, heads, channels = len(convs), self.heads, self.hidden // self.heads
        weight = torch.cat([c.lin_l.weight for c in convs] + [c.lin_r.weight for c in convs])  # [2 * R*K*C, H]
        sources, targets = F.linear(h, weight).view(*h.shape[:-1], 2, relations, heads, channels).unbind(-4)
        return sources, targets, torch.stack([c.att.view(heads, channels) for c in convs])

    def linear_project(self, h: Tensor, convs: list[nn.Module]) -> Tensor:
        """GCN/SAGE features of the relations of ``convs``, ``h: [..., H]`` -> ``[..., R, 1, H]`` (aggregation and
        the linear map commute, so PyG's SAGE order, mean then ``lin``, gives the same result)."""
        weight = cat([c.lin_l.weight if self.kind == "sage" else c.lin.weight for c in convs])  # [R*H, H]
        return F.linear(h, weight).view(*h.shape[:-1], len(convs), 1, self.hidden)
