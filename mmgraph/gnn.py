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
  once, each stage (input projection, a GAT layer's messages, the update, the attention readout) one autograd
  ``Function`` with a written-out backward; it is much faster because every sample's graph is tiny. Tests check both
  agree to 1e-4, and their gradients too.

Missing modalities (``mask``) and padded steps (``step_mask``) are nodes without edges: they send and receive no
messages and are left out of the readout, so their features cannot change the output.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

with warnings.catch_warnings():
    # torch-geometric scripts a few classes with torch.jit.script at import time, which recent torch deprecates
    # (a DeprecationWarning on torch 2.13, a FutureWarning on 2.15): a warning about its code, not the user's.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
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
# they walk one short row at a time (4-20x slower at these sizes); per-node-type projections are N large matmuls;
# and both the attention matrices (``[i, j]`` with unit stride along ``i``) and the node-major sources (``[j, c]``
# with unit stride along ``c``) are BLAS-compatible strided views, so the aggregation ``bmm`` reads them without
# copies. Aggregating with a broadcast product and a sum instead would be as fast in isolation but materialises
# ``[N, N, B, K, C]`` temporaries of megabytes, whose page faults under glibc's malloc trimming cost more than the
# whole layer.


def _aggregate_forward(coeff: Tensor, sources: Tensor) -> Tensor:
    """``out[i, b, k, c] = Σ_r Σ_j coeff[b, r, k, i, j] * sources[j, b, r, k, c]``.

    Args:
        coeff: ``[B or 1, R, K, N (dst i), N (src j)]`` aggregation weights; any strides (a ``[B*R*K, N, N]`` view
            without copy when they allow one). A batch dim of 1 (weights shared by the batch) needs ``K = 1``.
        sources: contiguous node-major ``[N, B, R, K, C]`` per-relation, per-head source features.

    Returns:
        contiguous node-major ``[N, B, K * C]`` messages summed over relations, heads concatenated.
    """
    nodes, batch, relations, heads, channels = sources.shape
    if coeff.shape[0] == 1 and batch > 1:  # one graph for the whole batch: R matmuls [N, N] x [N, B * C]
        x = sources.permute(2, 0, 1, 3, 4).reshape(relations, nodes, batch * heads * channels)
        out = torch.bmm(coeff[0, :, 0], x)  # [R, N (i), B * C]
        return (out[0] if relations == 1 else out.sum(0)).view(nodes, batch, heads * channels)
    x = sources.permute(1, 2, 3, 0, 4).reshape(-1, nodes, channels)  # [(b, r, k), j, c], a view
    out = torch.bmm(coeff.reshape(-1, nodes, nodes), x).view(batch, relations, heads, nodes, channels)
    out = out[:, 0] if relations == 1 else out.sum(1)  # [B, K, N, C]
    return out.permute(2, 0, 1, 3).reshape(nodes, batch, heads * channels)


def _aggregate_backward(grad: Tensor, coeff: Tensor, sources: Tensor, need_coeff: bool = True
                        ) -> tuple[Tensor | None, Tensor]:
    """Gradients of :func:`_aggregate_forward`: ``grad: [N, B, K * C]`` -> ``(grad_coeff [B, R, K, N, N] or None,
    grad_sources [N, B, R, K, C])``, both strided views of contiguous ``bmm`` results."""
    nodes, batch, relations, heads, channels = sources.shape
    grad = grad.view(nodes, batch, 1, heads, channels).expand(nodes, batch, relations, heads, channels)
    if coeff.shape[0] == 1 and batch > 1:
        grad_flat = grad.permute(2, 0, 1, 3, 4).reshape(relations, nodes, batch * heads * channels)
        grad_sources = torch.bmm(coeff[0, :, 0].transpose(1, 2), grad_flat)  # [R, N (j), B * C]
        grad_sources = grad_sources.view(relations, nodes, batch, heads, channels).permute(1, 2, 0, 3, 4)
        grad_coeff = None
        if need_coeff:
            x = sources.permute(2, 0, 1, 3, 4).reshape(relations, nodes, batch * heads * channels)
            grad_coeff = torch.bmm(grad_flat, x.transpose(1, 2)).view(1, relations, 1, nodes, nodes)
        return grad_coeff, grad_sources
    grad = grad.permute(1, 2, 3, 0, 4).reshape(-1, nodes, channels)  # [(b, r, k), i, c]; a view when R = 1
    coeff_flat = coeff.reshape(-1, nodes, nodes)
    grad_sources = torch.bmm(coeff_flat.transpose(1, 2), grad)  # [(b, r, k), j, c]
    grad_sources = grad_sources.view(batch, relations, heads, nodes, channels).permute(3, 0, 1, 2, 4)
    grad_coeff = None
    if need_coeff:
        x = sources.permute(1, 2, 3, 0, 4).reshape(-1, nodes, channels)
        grad_coeff = torch.bmm(grad, x.transpose(1, 2)).view(batch, relations, heads, nodes, nodes)
    return grad_coeff, grad_sources


class _Aggregate(torch.autograd.Function):
    """Autograd wrapper of :func:`_aggregate_forward` / :func:`_aggregate_backward` (GCN, SAGE, GATv2)."""

    @staticmethod
    def forward(ctx, coeff: Tensor, sources: Tensor) -> Tensor:
        sources = sources.contiguous()
        ctx.save_for_backward(coeff, sources)
        return _aggregate_forward(coeff, sources)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor]:
        coeff, sources = ctx.saved_tensors
        return _aggregate_backward(grad, coeff, sources, ctx.needs_input_grad[0])


