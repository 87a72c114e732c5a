"""MultiModalGNN: modality embeddings as nodes of a heterogeneous graph, fused by GCN/GAT/SAGE layers and a readout.

Per sample, every modality is a node (or ``T`` nodes when given as a sequence ``[B, T, d]``). A layer updates node
``i`` of type ``τ(i)`` as

.. math::

    m_i = \\sum_{r \\in \\mathcal{R}} \\mathrm{conv}_r(H, E_r)_i + b_{τ(i)}, \\qquad
    h_i' = \\mathrm{LN}_{τ(i)}\\big(h_i + \\mathrm{dropout}(\\mathrm{ReLU}(m_i))\\big),

where ``conv_r`` is one of ``GCNConv``, ``GATConv``, ``GATv2Conv``, ``SAGEConv`` with its own parameters per relation
type ``r`` and edges ``E_r`` (self-loops on every destination node included), ``b_τ`` and the LayerNorm affine are
per node type, and the first ``h`` is a per-modality linear projection. A readout (mean, max, sum or attention) over
the present nodes gives the fused ``[B, hidden]`` vector.

Two backends run the same parameters (identical ``state_dict`` keys, so either can load the other's weights):

* ``backend="pyg"`` flattens the batch to ``B * N`` nodes, builds every relation's ``edge_index`` with tensor ops
  (no per-sample loop) and runs the real ``torch_geometric.nn.HeteroConv`` of PyG convolutions, then a
  ``torch_geometric.nn.aggr`` readout;
* ``backend="dense"`` (default) computes the same maths on node-major ``[N, B, H]`` tensors, all relation types at
  once, in plain PyTorch autograd; it is much faster because every sample's graph is tiny. Tests check both agree to
  1e-4, and their gradients too.

Missing modalities (``mask``) and padded steps (``step_mask``) are nodes without edges: they send and receive no
messages and are left out of the readout, so their features cannot change the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, HeteroConv, SAGEConv
from torch_geometric.nn.aggr import AttentionalAggregation, MaxAggregation, MeanAggregation, SumAggregation
from torch_geometric.utils import degree

from mmgraph.graph import GraphLayout, ModalityGraph, Relation

CONVS = ("gcn", "gat", "gatv2", "sage")
READOUTS = ("mean", "max", "sum", "attention")
BACKENDS = ("dense", "pyg")
NODE = "node"  # the single PyG node type of the flattened batch; modality types live in `node_type`


def _masked_softmax(scores: Tensor, valid: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``valid``; slices with nothing valid give all zeros.

    Invalid entries get ``-inf`` before the softmax, except in all-invalid slices, which keep their scores so that
    neither the value nor its gradient is NaN, and are then zeroed by the mask. ``valid`` may be smaller than
    ``scores`` (broadcast, e.g. without the heads dim): the ``-inf`` offsets are built at its size and added once,
    so the full-size tensor sees three ops (add, softmax, multiply) instead of five.
    """
    skip = ~valid & valid.any(dim=dim, keepdim=True)  # invalid entries of slices with something valid
    offset = torch.zeros(skip.shape, dtype=scores.dtype, device=scores.device).masked_fill_(skip, float("-inf"))
    return torch.softmax(scores + offset, dim=dim) * valid


# The dense backend keeps node states NODE-MAJOR, ``[N, B, H]``, and attention logits ``[N (src j), B, R, K,
# N (dst i)]``. The softmax over a destination's sources and the readout over a sample's nodes then reduce over the
# OUTER dim, which the CPU kernels vectorise across the batch, instead of over an innermost dim of ~6 entries, which
# they walk one short row at a time (4-20x slower at these sizes); and both the attention matrices (``[i, j]`` with
# unit stride along ``i``) and the node-major sources (``[j, c]`` with unit stride along ``c``) are BLAS-compatible
# strided views, so the aggregation ``bmm`` reads them without copies. Everything is plain PyTorch autograd.


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


def _rows(params: Tensor, node_type: Tensor | None, node_major: bool) -> Tensor:
    """Per-node rows of per-type ``params [M, ...]``: ``params[node_type]`` (or ``params`` itself when node ``n`` is
    of type ``n``), with a broadcast batch dim after the node dim in the node-major layout."""
    rows = params if node_type is None else params[node_type]
    return rows.unsqueeze(1) if node_major else rows


