"""The readout: pool the present nodes of each sample into one vector
(``mean | max | sum | attention | concat | concat_attention``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.aggr import AttentionalAggregation, MaxAggregation, MeanAggregation, SumAggregation

from mmgraph.gnn.layer import masked_softmax


class GraphReadout(nn.Module):
    """Pool the present nodes of each sample into one vector: ``mean | max | sum | attention | concat |
    concat_attention``.

    ``attention`` is ``Σ_i softmax_i(w·h_i + c) h_i`` over present nodes (PyG ``AttentionalAggregation``).
    ``concat`` keeps modality identity: the same attention pooling within each modality's present nodes
    (``p_m = Σ_{i ∈ m} softmax_{i ∈ m}(w·h_i + c) h_i``), a learned "missing" vector ``e_m`` for a modality with no
    present node, and ``P([p_1 || .. || p_M])`` with ``P(x) = W x + b + W_2 ReLU(W_1 x + b_1) + b_2``
    (:class:`ConcatProjection`: a linear map plus a one-hidden-layer MLP, so the fused vector never knows less than
    early fusion of the modality states; with ``layers=0`` it is early fusion of the projected inputs).
    ``concat_attention`` adds the ``attention`` readout of all present nodes as one more slot,
    ``P([p_1 || .. || p_M || p_all])``, so it knows what either readout knows. (The linear map alone left every
    interaction between modalities to message passing and stalled at chance on one split of synthetic-interaction
    under modality dropout; the MLP alone memorised or stalled in some synthetic-temporal runs; docs/design.md,
    "Issue 21", has the figures.) ``concat`` is the default of
    :class:`~mmgraph.gnn.MultiModalGNN` (docs/design.md, "Issue 21"). The module is PyG's aggregation (same
    ``state_dict`` on every path); :meth:`node_major` computes the same maths on the dense and sparse paths'
    ``[N, B, H]`` states, :meth:`pyg` calls PyG on the flattened batch (the concat readouts: the node-major maths on
    the batch reshaped).

    Args:
        kind: ``"mean" | "max" | "sum" | "attention" | "concat" | "concat_attention"``.
        hidden: node width ``H``.
        num_types: number of modalities ``M`` (``concat`` and ``concat_attention`` only).
    """

    def __init__(self, kind: str, hidden: int, num_types: int = 1) -> None:
        super().__init__()
        self.kind, self.num_types = kind, num_types
        self.missing = self.project = None
        self.with_all = kind == "concat_attention"
        slots = num_types + self.with_all
        if kind in ("attention", "concat", "concat_attention"):
            self.aggr = AttentionalAggregation(gate_nn=nn.Linear(hidden, 1))
        else:
            self.aggr = {"mean": MeanAggregation, "max": MaxAggregation, "sum": SumAggregation}[kind]()
        if kind in ("concat", "concat_attention"):
            self.missing = nn.Parameter(torch.zeros(num_types, hidden))  # the all-node slot is never empty
            self.project = ConcatProjection(slots * hidden, hidden)

    def reset_parameters(self) -> None:
        self.aggr.reset_parameters()
        if self.project is not None:
            nn.init.zeros_(self.missing)
            self.project.reset_parameters()

    def node_major(self, h: Tensor, node_mask: Tensor | None, node_type: Tensor) -> tuple[Tensor, Tensor]:
        """``h: [N, B, H]`` node-major, ``node_mask: [B, N]`` (None = all present), ``node_type: LongTensor[N]`` ->
        ``(fused [B, H], node weights [B, N])``. Every reduction runs over the outer node dim."""
        present = None if node_mask is None else node_mask.t()  # [N, B]
        if self.kind in ("concat", "concat_attention"):
            return self._concat(h, present, node_type)
        if self.kind == "attention":
            scores = self.aggr.gate_nn(h).squeeze(-1)  # [N, B]; a module call (int8 quantisation can swap it)
            weights = torch.softmax(scores, 0) if present is None else masked_softmax(scores, present, dim=0)
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

    def _concat(self, h: Tensor, present: Tensor | None, node_type: Tensor) -> tuple[Tensor, Tensor]:
        """Per-modality attention pooling (and, for ``concat_attention``, pooling over all nodes as slot ``M``),
        concatenated in modality order and through :class:`ConcatProjection`: ``h: [N, B, H]``, ``present:
        [N, B]`` or None, ``node_type: [N]`` -> ``(fused [B, H], node weights [B, N])``: for
        ``concat_attention`` the all-node attention weights (summing to 1), for ``concat`` each modality's (each
        present modality's summing to 1)."""
        scores = self.aggr.gate_nn(h)  # [N, B, 1]; a module call (int8 quantisation can swap it)
        member = node_type.unsqueeze(-1) == torch.arange(self.num_types, device=h.device)  # [N, M]
        if self.with_all:
            member = torch.cat([member, torch.ones_like(member[:, :1])], dim=1)
        valid = member.unsqueeze(1) if present is None else member.unsqueeze(1) & present.unsqueeze(-1)
        weights = masked_softmax(scores, valid, dim=0)  # [N, B, slots], 0 off each slot's present nodes
        pooled = torch.einsum("nbm,nbh->bmh", weights, h)  # [B, slots, H]
        missing = self.missing
        if self.with_all:
            missing = torch.cat([missing, missing.new_zeros(1, missing.shape[1])])
        pooled = torch.where(valid.any(0).unsqueeze(-1), pooled, missing)  # a missing modality: e_m
        # node weights: the all-node attention's (they sum to 1, as the attention readout's), else each modality's
        node_weights = weights[..., -1] if self.with_all else weights.sum(-1)
        return self.project(pooled.flatten(1)), node_weights.t()

    def pyg(self, x: Tensor, node_mask: Tensor, node_type: Tensor) -> Tensor:
        """``x: [B * N, H]`` flattened, ``node_mask: [B, N]``, ``node_type: [N]`` -> ``[B, H]`` via
        ``torch_geometric.nn.aggr`` (``concat``: :meth:`node_major` on the batch reshaped to ``[N, B, H]``)."""
        batch, num_nodes = node_mask.shape
        if self.kind in ("concat", "concat_attention"):
            return self._concat(x.view(batch, num_nodes, -1).transpose(0, 1), node_mask.t(), node_type)[0]
        flat = node_mask.reshape(-1)
        index = torch.arange(batch, device=x.device).repeat_interleave(num_nodes)[flat]
        return self.aggr(x[flat], index, dim_size=batch)


class ConcatProjection(nn.Module):
    """The concat readouts' map from the concatenated slots to the fused vector: ``[B, S·H] -> [B, H]``,
    ``linear(x) + out(ReLU(hidden(x)))``. The linear path gives every slot a direct gradient from the first step;
    the hidden layer gives the multiplicative interactions a linear readout leaves to message passing. Three
    ``nn.Linear`` modules, called as modules (int8 quantisation swaps them).

    Args:
        in_features: ``S·H``, the concatenated slots. hidden: ``H``, the width of the hidden layer and output.
    """

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, hidden)
        self.hidden = nn.Linear(in_features, hidden)
        self.out = nn.Linear(hidden, hidden)

    def reset_parameters(self) -> None:
        for layer in (self.linear, self.hidden, self.out):
            layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.out(torch.relu(self.hidden(x)))
