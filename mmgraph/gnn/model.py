"""MultiModalGNN: modality embeddings as nodes of a heterogeneous graph, fused by GCN/GAT/SAGE layers and a readout.

Per sample, every modality is a node (or ``T_m`` nodes when given as a sequence ``[B, T_m, d]``; modalities may have
different lengths, and vectors and sequences mix). A forward pass, top to bottom:

1. validate the inputs (:mod:`~mmgraph.gnn.validation`) and lay the sample graph out (a cached
   :class:`~mmgraph.graph.GraphLayout`, shared by the batch);
2. project each modality with its own ``nn.Linear`` into node-major states ``h: [N, B, H]``; optionally add
   positional encodings to sequence modalities' steps and run a per-modality temporal convolution over them
   (:mod:`~mmgraph.gnn.position`);
3. run the layers (:class:`~mmgraph.gnn.layer.HeteroGNNLayer`), each one's messages by one of three paths with the
   same parameters and the same meaning: :mod:`~mmgraph.gnn.dense` (all pairs, fast on small graphs),
   :mod:`~mmgraph.gnn.sparse` (padded neighbour lists, fast on long sequences) or :mod:`~mmgraph.gnn.pyg` (PyG's
   ``HeteroConv`` on the flattened batch, the reference); ``backend="auto"`` picks dense or sparse per layout;
4. pool the present nodes (:class:`~mmgraph.gnn.readout.GraphReadout`) into ``[B, hidden]``.

Missing modalities (``mask``) and padded steps (``step_mask``) are nodes without edges: they send and receive no
messages and are left out of the readout, so their features cannot change the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import networkx as nx
import torch
from torch import Tensor, nn

from mmgraph.gnn.dense import dense_messages, prune_adjacency
from mmgraph.gnn.layer import HeteroGNNLayer
from mmgraph.gnn.position import POSITION_TIMES, POSITIONALS, TemporalContext, TemporalEncoding
from mmgraph.gnn.pyg import pyg_messages
from mmgraph.gnn.readout import GraphReadout
from mmgraph.gnn.sparse import dense_coefficients, neighbour_lists, prune_lists, sparse_messages
from mmgraph.gnn.validation import (check_choice, check_inputs, check_mask, check_step_mask, check_values,
                                    tracing)
from mmgraph.graph import GraphLayout, ModalityGraph, Relation
from mmgraph.utils import eval_mode

CONVS = ("gcn", "gat", "gatv2", "sage")
READOUTS = ("mean", "max", "sum", "attention", "concat", "concat_attention")
CONTEXTS = ("conv",)
BACKENDS = ("auto", "dense", "sparse", "pyg")
# backend="auto" takes the sparse path when N >= SPARSE_CROSSOVER * K (N nodes, K the neighbour-list slots per node
# and relation, padding included: GraphLayout.mean_width).
# Measured with benchmarks/throughput.py --sequences (3 modalities, window 2, so K = 3; B = 64, 1 thread): dense was
# faster at N = 12 (N/K = 4), sparse 2x faster at N = 24 (N/K = 8); see docs/design.md, "Performance".
SPARSE_CROSSOVER = 6


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
        readout: ``"mean" | "max" | "sum" | "attention" | "concat" | "concat_attention"``. ``concat``:
            per-modality attention pooling, concatenated in modality order with a learned vector for a missing
            modality, then a linear map plus an MLP to ``H`` (the readout keeps modality identity; the default);
            ``concat_attention`` adds the ``attention`` readout of all nodes as one more slot. See
            :class:`~mmgraph.gnn.readout.GraphReadout`; the defaults were chosen on validation splits
            (docs/design.md, "Issue 21").
        dropout: dropout on each layer's update (default 0.1, chosen on validation splits: level or better on
            every data set measured, docs/design.md, "Issue 21", fourth round; 0 turns it off).
        backend: the message-passing path, same parameters and same output on each: ``"dense"`` (all node pairs,
            fastest on small graphs), ``"sparse"`` (padded neighbour lists, fastest on long sequences), ``"pyg"``
            (PyG ``HeteroConv`` on a flattened batch, the reference) or ``"auto"`` (dense or sparse by the graph's
            size and in-degree, see :data:`SPARSE_CROSSOVER`). May be changed after construction.
        temporal_window: for sequence modalities ``[B, T, d]``: each step is a node and steps up to ``k`` apart are
            joined by ``"next"``/``"prev"`` relations; 0 = no temporal edges (steps are joined only across
            modalities, by time alignment).
        edge_pruning: MTAG-style dynamic pruning for long sequences (GAT/GATv2 only; 0 = off): after every layer
            but the last, each node keeps the ``max(1, floor((1 - edge_pruning) · d))`` of its ``d`` in-edges of
            each relation with the highest attention (mean over heads), per sample, and the following layers pass
            messages over those only. Dense and sparse paths prune alike; the ``pyg`` path does not prune (it raises
            a ``ValueError``).
        positional: ``"sinusoidal"`` (the default), ``"learned"`` or ``None`` (nodes know no position):
            positional encodings added to each sequence modality's projected steps
            (:class:`~mmgraph.gnn.position.TemporalEncoding`); static modalities get none.
        positional_time: what the encoding measures: ``"step"`` (the step index ``t``) or ``"relative"`` (``t /
            T_m``: streams of different lengths get matching encodings at aligned positions).
        max_positions: rows of the learned table / the scale of relative times.
        context: ``None`` or ``"conv"``: a residual temporal ``Conv1d`` (kernel 3) per sequence modality before
            the graph (:class:`~mmgraph.gnn.position.TemporalContext`), as MulT and MTAG put there.
        gate: multiplicative messages: each layer gates what a node hears by what it is, ``σ(W_g [h_i || m_i]) ⊙
            m_i`` (see :class:`~mmgraph.gnn.layer.HeteroGNNLayer`).
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
        readout: str = "concat",
        dropout: float = 0.1,
        backend: str = "auto",
        temporal_window: int = 0,
        edge_pruning: float = 0.0,
        positional: str | None = "sinusoidal",
        positional_time: str = "step",
        max_positions: int = 512,
        context: str | None = None,
        gate: bool = False,
        validate: Literal["auto", "full", "shapes"] = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(modalities, Mapping) or not modalities:
            raise TypeError("modalities: expected a non-empty dict {name: input dim}, "
                            f"got {type(modalities).__name__} {modalities!r}")
        for name, dim in modalities.items():
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"modalities[{name!r}]: expected a positive int input dim, got {dim!r}")
        check_choice("conv", conv, CONVS)
        check_choice("readout", readout, READOUTS)
        check_choice("backend", backend, BACKENDS)
        check_choice("validate", validate, ("auto", "full", "shapes"))
        check_choice("positional", positional, (None, *POSITIONALS))
        check_choice("positional_time", positional_time, POSITION_TIMES)
        check_choice("context", context, (None, *CONTEXTS))
        if not isinstance(gate, bool):
            raise TypeError(f"gate: expected a bool, got {type(gate).__name__} {gate!r}")
        for arg, value, low in (("hidden", hidden, 1), ("layers", layers, 0), ("heads", heads, 1),
                                ("temporal_window", temporal_window, 0), ("max_positions", max_positions, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")
        if conv in ("gat", "gatv2") and hidden % heads:
            raise ValueError(f"hidden: must be divisible by heads for conv={conv!r}; got hidden={hidden}, "
                             f"heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        if isinstance(edge_pruning, bool) or not isinstance(edge_pruning, (int, float)) or not 0.0 <= edge_pruning < 1:
            raise ValueError(f"edge_pruning: expected a float in [0, 1) (the fraction of in-edges dropped), "
                             f"got {edge_pruning!r}")
        if edge_pruning and conv not in ("gat", "gatv2"):
            raise ValueError(f"edge_pruning: ranks edges by attention, so it needs conv='gat' or 'gatv2', got "
                             f"conv={conv!r}")

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
        self.edge_pruning = float(edge_pruning)
        self.positional_type, self.context_type, self.gate = positional, context, gate
        self.relation_types = self.graph.all_relation_types(temporal_window)
        self.graph.layout(temporal_window=temporal_window)  # built now, so that torch.export finds it (vectors)

        self.input_proj = nn.ModuleDict({name: nn.Linear(dim, hidden) for name, dim in self.modalities.items()})
        self.positional = (None if positional is None
                           else TemporalEncoding(positional, hidden, positional_time, max_positions))
        self.context = None if context is None else TemporalContext(names, hidden)
        self.layers = nn.ModuleList(
            HeteroGNNLayer(self.relation_types, len(names), hidden, conv, heads, dropout, gate)
            for _ in range(layers))
        self.readout = GraphReadout(readout, hidden, len(names))

    @property
    def out_dim(self) -> int:
        """Width of the fused output (``hidden``)."""
        return self.hidden

    def reset_parameters(self) -> None:
        for proj in self.input_proj.values():
            proj.reset_parameters()
        for module in (self.positional, self.context):
            if module is not None:
                module.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()
        self.readout.reset_parameters()

    def extra_repr(self) -> str:
        return (f"modalities={self.modalities}, conv={self.conv_type!r}, layers={self.num_layers}, "
                f"readout={self.readout_type!r}, backend={self.backend!r}, relations={list(self.relation_types)}"
                + (f", edge_pruning={self.edge_pruning}" if self.edge_pruning else "")
                + (f", context={self.context_type!r}" if self.context_type else "")
                + (", gate=True" if self.gate else ""))

    # ------------------------------------------------------------------ public entry points
    def forward(self, inputs: Mapping[str, Tensor] | Tensor, mask: Tensor | Mapping[str, Tensor] | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> Tensor:
        """Fuse a batch. See the class docstring for shapes. Returns ``Tensor[B, hidden]``."""
        h, node_mask, layout = self._embed(inputs, mask, step_mask)
        path = self.message_path(layout)
        if path == "pyg":
            if self.edge_pruning:
                raise ValueError(f"backend: 'pyg' does not prune edges; use 'auto', 'dense' or 'sparse' with "
                                 f"edge_pruning={self.edge_pruning}")
            return self._pyg(h, node_mask, layout)
        fused, _, _ = self._node_major(h, node_mask, layout, path)
        return fused

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
            ``readout``: ``Tensor[B, N]`` node weights in the readout (``concat_attention``: those of its all-node
            attention slot; ``concat``: within each modality, so each present modality's sum to 1), and
            ``modality_weights``: ``{modality: Tensor[B]}`` readout weight summed over each modality's nodes, and
            ``readout_kind``: the readout (``"concat"``, ...), which says how to read those weights.

        The dense and sparse paths explain themselves; the pyg path is explained by the dense or sparse path that
        ``backend="auto"`` would take (the same parameters and maths, tested equal to 1e-4). Runs in eval mode (no
        dropout draw; the module's mode is restored), as :meth:`FusionModel.explain
        <mmgraph.models.FusionModel.explain>`.
        """
        with eval_mode(self):
            h, node_mask, layout = self._embed(inputs, mask, step_mask)
            path = self.message_path(layout)
            if path == "pyg":
                path = self._auto_path(layout)
            _, edges, readout = self._node_major(h, node_mask, layout, path, explain=True)
        if node_mask is None:  # h is node-major [N, B, H]; the mask is [B, N]
            node_mask = torch.ones(h.shape[1], h.shape[0], dtype=torch.bool, device=h.device)
        return {
            "node_names": list(layout.node_names),
            "node_type": layout.node_type,
            "relation_types": list(layout.relation_types),
            "node_mask": node_mask,
            "edges": edges,
            "readout": readout,
            "modality_weights": {name: readout[:, layout.node_type == m].sum(1)
                                 for m, name in enumerate(self.modalities)},
            "readout_kind": self.readout_type,
        }

    # ------------------------------------------------------------------ internals
    def message_path(self, layout: GraphLayout) -> str:
        """The path that computes the messages on ``layout``: ``"dense"``, ``"sparse"`` or ``"pyg"``
        (``backend="auto"`` resolved)."""
        return self._auto_path(layout) if self.backend == "auto" else self.backend

    @staticmethod
    def _auto_path(layout: GraphLayout) -> str:
        # dense costs ~N² per relation, sparse ~N·K with a larger constant (gathers): see SPARSE_CROSSOVER
        return "sparse" if layout.num_nodes >= SPARSE_CROSSOVER * layout.mean_width else "dense"

    def _node_major(self, h: Tensor, node_mask: Tensor | None, layout: GraphLayout, path: str,
                    explain: bool = False) -> tuple[Tensor, list[Tensor], Tensor]:
        """The dense or sparse path on node-major ``h: [N, B, H]``. ``node_mask=None`` means every node is present:
        the graph is then the same for every sample (adjacency ``[1, R, N, N]``, unmasked neighbour lists).

        Returns ``(fused [B, H], edges, readout weights [B, N])``; ``edges`` (only with ``explain``) holds one
        ``[B, R, N (dst), N (src), K]`` tensor per layer."""
        present = None if node_mask is None else node_mask.t()  # [N, B]
        if path == "dense":
            adjacency = (layout.adjacency.unsqueeze(0) if node_mask is None
                         else self.graph.dense_adjacency(node_mask, layout))  # [B or 1, R, N, N]
        # one node per modality, in modality order: node n is of type n and per-type parameters need no gather
        node_type = None if layout.num_nodes == len(self.modalities) else layout.node_type
        lists = neighbour_lists(layout, present) if path == "sparse" else None
        complete = node_mask is None and layout.complete
        edges = []
        for i, layer in enumerate(self.layers):
            if path == "dense":
                message, coeff = dense_messages(layer, h, adjacency, layout.is_dst, complete=complete)
            else:
                message, coeff = sparse_messages(layer, h, layout, present, lists)
            h = layer.update(h, message, node_type)
            if present is not None:
                h = h * present.unsqueeze(-1).to(h.dtype)
            if explain:
                edges.append(coeff.permute(0, 1, 3, 4, 2) if path == "dense"  # [B, R, N (dst), N (src), K]
                             else dense_coefficients(coeff, layout, h.shape[1], lists))
            if self.edge_pruning and i + 1 < len(self.layers):  # the next layers see the kept edges only
                if path == "dense":
                    adjacency, complete = prune_adjacency(adjacency, coeff, self.edge_pruning), False
                else:
                    lists = prune_lists(lists, coeff, self.edge_pruning)
        fused, weights = self.readout.node_major(h, node_mask, layout.node_type)
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
            x = layer.update(x, pyg_messages(layer, x, edge_index, is_dst), node_type) * keep
        return self.readout.pyg(x, node_mask, layout.node_type)

    def _embed(self, inputs, mask, step_mask) -> tuple[Tensor, Tensor | None, GraphLayout]:
        """Validate, project each modality to ``H`` and lay the nodes out: node-major ``h [N, B, H]``,
        ``node_mask [B, N]`` (None when no mask was given: every node present)."""
        inputs = self._as_dict(inputs)
        batch = check_inputs(inputs, self.modalities)
        steps = [x.shape[1] if x.dim() == 3 else 1 for x in inputs.values()]
        device = next(iter(inputs.values())).device
        mask = check_mask(mask, self.modalities, batch, device)
        step_mask = check_step_mask(step_mask, inputs, batch)
        layout = self.graph.layout(steps, self.temporal_window, device=device)
        all_present = mask is None and step_mask is None  # then the graph is the same for every sample
        values = not tracing() and (self.validate == "full" or (self.validate == "auto" and device.type == "cpu"))
        node_mask = None
        if values or not all_present:
            node_mask = self.graph.node_mask(layout, mask, batch, step_mask)
        if values:
            check_values(inputs, node_mask, layout, self.modalities)
        if all_present:
            node_mask = None
        # one call of each modality's nn.Linear (a module call, so that int8 dynamic quantisation can swap it)
        projected = []
        for (name, x), first in zip(inputs.items(), layout.offsets()):
            sequence = x.dim() == 3
            x = x if sequence else x.unsqueeze(1)  # [B, T_m, d_m]
            present = None
            if node_mask is not None:
                present = node_mask[:, first:first + x.shape[1]].unsqueeze(-1)  # [B, T_m, 1]
                x = torch.where(present, x, torch.zeros_like(x))
            h = self.input_proj[name](x)  # [B, T_m, H]
            if sequence and self.positional is not None:
                h = h + self.positional(x.shape[1], x.device).to(h.dtype)
            if sequence and self.context is not None:
                h = self.context(name, h, present)
            projected.append(h.transpose(0, 1))  # [T_m, B, H]
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


