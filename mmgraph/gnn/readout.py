"""The readout: pool the present nodes of each sample into one vector (``mean | max | sum | attention``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.aggr import AttentionalAggregation, MaxAggregation, MeanAggregation, SumAggregation

from mmgraph.gnn.layer import masked_softmax


class GraphReadout(nn.Module):
    """Pool the present nodes of each sample into one vector: ``mean | max | sum | attention``.

    ``attention`` is ``Σ_i softmax_i(w·h_i + c) h_i`` over present nodes (PyG ``AttentionalAggregation``). The
    module is PyG's aggregation (same ``state_dict`` on every path); :meth:`node_major` computes the same maths on
    the dense and sparse paths' ``[N, B, H]`` states, :meth:`pyg` calls PyG on the flattened batch.
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

    def node_major(self, h: Tensor, node_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``h: [N, B, H]`` node-major, ``node_mask: [B, N]`` (None = all present) -> ``(fused [B, H], node
        weights [B, N])``. Every reduction runs over the outer node dim."""
        present = None if node_mask is None else node_mask.t()  # [N, B]
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

    def pyg(self, x: Tensor, node_mask: Tensor) -> Tensor:
        """``x: [B * N, H]`` flattened, ``node_mask: [B, N]`` -> ``[B, H]`` via ``torch_geometric.nn.aggr``."""
        batch, num_nodes = node_mask.shape
        flat = node_mask.reshape(-1)
        index = torch.arange(batch, device=x.device).repeat_interleave(num_nodes)[flat]
        return self.aggr(x[flat], index, dim_size=batch)