def _stack(tensors: list[Tensor]) -> Tensor:
    """``torch.stack`` that is a view (no copy, no backward op) for the common single relation type."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _cat(tensors: list[Tensor]) -> Tensor:
    """``torch.cat`` along dim 0 that is the tensor itself for the common single relation type."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _make_conv(conv: str, hidden: int, heads: int) -> nn.Module:
    # Self-loops come from the graph layout (only on a relation's destination nodes) and biases are per node type,
    # so every conv runs without its own self-loops and bias: then a node that is not a destination of relation r
    # gets exactly zero from r, in both backends.
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
    """

    def __init__(self, relation_types: tuple[str, ...], num_types: int, hidden: int, conv: str, heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.relation_types, self.kind, self.hidden, self.dropout = relation_types, conv, hidden, dropout
        self.heads = heads if conv in ("gat", "gatv2") else 1
        self.conv = HeteroConv({(NODE, rel, NODE): _make_conv(conv, hidden, heads) for rel in relation_types},
                               aggr="sum")
        self.type_bias = nn.Parameter(torch.empty(num_types, hidden))
        self.norm_weight = nn.Parameter(torch.empty(num_types, hidden))
        self.norm_bias = nn.Parameter(torch.empty(num_types, hidden))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self._convs():
            conv.reset_parameters()
        nn.init.zeros_(self.type_bias)
        nn.init.ones_(self.norm_weight)
        nn.init.zeros_(self.norm_bias)

    def _convs(self) -> list[nn.Module]:
        return [self.conv.convs[(NODE, rel, NODE)] for rel in self.relation_types]

    def extra_repr(self) -> str:
        return f"{self.kind}, hidden={self.hidden}, heads={self.heads}, relations={list(self.relation_types)}"

    def update(self, h: Tensor, message: Tensor, node_type: Tensor | None) -> Tensor:
        """``LN_τ(h + dropout(ReLU(message + b_τ)))``.

        Args:
            h, message: node-major ``[N, B, H]`` (dense backend) or flattened ``[B * N, H]`` (pyg backend).
            node_type: the type of each row of the node dim (``[N]`` or ``[B * N]``), or None when node ``n`` is
                of type ``n`` (static node-major layout): then the per-type parameters broadcast without a gather.
        """
        node_major = h.dim() == 3
        bias, scale, shift = (_rows(p, node_type, node_major) for p in (self.type_bias, self.norm_weight,
                                                                        self.norm_bias))
        active = torch.relu(message + bias)
        if self.training and self.dropout > 0:
            # the mask is drawn sample-major ([B, N, H]) in both layouts: both backends draw it from the same seed
            shape = (active.shape[1], active.shape[0], active.shape[2]) if node_major else active.shape
            keep = active.new_empty(shape).bernoulli_(1.0 - self.dropout).div_(1.0 - self.dropout)
            active = active * (keep.transpose(0, 1) if node_major else keep)
        # the per-type affine cannot go into F.layer_norm (its weight is per channel only)
        return torch.addcmul(shift, F.layer_norm(h + active, h.shape[-1:]), scale)

    # ------------------------------------------------------------------ dense backend
    def dense_messages(self, h: Tensor, adjacency: Tensor, is_dst: Tensor, complete: bool = False
                       ) -> tuple[Tensor, Tensor]:
        """All relations' messages at once on dense node-major tensors.

        Args:
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
        convs = self._convs()
        if not convs:
            return torch.zeros_like(h), h.new_zeros(batch, 0, 1, num_nodes, num_nodes)
        heads, channels, relations = self.heads, self.hidden // self.heads, len(convs)
        if self.kind == "gat":
            sources, score_src, score_dst = self._gat_project(h)  # [N, B, R, K, C], [N, B, R, K] twice
            # [N (j), B, R, K, N (i)]: the softmax runs over the outer source dim
            logits = F.leaky_relu(score_src.unsqueeze(-1) + score_dst.permute(1, 2, 3, 0),
                                  convs[0].negative_slope)
            if complete:
                coeff = torch.softmax(logits, 0)
            else:
                coeff = _masked_softmax(logits, adjacency.permute(3, 0, 1, 2).unsqueeze(3), dim=0)
            coeff = coeff.permute(1, 2, 3, 4, 0)  # [B, R, K, N (i), N (j)], a view
            return _aggregate(coeff, sources), coeff
        if self.kind == "gatv2":
            weight = torch.cat([c.lin_l.weight for c in convs] + [c.lin_r.weight for c in convs])  # [2 * R*K*C, H]
            sources, targets = F.linear(h, weight).view(num_nodes, batch, 2, relations, heads, channels).unbind(2)
            att = _stack([c.att for c in convs]).view(relations, heads, 1, channels)
            # [N (j), B, R, K, N (i), C]: the softmax runs over the outer source dim
            pair = F.leaky_relu(sources.unsqueeze(-2) + targets.permute(1, 2, 3, 0, 4), convs[0].negative_slope)
            valid = adjacency.permute(3, 0, 1, 2).unsqueeze(3)  # [N (j), B or 1, R, 1, N (i)]
            coeff = _masked_softmax((pair * att).sum(-1), valid, dim=0).permute(1, 2, 3, 4, 0)  # [B, R, K, N, N]
        else:
            # SAGE: mean over in-neighbours (PyG applies lin after the mean; by linearity the order is immaterial).
            # GCN: w_ij = 1 / sqrt(deg_i deg_j), deg counting the self-loop (a virtual one off the relation's types).
            weight = torch.cat([c.lin_l.weight if self.kind == "sage" else c.lin.weight for c in convs])  # [R*H, H]
            sources = F.linear(h, weight).view(num_nodes, batch, relations, 1, -1)
            adj = adjacency.to(h.dtype)
            if self.kind == "sage":
                coeff = adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
            else:
                inv_sqrt = (adj.sum(-1) + (~is_dst).to(h.dtype)).clamp(min=1.0).rsqrt()  # [B, R, N]
                coeff = adj * inv_sqrt.unsqueeze(-1) * inv_sqrt.unsqueeze(-2)
            coeff = coeff.unsqueeze(2)  # [B or 1, R, 1, N, N]
        return _aggregate(coeff, sources), coeff.expand(batch, -1, -1, -1, -1)

    def _gat_project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """GAT features and attention scores of every relation and head from one matmul.

        Since ``(h W) · a = h (Wᵀ a)``, the attention vectors fold into the weights. ``h: [..., H]`` ->
        ``(sources [..., R, K, C], score_src [..., R, K], score_dst [..., R, K])``.
        """
        convs = self._convs()
        relations, heads, channels = len(convs), self.heads, self.hidden // self.heads
        weight = _cat([c.lin.weight for c in convs]).view(relations, heads, channels, -1)  # [R, K, C, H]
        att = torch.stack([_cat([c.att_src for c in convs]), _cat([c.att_dst for c in convs])])  # [2, R, K, C]
        folded = (att.unsqueeze(-1) * weight).sum(3)  # [2 (src, dst), R, K, H]
        projected = F.linear(h, torch.cat([weight.flatten(0, 2), folded.flatten(0, 2)]))  # [..., R*K*C + 2*R*K]
        lead = h.shape[:-1]
        sources = projected[..., :relations * heads * channels].reshape(*lead, relations, heads, channels)
        score_src, score_dst = projected[..., relations * heads * channels:].reshape(
            *lead, 2, relations, heads).unbind(-3)
        return sources, score_src, score_dst

    # ------------------------------------------------------------------ pyg backend
    def pyg_messages(self, x: Tensor, edge_index: Mapping[str, Tensor], is_dst_flat: Tensor) -> Tensor:
        """Messages with the real PyG ``HeteroConv``.

        Args:
            x: ``[B * N, H]`` flattened node states.
            edge_index: ``{relation: LongTensor[2, E]}`` over the flattened nodes.
            is_dst_flat: ``BoolTensor[R, B * N]`` (GCN normalisation only).
        """
        if not self.relation_types:
            return torch.zeros_like(x)
        edges = {(NODE, rel, NODE): edge_index[rel] for rel in self.relation_types}
        if self.kind != "gcn":
            return self.conv({NODE: x}, edges)[NODE]
        weights = {}
        for r, rel in enumerate(self.relation_types):
            src, dst = edge_index[rel]
            deg = degree(dst, x.shape[0], dtype=x.dtype) + (~is_dst_flat[r]).to(x.dtype)
            inv_sqrt = deg.clamp(min=1.0).rsqrt()
            weights[(NODE, rel, NODE)] = inv_sqrt[src] * inv_sqrt[dst]
        return self.conv({NODE: x}, edges, edge_weight_dict=weights)[NODE]