class _GATMessages(torch.autograd.Function):
    """All of a GAT layer's messages, every relation type at once, in one autograd node.

    Inputs: node-major ``h: [N, B, H]``, per relation ``r`` and head ``k`` the weights ``W: [R*K*C, H]`` and
    attention vectors ``a_src, a_dst: [R, K, C]`` (PyG ``GATConv.lin.weight``, ``att_src``, ``att_dst`` of the R
    relations, concatenated along dim 0: the parameters themselves when ``R = 1``), and
    ``invalid: BoolTensor[N (src j), B or 1, R, 1, N (dst i)]`` marking non-edges (None: every pair is an edge,
    e.g. a complete graph with self-loops and nothing masked).

    With ``x_j = h_j W_r``, ``e[j, b, r, k, i] = LeakyReLU(a_dst · x_i + a_src · x_j)`` and ``α = softmax_j(e)`` over
    the edges ``j -> i`` of relation ``r``, the output is ``(Σ_r Σ_j α[j, b, r, :, i] x_j -> [N, B, K*C],
    α -> [N (j), B, R, K, N (i)])``; ``α`` is returned for explanations and is not differentiable. A destination
    without any edge gets all-zero ``α``.

    Why one node: on graphs of ~6 nodes a layer is bound by per-operation overhead, not arithmetic. Since
    ``(x W) · a = x (Wᵀ a)``, the attention vectors fold into the weights and one matmul yields the features and
    both score sets; the backward is written out (four matmuls, two ``bmm``, the softmax and LeakyReLU backward and
    a few reductions and copies) instead of ~40 autograd nodes.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, att_src: Tensor, att_dst: Tensor, invalid: Tensor | None,
                negative_slope: float) -> tuple[Tensor, Tensor]:
        nodes, batch, hidden = h.shape
        relations, heads, channels = att_src.shape
        groups = relations * heads
        weight = weight.view(relations, heads, channels, hidden)
        att = torch.stack([att_src, att_dst]).unsqueeze(-1)  # [2, R, K, C, 1]
        folded = (att * weight).sum(3)  # [2 (src, dst), R, K, H]
        stacked = torch.cat([weight.reshape(groups * channels, hidden), folded.reshape(2 * groups, hidden)])
        projected = F.linear(h, stacked)  # [N, B, R*K*C + 2*R*K]
        sources = projected[..., :groups * channels].view(nodes, batch, relations, heads, channels).contiguous()
        scores = projected[..., groups * channels:].view(nodes, batch, 2, relations, heads)
        logits = h.new_empty(nodes, batch, relations, heads, nodes)  # [N (j), B, R, K, N (i)], contiguous
        torch.add(scores[:, :, 0].unsqueeze(-1), scores[:, :, 1].permute(1, 2, 3, 0), out=logits)
        logits = F.leaky_relu_(logits, negative_slope)
        if invalid is not None:
            logits.masked_fill_(invalid, float("-inf"))
        coeff = torch.softmax(logits, 0)  # over the sources j
        if invalid is not None:
            coeff.masked_fill_(invalid, 0.0)  # destinations without edges: NaN -> 0
        ctx.save_for_backward(h, weight, att, stacked, coeff, sources, logits)
        ctx.negative_slope = negative_slope
        ctx.mark_non_differentiable(coeff)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the (non-differentiable) coefficients
        return _aggregate_forward(coeff.permute(1, 2, 3, 4, 0), sources), coeff

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor | None, _grad_coeff: None) -> tuple[Tensor | None, ...]:
        h, weight, att, stacked, coeff, sources, logits = ctx.saved_tensors
        if grad is None:  # the messages were not used
            return None, None, None, None, None, None
        nodes, batch, relations, heads, channels = sources.shape
        groups, hidden = relations * heads, h.shape[-1]
        grad_coeff, grad_sources = _aggregate_backward(grad, coeff.permute(1, 2, 3, 4, 0), sources)
        grad_coeff = grad_coeff.permute(4, 0, 1, 2, 3).contiguous()  # [N (j), B, R, K, N (i)], as coeff
        grad_logits = torch._softmax_backward_data(grad_coeff, coeff, 0, coeff.dtype)
        grad_logits = torch.ops.aten.leaky_relu_backward(grad_logits, logits, ctx.negative_slope, True)
        grad_projected = grad.new_empty(nodes, batch, groups * (channels + 2))
        grad_projected[..., :groups * channels].view_as(grad_sources).copy_(grad_sources)
        grad_projected[..., groups * channels:groups * (channels + 1)].copy_(  # source scores
            torch.mv(grad_logits.view(-1, nodes), grad_logits.new_ones(nodes)).view(nodes, batch, groups))
        grad_projected[..., groups * (channels + 1):].view(nodes, batch, relations, heads).copy_(
            grad_logits.sum(0).permute(3, 0, 1, 2))  # destination scores
        flat = grad_projected.view(nodes * batch, -1)
        grad_h = torch.mm(flat, stacked).view_as(h)
        grad_stacked = torch.mm(flat.t(), h.reshape(-1, hidden))  # [R*K*C + 2*R*K, H]
        grad_folded = grad_stacked[groups * channels:].view(2, relations, heads, 1, hidden)
        grad_weight = grad_stacked[:groups * channels].view_as(weight) + (att * grad_folded).sum(0)
        grad_att = (grad_folded * weight).sum(-1)  # [2, R, K, C]
        return grad_h, grad_weight.view(-1, hidden), grad_att[0], grad_att[1], None, None


def _rows(params: Tensor, node_type: Tensor | None, node_major: bool) -> Tensor:
    """Per-node rows of per-type ``params [M, ...]``: ``params[node_type]`` (or ``params`` itself when node ``n`` is
    of type ``n``), with a broadcast batch dim after the node dim in the node-major layout."""
    rows = params if node_type is None else params[node_type]
    return rows.unsqueeze(1) if node_major else rows


def _to_types(grad: Tensor, node_type: Tensor | None, num_types: int) -> Tensor:
    """Gradient of a per-type gather ``params[node_type]``: ``grad [rows, ...]`` summed into ``[M, ...]`` by type
    (``grad`` itself when ``node_type`` is None, i.e. row ``n`` is of type ``n``)."""
    if node_type is None:
        return grad
    return grad.new_zeros(num_types, *grad.shape[1:]).index_add_(0, node_type, grad)


def _sum_rows(grad: Tensor, node_type: Tensor | None, num_types: int) -> Tensor:
    """Gradient of :func:`_rows`: ``grad`` (node-major ``[N, B, ...]`` or flat ``[rows, ...]``) -> ``[M, ...]``."""
    return _to_types(grad.sum(1) if grad.dim() == 3 else grad, node_type, num_types)


class _TypedUpdate(torch.autograd.Function):
    """``LN(h + dropout(ReLU(message + bias))) * scale + shift`` with per-node-type ``bias, scale, shift``.

    ``h, message``: node-major ``[N, B, H]`` (dense backend) or flattened ``[B*N, H]`` (pyg backend);
    ``bias, scale, shift: [M, H]`` per node type, and ``node_type: LongTensor[N or B*N]`` (None: node ``n`` is of
    type ``n``). Forward and backward are about ten kernels each, in one autograd node: the per-type affine cannot
    go into ``F.layer_norm`` (its weight is per channel only), and left to autograd the same maths costs 14 nodes
    plus the parameter gathers, whose bookkeeping dominates on tensors this small.

    The dropout mask is drawn in sample-major order (``[B, N, H]``) in both layouts, so that both backends draw the
    same mask from the same seed.
    """

    @staticmethod
    def forward(ctx, h: Tensor, message: Tensor, bias: Tensor, scale: Tensor, shift: Tensor,
                node_type: Tensor | None, dropout: float) -> Tensor:
        node_major, num_types = h.dim() == 3, bias.shape[0]
        bias, scale, shift = (_rows(p, node_type, node_major) for p in (bias, scale, shift))
        active = torch.add(message, bias).relu_()
        keep = None
        if dropout > 0:
            shape = active.shape if not node_major else (active.shape[1], active.shape[0], active.shape[2])
            keep = active.new_empty(shape).bernoulli_(1.0 - dropout).div_(1.0 - dropout)
            keep = keep.transpose(0, 1) if node_major else keep
        summed = h + (active if keep is None else active * keep)
        # LayerNorm statistics in two passes: 1.5x faster than torch.native_layer_norm's CPU kernel on [*, 64] rows
        mean = summed.mean(-1, keepdim=True)
        normed = summed - mean
        rstd = (normed * normed).mean(-1, keepdim=True).add_(1e-5).rsqrt_()
        normed.mul_(rstd)
        ctx.save_for_backward(active, keep, summed, normed, mean, rstd, scale, node_type)
        ctx.num_types = num_types
        return torch.addcmul(shift, normed, scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        active, keep, summed, normed, mean, rstd, scale, node_type = ctx.saved_tensors
        types = ctx.num_types
        grad_shift = _sum_rows(grad, node_type, types)
        grad_scale = _sum_rows(grad * normed, node_type, types)
        grad_summed = torch.ops.aten.native_layer_norm_backward(
            grad * scale, summed, summed.shape[-1:], mean, rstd, None, None, [True, False, False])[0]
        grad_active = grad_summed if keep is None else grad_summed * keep
        grad_message = torch.ops.aten.threshold_backward(grad_active, active, 0)
        return (grad_summed, grad_message, _sum_rows(grad_message, node_type, types), grad_scale, grad_shift,
                None, None)


class _TypedLinear(torch.autograd.Function):
    """Per-node-type input projection into the node-major layout: ``out[n, b] = x[b, n] W_τ(n)ᵀ + b_τ(n)``.

    Inputs: ``x: [B, N, D]``, ``node_type: LongTensor[N]`` (None: node ``n`` is of type ``n``), then the ``M``
    weights ``[H, D]`` followed by the ``M`` biases ``[H]`` (the modalities' ``nn.Linear`` parameters, passed as
    they are). Returns ``[N, B, H]``: one ``baddbmm`` of ``N`` matrices ``[B, D] x [D, H]``, reading ``x`` through a
    transposed view; the stacking and the per-type gradients stay inside this one autograd node.
    """

    @staticmethod
    def forward(ctx, x: Tensor, node_type: Tensor | None, *params: Tensor) -> Tensor:
        types = len(params) // 2
        weight, bias = torch.stack(params[:types]), torch.stack(params[types:])  # [M, H, D], [M, H]
        if node_type is not None:
            weight, bias = weight[node_type], bias[node_type]  # [N, H, D], [N, H]
        ctx.save_for_backward(x, weight, node_type)
        ctx.types = types
        return torch.baddbmm(bias.unsqueeze(1), x.transpose(0, 1), weight.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, node_type = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight).transpose(0, 1) if ctx.needs_input_grad[0] else None  # [B, N, D]
        grad_weight = torch.bmm(grad.transpose(1, 2), x.transpose(0, 1))  # [N, H, D]
        grad_weight = _to_types(grad_weight, node_type, ctx.types)  # [M, H, D]
        grad_bias = _to_types(grad.sum(1), node_type, ctx.types)  # [M, H]
        return grad_x, None, *grad_weight.unbind(0), *grad_bias.unbind(0)


class _AttentionReadout(torch.autograd.Function):
    """``Σ_n softmax_n(w · h_n + c) h_n`` over the present nodes of each sample, in one autograd node.

    Inputs: node-major ``h: [N, B, H]``, the gate's ``weight: [1, H]`` and ``bias: [1]`` (PyG
    ``AttentionalAggregation.gate_nn``), ``present: BoolTensor[N, B]`` (None: every node present). Returns
    ``(fused [B, H], weights [N, B])``; the weights are for explanations and not differentiable. The softmax runs over
    the outer node dim.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, bias: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        nodes, batch, hidden = h.shape
        scores = torch.addmv(bias, h.view(-1, hidden), weight.view(-1)).view(nodes, batch)
        weights = torch.softmax(scores, 0) if present is None else _masked_softmax(scores, present, dim=0)
        ctx.save_for_backward(h, weight, weights)
        ctx.mark_non_differentiable(weights)
        ctx.set_materialize_grads(False)
        return (weights.unsqueeze(-1) * h).sum(0), weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor | None, _grad_weights: None) -> tuple[Tensor | None, ...]:
        if grad is None:
            return None, None, None, None
        h, weight, weights = ctx.saved_tensors
        grad_scores = torch._softmax_backward_data((h * grad).sum(-1), weights, 0, weights.dtype)  # [N, B]
        grad_h = torch.addcmul(grad_scores.unsqueeze(-1) * weight, weights.unsqueeze(-1), grad)
        grad_weight = torch.mv(h.view(-1, h.shape[-1]).t(), grad_scores.view(-1)).view_as(weight)
        return grad_h, grad_weight, grad_scores.sum().view(1), None


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
        return _TypedUpdate.apply(h, message, self.type_bias, self.norm_weight, self.norm_bias, node_type,
                                  self.dropout if self.training else 0.0)

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
            # the parameters go in as they are (no view or stack nodes for autograd to walk) when R = 1
            weight = _cat([c.lin.weight for c in convs])  # [R*K*C, H]
            att_src, att_dst = _cat([c.att_src for c in convs]), _cat([c.att_dst for c in convs])  # [R, K, C]
            invalid = None if complete else ~adjacency.permute(3, 0, 1, 2).unsqueeze(3)  # [N (j), B, R, 1, N (i)]
            message, coeff = _GATMessages.apply(h, weight, att_src, att_dst, invalid, convs[0].negative_slope)
            return message, coeff.permute(1, 2, 3, 4, 0)
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
        return _Aggregate.apply(coeff, sources), coeff.expand(batch, -1, -1, -1, -1)

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
            gate = self.aggr.gate_nn
            fused, weights = _AttentionReadout.apply(h, gate.weight, gate.bias, present)
            return fused, weights.t()
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
        # a stacked [B, M, D] tensor is already the node tensor: no need to split and concatenate it again
        stacked = inputs if isinstance(inputs, Tensor) and inputs.dim() == 3 else None
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
        sequences = [x if x.dim() == 3 else x.unsqueeze(1) for x in inputs.values()]  # [B, T_m, d_m]
        if len({x.shape[-1] for x in sequences}) == 1:
            # one batched projection, N matmuls [B, D] x [D, H]: node n uses its type's weights
            x = stacked if stacked is not None else torch.cat(sequences, dim=1)  # [B, N, D]
            if node_mask is not None:
                x = torch.where(node_mask.unsqueeze(-1), x, torch.zeros_like(x))
            node_type = layout.node_type if layout.num_nodes != len(self.modalities) else None
            projections = self.input_proj.values()
            h = _TypedLinear.apply(x, node_type, *[p.weight for p in projections], *[p.bias for p in projections])
        else:
            projected = []
            for m, (name, x) in enumerate(zip(self.modalities, sequences)):
                if node_mask is not None:
                    present = node_mask[:, layout.node_type == m].unsqueeze(-1)  # [B, T_m, 1]
                    x = torch.where(present, x, torch.zeros_like(x))
                projected.append(self.input_proj[name](x.transpose(0, 1)))  # [T_m, B, H]
            h = torch.cat(projected, dim=0)
        return h, node_mask, layout

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
