"""The readout: pool the present nodes of each sample into one vector (``mean | max | sum | attention | concat``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.aggr import AttentionalAggregation, MaxAggregation, MeanAggregation, SumAggregation

from mmgraph.gnn.layer import masked_softmax


class GraphReadout(nn.Module):
    """Pool the present nodes of each sample into one vector: ``mean | max | sum | attention | concat``.

    ``attention`` is ``Σ_i softmax_i(w·h_i + c) h_i`` over present nodes (PyG ``AttentionalAggregation``).
    ``concat`` keeps modality identity: the same attention pooling within each modality's present nodes
    (``p_m = Σ_{i ∈ m} softmax_{i ∈ m}(w·h_i + c) h_i``), a learned "missing" vector ``e_m`` for a modality with no
    present node, and ``W [p_1 || .. || p_M] + b``: the fused vector never knows less than concatenation of the
    modality states. The module is PyG's aggregation (same ``state_dict`` on every path); :meth:`node_major`
    computes the same maths on the dense and sparse paths' ``[N, B, H]`` states, :meth:`pyg` calls PyG on the
    flattened batch (``concat``: the node-major maths on the batch reshaped).

    Args:
        kind: ``"mean" | "max" | "sum" | "attention" | "concat"``.
        hidden: node width ``H``.
        num_types: number of modalities ``M`` (``concat`` only).
    """

    def __init__(self, kind: str, hidden: int, num_types: int = 1) -> None:
        super().__init__()
        self.kind, self.num_types = kind, num_types
        self.missing = self.project = None
        if kind in ("attention", "concat"):
            self.aggr = AttentionalAggregation(gate_nn=nn.Linear(hidden, 1))
        else:
            self.aggr = {"mean": MeanAggregation, "max": MaxAggregation, "sum": SumAggregation}[kind]()
        if kind == "concat":
            self.missing = nn.Parameter(torch.zeros(num_types, hidden))
            self.project = nn.Linear(num_types * hidden, hidden)

    def reset_parameters(self) -> None:
        self.aggr.reset_parameters()
        if self.project is not None:
            nn.init.zeros_(self.missing)
            self.project.reset_parameters()

    def node_major(self, h: Tensor, node_mask: Tensor | None, node_type: Tensor) -> tuple[Tensor, Tensor]:
        """``h: [N, B, H]`` node-major, ``node_mask: [B, N]`` (None = all present), ``node_type: LongTensor[N]`` ->
        ``(fused [B, H], node weights [B, N])``. Every reduction runs over the outer node dim."""
        present = None if node_mask is None else node_mask.t()  # [N, B]
        if self.kind == "concat":
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
        """Per-modality attention pooling, concatenated in modality order and projected: ``h: [N, B, H]``,
        ``present: [N, B]`` or None, ``node_type: [N]`` -> ``(fused [B, H], node weights [B, N])``; each present
        modality's node weights sum to 1."""
        scores = self.aggr.gate_nn(h)  # [N, B, 1]; a module call (int8 quantisation can swap it)
        member = node_type.unsqueeze(-1) == torch.arange(self.num_types, device=h.device)  # [N, M]
        valid = member.unsqueeze(1) if present is None else member.unsqueeze(1) & present.unsqueeze(-1)
        weights = masked_softmax(scores, valid, dim=0)  # [N, B, M], 0 off each modality's present nodes
        pooled = torch.einsum("nbm,nbh->bmh", weights, h)  # [B, M, H]
        pooled = torch.where(valid.any(0).unsqueeze(-1), pooled, self.missing)  # a missing modality: e_m
        return self.project(pooled.flatten(1)), weights.sum(-1).t()

    def pyg(self, x: Tensor, node_mask: Tensor, node_type: Tensor) -> Tensor:
        """``x: [B * N, H]`` flattened, ``node_mask: [B, N]``, ``node_type: [N]`` -> ``[B, H]`` via
        ``torch_geometric.nn.aggr`` (``concat``: :meth:`node_major` on the batch reshaped to ``[N, B, H]``)."""
        batch, num_nodes = node_mask.shape
        if self.kind == "concat":
            return self._concat(x.view(batch, num_nodes, -1).transpose(0, 1), node_mask.t(), node_type)[0]
        flat = node_mask.reshape(-1)
        index = torch.arange(batch, device=x.device).repeat_interleave(num_nodes)[flat]
        return self.aggr(x[flat], index, dim_size=batch)