class GraphReadout(nn.Module):
    """Pool the present nodes of each sample into one vector: ``mean | max | sum | attention``.

    ``attention`` is ``Σ_i softmax_i(w·h_i + c) h_i`` over present nodes (PyG ``AttentionalAggregation``).
    """

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "attention":
            self.aggr = AttentionalAggregation(gate_nn=nn.Linear(hidden, 1))
        else:
            self.aggr = {"mean": MeanAggregation, "max": MaxAggregation, "sum": SumAggregation}[kind]()

    def reset_parameters(self) -> None:
        self.aggr.reset_parameters()

    def dense(self, h: Tensor, node_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``h: [N, B, H]`` node-major, ``node_mask: [B, N]`` (None = all present) -> ``(fused [B, H], node
        weights [B, N])``. Every reduction runs over the outer node dim."""
        present = None if node_mask is None else node_mask.t()  # [N, B]
        if self.kind == "attention":
            scores = self.aggr.gate_nn(h).squeeze(-1)  # [N, B]
            weights = torch.softmax(scores, 0) if present is None else _masked_softmax(scores, present, dim=0)
            return (weights.unsqueeze(-1) * h).sum(0), weights.t()
        if self.kind == "max":
            if present is None:
                fused = h.amax(0)
                winners = h == fused
            else:
                fused = h.masked_fill(~present.unsqueeze(-1), float("-inf")).amax(0)
                fused = torch.where(present.any(0).unsqueeze(-1), fused, torch.zeros_like(fused))
                winners = (h == fused) & present.unsqueeze(-1)
            return fused, winners.to(h.dtype).mean(-1).t()  # weight = share of channels where a node is the max
        if present is None:
            weights = h.new_full(h.shape[1::-1], 1.0 / h.shape[0])
            return (h.mean(0) if self.kind == "mean" else h.sum(0)), weights
        count = node_mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)  # [B, 1]
        summed = (h * present.unsqueeze(-1)).sum(0)
        return (summed / count if self.kind == "mean" else summed), node_mask.to(h.dtype) / count

    def pyg(self, x: Tensor, node_mask: Tensor) -> Tensor:
        """``x: [B * N, H]`` flattened, ``node_mask: [B, N]`` -> ``[B, H]`` via ``torch_geometric.nn.aggr``."""
        batch, num_nodes = node_mask.shape
        flat = node_mask.reshape(-1)
        index = torch.arange(batch, device=x.device).repeat_interleave(num_nodes)[flat]
        return self.aggr(x[flat], index, dim_size=batch)


class MultiModalGNN(nn.Module):
    """Graph-based multimodal fusion: per-sample modality graph -> heterogeneous GNN -> readout.

    Args:
        modalities: ``{name: input dim}``; the node types, in the order of ``[B, M, ...]`` tensors and masks.
        hidden: node and output width ``H``.
        layers: number of message-passing layers (0 = projections and readout only).
        conv: ``"gcn" | "gat" | "gatv2" | "sage"``.
        heads: attention heads for GAT/GATv2 (``hidden % heads == 0``); ignored by GCN/SAGE.
        relations: ``"complete"``, ``"star"``, ``"star:<centre>"``, ``"chain"``, a list of ``(src, relation, dst)``
            triples, a :class:`networkx.DiGraph`, or a :class:`~mmgraph.graph.ModalityGraph`. See
            :class:`~mmgraph.graph.ModalityGraph`.
        readout: ``"mean" | "max" | "sum" | "attention"``.
        dropout: dropout on each layer's update.
        backend: ``"dense"`` (batched tensor maths, fast) or ``"pyg"`` (PyG ``HeteroConv`` on a flattened batch);
            same parameters, same output. May be changed after construction.
        temporal_window: for sequence modalities ``[B, T, d]``: each step is a node and steps up to ``k`` apart are
            joined by ``"next"``/``"prev"`` relations; 0 = no temporal edges (steps are joined only across
            modalities, by time alignment).
        validate: ``"full"`` checks values too (NaN/Inf, samples with nothing present), which costs a device sync;
            ``"shapes"`` checks only shapes/dtypes/keys; ``"auto"`` = full on CPU, shapes on CUDA.

    Shapes:
        ``forward(inputs, mask, step_mask)`` with ``inputs = {m: Tensor[B, d_m] | Tensor[B, T_m, d_m]}`` (or a
        stacked ``Tensor[B, M, D]`` when all dims equal ``D``), ``mask: BoolTensor[B, M]`` or ``{m: BoolTensor[B]}``
        (True = present), ``step_mask: {m: BoolTensor[B, T_m]}`` -> ``Tensor[B, hidden]``.

    Example:
        >>> gnn = MultiModalGNN({"text": 300, "image": 512, "audio": 74}, hidden=64, conv="gat", heads=4)
        >>> fused = gnn({"text": t, "image": i, "audio": a})          # [B, 64]
        >>> fused = gnn.fuse(nodes, mask)                               # nodes [B, M, D], mask [B, M]
    """

    def __init__(
        self,
        modalities: Mapping[str, int],
        hidden: int = 64,
        layers: int = 2,
        conv: str = "gat",
        heads: int = 4,
        relations: str | list[Relation] | nx.DiGraph | ModalityGraph = "complete",
        readout: str = "attention",
        dropout: float = 0.0,
        backend: str = "dense",
        temporal_window: int = 0,
        validate: Literal["auto", "full", "shapes"] = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(modalities, Mapping) or not modalities:
            raise TypeError("modalities: expected a non-empty dict {name: input dim}, "
                            f"got {type(modalities).__name__} {modalities!r}")
        for name, dim in modalities.items():
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"modalities[{name!r}]: expected a positive int input dim, got {dim!r}")
        _check_choice("conv", conv, CONVS)
        _check_choice("readout", readout, READOUTS)
        _check_choice("backend", backend, BACKENDS)
        _check_choice("validate", validate, ("auto", "full", "shapes"))
        for arg, value, low in (("hidden", hidden, 1), ("layers", layers, 0), ("heads", heads, 1),
                                ("temporal_window", temporal_window, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")
        if conv in ("gat", "gatv2") and hidden % heads:
            raise ValueError(f"hidden: must be divisible by heads for conv={conv!r}; got hidden={hidden}, "
                             f"heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")

        self.modalities: dict[str, int] = dict(modalities)
        names = list(self.modalities)
        if isinstance(relations, ModalityGraph):
            if list(relations.modalities) != names:
                raise ValueError(f"relations: graph modalities {list(relations.modalities)} differ from "
                                 f"modalities {names}")
            self.graph = relations
        else:
            self.graph = ModalityGraph(names, relations)
        self.hidden, self.num_layers, self.conv_type, self.heads = hidden, layers, conv, heads
        self.readout_type, self.dropout, self.backend = readout, dropout, backend
        self.temporal_window, self.validate = temporal_window, validate
        self.relation_types = self.graph.all_relation_types(temporal_window)

        self.input_proj = nn.ModuleDict({name: nn.Linear(dim, hidden) for name, dim in self.modalities.items()})
        self.layers = nn.ModuleList(
            HeteroGNNLayer(self.relation_types, len(names), hidden, conv, heads, dropout) for _ in range(layers))
        self.readout = GraphReadout(readout, hidden)

    @property
    def out_dim(self) -> int:
        """Width of the fused output (``hidden``)."""
        return self.hidden

    def reset_parameters(self) -> None:
        for proj in self.input_proj.values():
            proj.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.readout.reset_parameters()

    def extra_repr(self) -> str:
        return (f"modalities={self.modalities}, conv={self.conv_type!r}, layers={self.num_layers}, "
                f"readout={self.readout_type!r}, backend={self.backend!r}, relations={list(self.relation_types)}")

    # ------------------------------------------------------------------ public entry points
    def forward(self, inputs: Mapping[str, Tensor] | Tensor, mask: Tensor | Mapping[str, Tensor] | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> Tensor:
        """Fuse a batch. See the class docstring for shapes. Returns ``Tensor[B, hidden]``."""
        h, node_mask, layout = self._embed(inputs, mask, step_mask)
        if self.backend == "dense":
            fused, _, _ = self._dense(h, node_mask, layout)
            return fused
        return self._pyg(h, node_mask, layout)

    def fuse(self, nodes: Tensor, mask: Tensor | None = None) -> Tensor:
        """The common fusion interface: ``nodes: [B, M, D]`` (or ``[B, M, T, D]`` sequences), ``mask: [B, M]``
        (or ``[B, M, T]``) -> ``[B, hidden]``."""
        if not isinstance(nodes, Tensor) or nodes.dim() not in (3, 4):
            raise ValueError(f"nodes: expected a Tensor [B, M, D] or [B, M, T, D], got "
                             f"{tuple(nodes.shape) if isinstance(nodes, Tensor) else type(nodes).__name__}")
        step_mask = None
        if mask is not None and isinstance(mask, Tensor) and mask.dim() == 3:
            if nodes.dim() != 4 or mask.shape != nodes.shape[:3]:
                raise ValueError(f"mask: expected shape {tuple(nodes.shape[:3])}, got {tuple(mask.shape)}")
            step_mask = {name: mask[:, m] for m, name in enumerate(self.modalities)}
            mask = mask.any(-1)
        return self(nodes, mask, step_mask)

    @torch.no_grad()
    def explain(self, inputs: Mapping[str, Tensor] | Tensor, mask: Tensor | Mapping[str, Tensor] | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> dict:
        """Per-sample edge attention and readout weights.

        Returns a dict with
            ``node_names`` (N names), ``node_type`` (``LongTensor[N]``), ``relation_types`` (R names),
            ``node_mask`` (``BoolTensor[B, N]``),
            ``edges``: one ``Tensor[B, R, N, N, K]`` per layer, ``[b, r, i, j, k]`` = weight of the message
            ``j -> i`` under relation ``r`` (head ``k``): attention for GAT/GATv2, normalised aggregation weights
            for GCN/SAGE; 0 where there is no edge,
            ``readout``: ``Tensor[B, N]`` node weights in the readout, and
            ``modality_weights``: ``{modality: Tensor[B]}`` readout weight summed over each modality's nodes.
        """
        h, node_mask, layout = self._embed(inputs, mask, step_mask)
        _, edges, readout = self._dense(h, node_mask, layout)
        if node_mask is None:
            node_mask = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        return {
            "node_names": list(layout.node_names),
            "node_type": layout.node_type,
            "relation_types": list(layout.relation_types),
            "node_mask": node_mask,
            "edges": edges,
            "readout": readout,
            "modality_weights": {name: readout[:, layout.node_type == m].sum(1)
                                 for m, name in enumerate(self.modalities)},
        }

    # ------------------------------------------------------------------ internals
    def _dense(self, h: Tensor, node_mask: Tensor | None, layout: GraphLayout
               ) -> tuple[Tensor, list[Tensor], Tensor]:
        """``h: [N, B, H]`` node-major. ``node_mask=None`` means every node is present: the graph is then the same
        for every sample and the adjacency stays ``[1, R, N, N]``."""
        if node_mask is None:
            adjacency = layout.adjacency.unsqueeze(0)
        else:
            adjacency = self.graph.dense_adjacency(node_mask, layout)  # [B, R, N, N]
            keep = node_mask.t().unsqueeze(-1).to(h.dtype)  # [N, B, 1]
        # one node per modality, in modality order: node n is of type n and per-type parameters need no gather
        node_type = None if layout.num_nodes == len(self.modalities) else layout.node_type
        complete = node_mask is None and layout.complete
        edges = []
        for layer in self.layers:
            message, coeff = layer.dense_messages(h, adjacency, layout.is_dst, complete)
            h = layer.update(h, message, node_type)
            if node_mask is not None:
                h = h * keep
            edges.append(coeff.permute(0, 1, 3, 4, 2))  # [B, R, N (dst), N (src), K], a view
        fused, weights = self.readout.dense(h, node_mask)
        return fused, edges, weights

    def _pyg(self, h: Tensor, node_mask: Tensor | None, layout: GraphLayout) -> Tensor:
        num_nodes, batch, hidden = h.shape
        if node_mask is None:
            node_mask = torch.ones(batch, num_nodes, dtype=torch.bool, device=h.device)
        edge_index = self.graph.edge_index_dict(node_mask, layout, homogeneous=True)
        node_type = layout.node_type.repeat(batch)  # [B * N]
        is_dst = layout.is_dst.repeat(1, batch)  # [R, B * N]
        keep = node_mask.reshape(-1, 1).to(h.dtype)
        x = h.transpose(0, 1).reshape(batch * num_nodes, hidden)  # node b * N + n, as PyG's Batch lays it out
        for layer in self.layers:
            x = layer.update(x, layer.pyg_messages(x, edge_index, is_dst), node_type) * keep
        return self.readout.pyg(x, node_mask)

    def _embed(self, inputs, mask, step_mask) -> tuple[Tensor, Tensor | None, GraphLayout]:
        """Validate, project each modality to ``H`` and lay the nodes out: node-major ``h [N, B, H]``,
        ``node_mask [B, N]`` (None when no mask was given: every node present)."""
        inputs = self._as_dict(inputs)
        batch = _check_inputs(inputs, self.modalities)
        steps = [x.shape[1] if x.dim() == 3 else 1 for x in inputs.values()]
        device = next(iter(inputs.values())).device
        mask = _check_mask(mask, self.modalities, batch, device)
        step_mask = _check_step_mask(step_mask, inputs, batch)
        layout = self.graph.layout(steps, self.temporal_window, device=device)
        all_present = mask is None and step_mask is None  # then the graph is the same for every sample
        check_values = self.validate == "full" or (self.validate == "auto" and device.type == "cpu")
        node_mask = None
        if check_values or not all_present:
            node_mask = self.graph.node_mask(layout, mask, batch, step_mask)
        if check_values:
            _check_values(inputs, node_mask, layout, self.modalities)
        if all_present:
            node_mask = None
        # one call of each modality's nn.Linear (a module call, so that int8 dynamic quantisation can swap it)
        projected = []
        for (name, x), first in zip(inputs.items(), layout.offsets()):
            x = x if x.dim() == 3 else x.unsqueeze(1)  # [B, T_m, d_m]
            if node_mask is not None:
                present = node_mask[:, first:first + x.shape[1]].unsqueeze(-1)  # [B, T_m, 1]
                x = torch.where(present, x, torch.zeros_like(x))
            projected.append(self.input_proj[name](x.transpose(0, 1)))  # [T_m, B, H]
        return torch.cat(projected, dim=0), node_mask, layout

    def _as_dict(self, inputs) -> dict[str, Tensor]:
        if isinstance(inputs, Tensor):
            dims = set(self.modalities.values())
            if inputs.dim() not in (3, 4) or inputs.shape[1] != len(self.modalities):
                raise ValueError(f"inputs: a stacked tensor must be [B, M, D] or [B, M, T, D] with "
                                 f"M={len(self.modalities)}, got {tuple(inputs.shape)}")
            if len(dims) != 1 or inputs.shape[-1] not in dims:
                raise ValueError(f"inputs: a stacked tensor needs every modality of the same dim; modalities are "
                                 f"{self.modalities}, got feature dim {inputs.shape[-1]}")
            return dict(zip(self.modalities, inputs.unbind(1)))
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs: expected a dict {{modality: Tensor}} or a Tensor [B, M, D], "
                            f"got {type(inputs).__name__}")
        missing = [m for m in self.modalities if m not in inputs]
        unknown = [k for k in inputs if k not in self.modalities]
        if missing or unknown:
            raise ValueError(f"inputs: expected keys {list(self.modalities)}; missing {missing}, unknown {unknown}")
        return {m: inputs[m] for m in self.modalities}


# ---------------------------------------------------------------------- validation at the boundary
def _check_choice(arg: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{arg}: expected one of {list(choices)}, got {value!r}")


def _check_inputs(inputs: Mapping[str, Tensor], dims: Mapping[str, int]) -> int:
    batch = None
    for name, x in inputs.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{name!r}]: expected a Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"inputs[{name!r}]: expected a floating-point tensor, got dtype {x.dtype} "
                            "(encode integer data, e.g. token ids, before fusion)")
        if x.dim() not in (2, 3) or x.shape[-1] != dims[name]:
            raise ValueError(f"inputs[{name!r}]: expected shape [B, {dims[name]}] or [B, T, {dims[name]}], "
                             f"got {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[1] == 0:
            raise ValueError(f"inputs[{name!r}]: expected at least one time step, got shape {tuple(x.shape)}")
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            sizes = {k: v.shape[0] for k, v in inputs.items()}
            raise ValueError(f"inputs: batch sizes disagree: {sizes}")
    if batch == 0:
        raise ValueError("inputs: empty batch (B = 0)")
    return batch


def _check_mask(mask, modalities: Mapping[str, int], batch: int, device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    if isinstance(mask, Mapping):
        unknown = [k for k in mask if k not in modalities]
        if unknown:
            raise ValueError(f"mask: unknown modality keys {unknown}; expected a subset of {list(modalities)}")
        for name, value in mask.items():
            if not isinstance(value, Tensor) or value.dtype != torch.bool or tuple(value.shape) != (batch,):
                raise ValueError(f"mask[{name!r}]: expected BoolTensor of shape ({batch},), got "
                                 f"{_describe(value)}")
        full = torch.ones(batch, dtype=torch.bool, device=device)
        return torch.stack([mask.get(name, full) for name in modalities], dim=1)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask: expected a BoolTensor [B, M] or a dict of BoolTensor [B], got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected dtype torch.bool (True = present), got {mask.dtype}")
    if tuple(mask.shape) != (batch, len(modalities)):
        raise ValueError(f"mask: expected shape ({batch}, {len(modalities)}) = [B, M] in the order "
                         f"{list(modalities)}, got {tuple(mask.shape)}")
    return mask


def _check_step_mask(step_mask, inputs: Mapping[str, Tensor], batch: int) -> dict[str, Tensor] | None:
    if step_mask is None:
        return None
    if not isinstance(step_mask, Mapping):
        raise TypeError(f"step_mask: expected a dict {{modality: BoolTensor[B, T]}}, got {type(step_mask).__name__}")
    for name, value in step_mask.items():
        if name not in inputs:
            raise ValueError(f"step_mask: unknown modality {name!r}; expected one of {list(inputs)}")
        x = inputs[name]
        expected = (batch, x.shape[1] if x.dim() == 3 else 1)
        if not isinstance(value, Tensor) or value.dtype != torch.bool or tuple(value.shape) != expected:
            raise ValueError(f"step_mask[{name!r}]: expected BoolTensor of shape {expected}, got {_describe(value)}")
    return dict(step_mask)


def _check_values(inputs: Mapping[str, Tensor], node_mask: Tensor, layout: GraphLayout,
                  modalities: Mapping[str, int]) -> None:
    for m, (name, x) in enumerate(inputs.items()):
        x = x if x.dim() == 3 else x.unsqueeze(1)
        present = node_mask[:, layout.node_type == m]  # [B, T_m]
        bad = ~torch.isfinite(x).all(-1) & present
        if bool(bad.any()):
            sample = int(bad.any(-1).nonzero()[0, 0])
            raise ValueError(f"inputs[{name!r}]: NaN or Inf in a present entry (sample {sample}); mark missing "
                             "modalities in `mask` instead")
    empty = ~node_mask.any(1)
    if bool(empty.any()):
        samples = empty.nonzero()[:, 0].tolist()[:10]
        raise ValueError(f"mask: every modality of sample(s) {samples} is masked; each sample needs at least one "
                         f"present modality among {list(modalities)}")


def _describe(value) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def explanation_to_networkx(explanation: Mapping, sample: int = 0, layer: int = -1, head: int | None = None,
                            min_weight: float = 0.0) -> nx.DiGraph:
    """One sample's explained graph as a :class:`networkx.DiGraph` for plotting.

    Nodes carry ``modality`` and ``readout`` (weight); edges ``j -> i`` carry ``relation`` and ``weight`` (mean over
    heads unless ``head`` is given). Absent nodes are left out; self-loops are kept.
    """
    coeff = explanation["edges"][layer][sample]  # [R, N, N, K]
    coeff = coeff.mean(-1) if head is None else coeff[..., head]
    names, present = explanation["node_names"], explanation["node_mask"][sample]
    graph = nx.DiGraph()
    for n, name in enumerate(names):
        if bool(present[n]):
            graph.add_node(name, readout=float(explanation["readout"][sample, n]),
                           modality=int(explanation["node_type"][n]))
    for r, rel in enumerate(explanation["relation_types"]):
        dst, src = (coeff[r] > min_weight).nonzero(as_tuple=True)
        for i, j in zip(dst.tolist(), src.tolist()):
            graph.add_edge(names[j], names[i], relation=rel, weight=float(coeff[r, i, j]))
    return graph
