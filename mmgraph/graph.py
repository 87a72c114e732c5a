"""The modality graph: node types, typed relations, and vectorised batch construction.

A :class:`ModalityGraph` is the *schema* of every sample's graph: its node types are the modalities and its
relations are ``(src, relation, dst)`` triples that say which modality sends messages to which, under which
relation type. Messages flow ``src -> dst``; edge direction matters.

Every sample has the same structure, so the graph of one sample is built once (a :class:`GraphLayout`, cached per
number of time steps) and a batch is that layout broadcast over ``B`` samples, with a ``[B, M]`` presence mask (and
optional ``[B, T]`` step masks) switching nodes off. Nothing loops over samples in Python:

* :meth:`ModalityGraph.dense_adjacency` returns ``BoolTensor[B, R, N, N]`` (dst, src) for the dense backend;
* :meth:`ModalityGraph.edge_index_dict` returns PyG ``edge_index`` tensors for a whole batch, either keyed by
  relation triple with type-local node indices (the :class:`~torch_geometric.data.HeteroData` convention) or, with
  ``homogeneous=True``, keyed by relation type over the flattened node set ``b * N + n`` (what the ``pyg`` backend of
  :class:`~mmgraph.gnn.MultiModalGNN` runs on).

Self-loops. Each relation type includes a self-loop on every node of its destination types (as ``GATConv`` and
``GCNConv`` add them), so a node's own state takes part in its relation's attention softmax or normalisation.

Temporal nodes. A modality given as a sequence ``[B, T, d]`` becomes ``T`` nodes of its type. With
``temporal_window = k > 0`` they are joined by two relation types within each modality: ``"next"`` (step ``t``
sends to steps ``t+1 .. t+k``, so a node hears its past) and ``"prev"`` (step ``t`` sends to ``t-1 .. t-k``).
Cross-modal relations join *time-aligned* nodes: step ``t`` of a modality with ``T_a`` steps and step ``s`` of one
with ``T_b`` steps are aligned when their relative time spans ``[t/T_a, (t+1)/T_a)`` and ``[s/T_b, (s+1)/T_b)``
overlap, so equal lengths align step by step and a static modality (``T = 1``) is aligned with every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import networkx as nx
import torch
from torch import Tensor

from mmgraph.utils import exporting

Relation = tuple[str, str, str]
PRESETS = ("complete", "star", "chain")
TEMPORAL_RELATIONS = ("next", "prev")


@dataclass(frozen=True)
class GraphLayout:
    """The graph of one sample, laid out as ``N`` numbered nodes; shared by every sample of a batch.

    Attributes:
        node_names: ``N`` readable names, ``"text"`` or ``"audio[3]"`` for step 3 of a sequence modality.
        node_type: ``LongTensor[N]``, index of each node's modality.
        node_step: ``LongTensor[N]``, time step of each node (0 for static modalities).
        steps: number of nodes per modality, in modality order.
        relation_types: the ``R`` relation type names, in parameter order.
        adjacency: ``BoolTensor[R, N, N]``, ``adjacency[r, i, j]`` is True when ``j`` sends to ``i`` under ``r``
            (self-loops included).
        is_dst: ``BoolTensor[R, N]``, nodes whose type is a destination of relation ``r``.
        edges: per relation type, ``LongTensor[2, E_r]`` of (src, dst) node pairs, self-loops included.
        neighbours: per relation ``r`` and destination modality ``m``, ``LongTensor[T_m, K_rm]``: the sources of
            each of that modality's nodes, padded to their largest in-degree ``K_rm`` (the ELL layout of
            ``adjacency``, one block per modality so that a few high-degree nodes, e.g. a 50-step modality aligned
            with a 500-step one, do not pad every other node; padding entries point at node 0; ``K_rm = 0`` when
            ``m`` is not a destination of ``r``).
        neighbour_valid: ``BoolTensor[T_m, K_rm]`` per relation and modality, False on padding.
        complete: every entry of ``adjacency`` is True (every node sends to every node under every relation).
    """

    node_names: tuple[str, ...]
    node_type: Tensor
    node_step: Tensor
    steps: tuple[int, ...]
    relation_types: tuple[str, ...]
    adjacency: Tensor
    is_dst: Tensor
    edges: tuple[Tensor, ...] = field(repr=False)
    neighbours: tuple[tuple[Tensor, ...], ...] = field(repr=False)
    neighbour_valid: tuple[tuple[Tensor, ...], ...] = field(repr=False)
    complete: bool = False

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def mean_width(self) -> float:
        """Neighbour-list slots per node and relation, padding included: the sparse path's cost per node."""
        slots = sum(block.numel() for lists in self.neighbours for block in lists)
        return slots / max(len(self.neighbours) * self.num_nodes, 1)

    def offsets(self) -> list[int]:
        """First node index of each modality: modality ``m`` owns nodes ``offsets[m] .. offsets[m] + steps[m]``."""
        out, total = [], 0
        for count in self.steps:
            out.append(total)
            total += count
        return out