def explanation_to_networkx(explanation: Mapping, sample: int = 0, layer: int = -1, head: int | None = None,
                            min_weight: float = 0.0) -> nx.DiGraph:
    """One sample's explained graph as a :class:`networkx.DiGraph` for plotting.

    Nodes carry ``modality`` (its name) and ``readout`` (weight); edges ``j -> i`` carry ``relation`` and ``weight`` (mean over
    heads unless ``head`` is given). Absent nodes are left out; self-loops are kept.
    """
    coeff = explanation["edges"][layer][sample]  # [R, N, N, K]
    coeff = coeff.mean(-1) if head is None else coeff[..., head]
    names, present = explanation["node_names"], explanation["node_mask"][sample]
    modalities = list(explanation["modality_weights"])  # modality names, in node-type order
    graph = nx.DiGraph()
    for n, name in enumerate(names):
        if bool(present[n]):
            graph.add_node(name, readout=float(explanation["readout"][sample, n]),
                           modality=modalities[int(explanation["node_type"][n])])
    for r, rel in enumerate(explanation["relation_types"]):
        dst, src = (coeff[r] > min_weight).nonzero(as_tuple=True)
        for i, j in zip(dst.tolist(), src.tolist()):
            graph.add_edge(names[j], names[i], relation=rel, weight=float(coeff[r, i, j]))
    return graph