class ModalityGraph:
    """Node types (modalities) and typed, directed relations between them.

    Args:
        modalities: the node types, in the order used by ``[B, M, ...]`` tensors and ``[B, M]`` masks.
        relations: a preset name, a list of ``(src, relation, dst)`` triples, or a :class:`networkx.DiGraph` whose
            nodes are modalities (edge attribute ``"relation"`` names the relation type, default ``"cross"``).
            Presets:

            * ``"complete"``: every ordered pair of distinct modalities, relation ``"cross"``;
            * ``"star"`` (or ``"star:<centre>"``): ``leaf -> centre`` as ``"to_centre"`` and ``centre -> leaf``
              as ``"from_centre"``; the centre defaults to the first modality;
            * ``"chain"``: modalities in order, ``m_i -> m_{i+1}`` as ``"forward"`` and ``m_{i+1} -> m_i`` as
              ``"backward"``.

            Triples that share a relation name share message (and attention) parameters; give pairs distinct names
            to give them distinct weights.
        centre: the centre of the ``"star"`` preset (overrides ``"star:<centre>"``).

    Example:
        >>> graph = ModalityGraph(["text", "image", "audio"], relations="star", centre="text")
        >>> graph.relation_types
        ('to_centre', 'from_centre')
    """

    def __init__(
        self,
        modalities: Sequence[str],
        relations: str | Sequence[Relation] | nx.DiGraph = "complete",
        centre: str | None = None,
    ) -> None:
        if isinstance(modalities, (str, bytes)) or not isinstance(modalities, Sequence):
            raise TypeError(f"modalities: expected a sequence of names, got {type(modalities).__name__}")
        self.modalities: tuple[str, ...] = tuple(modalities)
        if len(self.modalities) == 0:
            raise ValueError("modalities: expected at least one modality, got none")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities: names must be unique, got {list(self.modalities)}")
        for name in self.modalities:
            if not isinstance(name, str) or not name:
                raise TypeError(f"modalities: names must be non-empty strings, got {name!r}")
        self.relations: tuple[Relation, ...] = tuple(self._parse(relations, centre))
        names: list[str] = []
        for _, rel, _ in self.relations:
            if rel not in names:
                names.append(rel)
        self.relation_types: tuple[str, ...] = tuple(names)
        self._layouts: dict[tuple, GraphLayout] = {}

    # ------------------------------------------------------------------ construction
    def _parse(self, relations, centre: str | None) -> list[Relation]:
        mods = self.modalities
        if isinstance(relations, str):
            preset, _, named_centre = relations.partition(":")
            if preset not in PRESETS:
                raise ValueError(f"relations: unknown preset {relations!r}; expected one of {list(PRESETS)}, "
                                 "a list of (src, relation, dst) triples or a networkx.DiGraph")
            if preset == "complete":
                return [(a, "cross", b) for a in mods for b in mods if a != b]
            if preset == "chain":
                return ([(a, "forward", b) for a, b in zip(mods, mods[1:])]
                        + [(b, "backward", a) for a, b in zip(mods, mods[1:])])
            hub = centre or named_centre or mods[0]
            if hub not in mods:
                raise ValueError(f"relations: star centre {hub!r} is not a modality; expected one of {list(mods)}")
            leaves = [m for m in mods if m != hub]
            return [(m, "to_centre", hub) for m in leaves] + [(hub, "from_centre", m) for m in leaves]
        if isinstance(relations, nx.Graph):
            if not relations.is_directed():
                raise TypeError("relations: expected a networkx.DiGraph (edge direction is message direction), "
                                "got an undirected graph")
            triples = [(u, data.get("relation", "cross"), v) for u, v, data in relations.edges(data=True)]
        elif isinstance(relations, Sequence):
            triples = []
            for item in relations:
                if not (isinstance(item, (tuple, list)) and len(item) == 3 and all(isinstance(s, str) for s in item)):
                    raise TypeError(f"relations: expected (src, relation, dst) string triples, got {item!r}")
                triples.append(tuple(item))
        else:
            raise TypeError("relations: expected a preset name, a list of (src, relation, dst) triples or a "
                            f"networkx.DiGraph, got {type(relations).__name__}")
        seen = set()
        for src, rel, dst in triples:
            for end in (src, dst):
                if end not in mods:
                    raise ValueError(f"relations: ({src!r}, {rel!r}, {dst!r}) names unknown modality {end!r}; "
                                     f"expected one of {list(mods)}")
            if rel in TEMPORAL_RELATIONS:
                raise ValueError(f"relations: relation name {rel!r} is reserved for temporal edges")
            if (src, rel, dst) in seen:
                raise ValueError(f"relations: duplicate relation ({src!r}, {rel!r}, {dst!r})")
            seen.add((src, rel, dst))
        return list(triples)

    def __repr__(self) -> str:
        return (f"ModalityGraph(modalities={list(self.modalities)}, relations={len(self.relations)}, "
                f"relation_types={list(self.relation_types)})")

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def all_relation_types(self, temporal_window: int = 0) -> tuple[str, ...]:
        """Relation types of the graph, plus ``"next"``/``"prev"`` when ``temporal_window > 0``."""
        return self.relation_types + (TEMPORAL_RELATIONS if temporal_window > 0 else ())

    def to_networkx(self) -> nx.MultiDiGraph:
        """The schema as a :class:`networkx.MultiDiGraph`: one node per modality, one edge per relation triple
        (attribute ``relation``)."""
        graph = nx.MultiDiGraph()
        graph.add_nodes_from(self.modalities)
        for src, rel, dst in self.relations:
            graph.add_edge(src, dst, key=rel, relation=rel)
        return graph

    # ------------------------------------------------------------------ one sample's layout
    def layout(self, steps: Sequence[int] | None = None, temporal_window: int = 0,
               device: torch.device | str | None = None) -> GraphLayout:
        """The graph of one sample (cached).

        Args:
            steps: nodes per modality (``T_m``; 1 for a static modality), in modality order. Default all 1.
            temporal_window: ``k``; 0 adds no temporal relations.
            device: where the layout's tensors live.
        """
        steps = tuple(int(s) for s in steps) if steps is not None else (1,) * self.num_modalities
        if len(steps) != self.num_modalities or min(steps) < 1:
            raise ValueError(f"steps: expected {self.num_modalities} positive counts, got {list(steps)}")
        if temporal_window < 0:
            raise ValueError(f"temporal_window: expected >= 0, got {temporal_window}")
        key = (steps, int(temporal_window), str(torch.device(device) if device is not None else "cpu"))
        if key not in self._layouts and exporting():
            # under torch.export every tensor op yields a fake tensor: the layout's values could not be read
            raise RuntimeError(f"steps: no graph layout for {list(steps)} steps (temporal_window={temporal_window}, "
                               f"device {key[2]}) has been built yet; run one eager forward with inputs of these "
                               "lengths before torch.export")
        if key not in self._layouts:
            self._build(key)
        return self._layouts[key]

    @torch.compiler.disable  # built eagerly, once per shape, also when first met inside a compiled forward
    def _build(self, key: tuple[tuple[int, ...], int, str]) -> None:
        steps, temporal_window, device = key
        self._layouts[key] = _layout_to(_build_layout(self.modalities, self.relations, steps, temporal_window), device)

    # ------------------------------------------------------------------ batches
    def node_mask(self, layout: GraphLayout, mask: Tensor | None, batch_size: int,
                  step_mask: Mapping[str, Tensor] | None = None) -> Tensor:
        """Presence of every node of every sample, ``BoolTensor[B, N]``.

        Args:
            layout: the sample layout.
            mask: ``BoolTensor[B, M]`` (modality present) or ``BoolTensor[B, N]`` (already per node); None = all.
            batch_size: ``B``.
            step_mask: optional ``{modality: BoolTensor[B, T_m]}`` marking valid (non-padded) steps.
        """
        device = layout.node_type.device
        if mask is None:
            nodes = torch.ones(batch_size, layout.num_nodes, dtype=torch.bool, device=device)
        elif mask.shape[-1] == self.num_modalities and mask.shape[-1] != layout.num_nodes:
            nodes = mask[:, layout.node_type]  # [B, N]
        else:
            nodes = mask
        if step_mask:
            parts = []
            for m, name in enumerate(self.modalities):
                valid = step_mask.get(name)
                if valid is None:
                    valid = torch.ones(batch_size, layout.steps[m], dtype=torch.bool, device=device)
                parts.append(valid)
            nodes = nodes & torch.cat(parts, dim=1)
        return nodes

    def dense_adjacency(self, node_mask: Tensor, layout: GraphLayout | None = None) -> Tensor:
        """Per-sample adjacency ``BoolTensor[B, R, N, N]`` (dst, src): the layout's edges whose two ends are
        present. ``node_mask`` is ``[B, N]`` (or ``[B, M]`` for a static layout)."""
        layout = layout or self.layout(device=node_mask.device)
        node_mask = self.node_mask(layout, node_mask, node_mask.shape[0])
        present = node_mask[:, None, :, None] & node_mask[:, None, None, :]  # [B, 1, N, N]
        return layout.adjacency.unsqueeze(0) & present  # [B, R, N, N]

    def edge_index_dict(self, node_mask: Tensor, layout: GraphLayout | None = None,
                        homogeneous: bool = False) -> dict:
        """PyG ``edge_index`` tensors for a whole batch, built without a loop over samples.

        Args:
            node_mask: ``BoolTensor[B, N]`` (or ``[B, M]`` for a static layout); edges touching an absent node
                are dropped.
            layout: the sample layout (default: static, one node per modality).
            homogeneous: if True, key by relation type with indices into the flattened node set
                ``b * N + n`` (``x.reshape(B * N, H)``); if False, key by ``(src, relation, dst)`` triples
                with type-local indices ``b * T_m + t`` (the :class:`~torch_geometric.data.HeteroData`
                convention, node type = modality).

        Returns:
            ``{key: LongTensor[2, E]}``; row 0 holds sources, row 1 destinations.
        """
        layout = layout or self.layout(device=node_mask.device)
        node_mask = self.node_mask(layout, node_mask, node_mask.shape[0])
        batch, num_nodes = node_mask.shape
        flat_mask = node_mask.reshape(-1)
        shift = torch.arange(batch, device=node_mask.device) * num_nodes  # [B]
        out: dict = {}
        for rel, local in zip(layout.relation_types, layout.edges):
            edges = (local.unsqueeze(1) + shift.view(1, batch, 1)).reshape(2, -1)  # [2, B * E]
            edges = edges[:, flat_mask[edges[0]] & flat_mask[edges[1]]]
            if homogeneous:
                out[rel] = edges
                continue
            sample, node = edges // num_nodes, edges % num_nodes
            src_type, dst_type = layout.node_type[node[0]], layout.node_type[node[1]]
            steps = torch.tensor(layout.steps, device=node.device)
            local_index = sample * steps[layout.node_type[node]] + layout.node_step[node]  # [2, E]
            for s, src in enumerate(self.modalities):
                for d, dst in enumerate(self.modalities):
                    pick = (src_type == s) & (dst_type == d)
                    if bool(pick.any()):
                        out[(src, rel, dst)] = local_index[:, pick]
        return out

    def to_hetero_data(self, inputs: Mapping[str, Tensor], mask: Tensor | None = None,
                       temporal_window: int = 0):
        """A batched :class:`~torch_geometric.data.HeteroData` for interoperability with PyG code.

        Args:
            inputs: ``{modality: Tensor[B, d_m] or Tensor[B, T_m, d_m]}``.
            mask: ``BoolTensor[B, M]``; absent modalities keep their node rows but lose every edge.

        Node type ``m`` holds ``x: [B * T_m, d_m]`` and ``batch: [B * T_m]``.
        """
        from torch_geometric.data import HeteroData

        first = inputs[self.modalities[0]]
        steps = [inputs[m].shape[1] if inputs[m].dim() == 3 else 1 for m in self.modalities]
        layout = self.layout(steps, temporal_window, device=first.device)
        node_mask = self.node_mask(layout, mask, first.shape[0])
        data = HeteroData()
        for m, name in enumerate(self.modalities):
            x = inputs[name]
            x = x.reshape(x.shape[0] * steps[m], -1) if x.dim() == 3 else x
            data[name].x = x
            data[name].batch = torch.arange(first.shape[0], device=x.device).repeat_interleave(steps[m])
        for triple, edge_index in self.edge_index_dict(node_mask, layout).items():
            data[triple].edge_index = edge_index
        return data


# ---------------------------------------------------------------------- layout construction (once per shape)
def _aligned(t_a: int, t_b: int) -> Tensor:
    """``BoolTensor[t_a, t_b]``: steps whose relative time spans ``[t/T, (t+1)/T)`` overlap."""
    a = torch.arange(t_a).view(-1, 1)
    b = torch.arange(t_b).view(1, -1)
    # [a/Ta, (a+1)/Ta) and [b/Tb, (b+1)/Tb) overlap  <=>  a*Tb < (b+1)*Ta and b*Ta < (a+1)*Tb
    return (a * t_b < (b + 1) * t_a) & (b * t_a < (a + 1) * t_b)


@lru_cache(maxsize=64)
def _build_layout(modalities: tuple[str, ...], relations: tuple[Relation, ...], steps: tuple[int, ...],
                  temporal_window: int) -> GraphLayout:
    index = {m: i for i, m in enumerate(modalities)}
    offsets = [sum(steps[:i]) for i in range(len(steps))]
    num_nodes = sum(steps)
    node_type = torch.cat([torch.full((t,), m, dtype=torch.long) for m, t in enumerate(steps)])
    node_step = torch.cat([torch.arange(t) for t in steps])
    names = tuple(m if steps[i] == 1 else f"{m}[{t}]" for i, m in enumerate(modalities) for t in range(steps[i]))

    rel_types: list[str] = []
    for _, rel, _ in relations:
        if rel not in rel_types:
            rel_types.append(rel)
    temporal = temporal_window > 0
    if temporal:
        rel_types += list(TEMPORAL_RELATIONS)
    adjacency = torch.zeros(len(rel_types), num_nodes, num_nodes, dtype=torch.bool)
    is_dst = torch.zeros(len(rel_types), num_nodes, dtype=torch.bool)

    def block(m: int) -> slice:
        return slice(offsets[m], offsets[m] + steps[m])

    for src, rel, dst in relations:
        r, s, d = rel_types.index(rel), index[src], index[dst]
        adjacency[r, block(d), block(s)] |= _aligned(steps[d], steps[s])
        is_dst[r, block(d)] = True
    if temporal:
        for m, count in enumerate(steps):
            if count == 1:
                continue
            t = torch.arange(count)
            gap = t.view(-1, 1) - t.view(1, -1)  # dst - src, [T, T]
            within = (gap.abs() <= temporal_window) & (gap != 0)
            nxt, prv = rel_types.index("next"), rel_types.index("prev")
            adjacency[nxt, block(m), block(m)] |= within & (gap > 0)
            adjacency[prv, block(m), block(m)] |= within & (gap < 0)
            is_dst[nxt, block(m)] = True
            is_dst[prv, block(m)] = True
    eye = torch.eye(num_nodes, dtype=torch.bool)
    adjacency |= eye.unsqueeze(0) & is_dst.unsqueeze(-1)  # self-loops on every destination node
    edges = tuple(torch.stack([a.nonzero()[:, 1], a.nonzero()[:, 0]]) for a in adjacency)  # (src, dst)
    neighbours, neighbour_valid = [], []
    for rows in adjacency:  # [N (dst), N (src)] of one relation
        blocks = [rows[block(m)] for m in range(len(steps))]
        # sources first, in node order (a stable sort of each row), then padding
        orders = [b.to(torch.uint8).argsort(dim=-1, descending=True, stable=True)[:, :int(b.sum(-1).max())]
                  for b in blocks]
        valid = [b.gather(-1, order) for b, order in zip(blocks, orders)]
        neighbour_valid.append(tuple(valid))
        neighbours.append(tuple(order.masked_fill(~v, 0) for order, v in zip(orders, valid)))
    return GraphLayout(names, node_type, node_step, steps, tuple(rel_types), adjacency, is_dst, edges,
                       tuple(neighbours), tuple(neighbour_valid), complete=bool(adjacency.all()))


def _layout_to(layout: GraphLayout, device: str) -> GraphLayout:
    if device == "cpu":
        return layout
    return GraphLayout(layout.node_names, layout.node_type.to(device), layout.node_step.to(device), layout.steps,
                       layout.relation_types, layout.adjacency.to(device), layout.is_dst.to(device),
                       tuple(e.to(device) for e in layout.edges),
                       tuple(tuple(b.to(device) for b in lists) for lists in layout.neighbours),
                       tuple(tuple(b.to(device) for b in lists) for lists in layout.neighbour_valid), layout.complete)
