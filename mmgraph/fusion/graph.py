"""Graph fusion: :class:`mmgraph.gnn.MultiModalGNN` behind the common fusion interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mmgraph.fusion.base import FusionBase, register_fusion

# MultiModalGNN's defaults before issue 21, for the settings whose default it changed: a model file of format 1
# (mmgraph.models.MODEL_FORMAT; format 1 = mmgraph 0.1.0) that left them unset was written by a model that used these.
FORMAT_1_GNN_DEFAULTS: dict[str, Any] = {"readout": "attention", "positional": None, "dropout": 0.0}


def format_1_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 :class:`~mmgraph.model.FusionModel` config with the GNN settings it left unset made explicit
    (:data:`FORMAT_1_GNN_DEFAULTS`), so that it is rebuilt as it was saved; other fusions are returned as they are."""
    config = dict(config)
    if config.get("fusion") == "gnn":
        config["fusion_kwargs"] = {**FORMAT_1_GNN_DEFAULTS, **dict(config.get("fusion_kwargs") or {})}
    return config


@register_fusion("gnn")
class GNNFusion(FusionBase):
    """The modalities as nodes of a heterogeneous graph, fused by :class:`~mmgraph.gnn.MultiModalGNN`.

    .. math:: h^{(0)}_i = W_{τ(i)} m_i, \\quad h^{(l+1)} = \\mathrm{HeteroConv}_l(h^{(l)}, E), \\quad
              \\mathrm{fused} = \\mathrm{readout}_{i \\in P}(h^{(L)}_i)

    (GCN: Kipf & Welling, ICLR 2017; GAT: Veličković et al., ICLR 2018; graph fusion of modalities as in Mai et
    al., "Modality to modality translation: an adversarial representation learning and graph fusion network for
    multimodal fusion", AAAI 2020). See :class:`~mmgraph.gnn.MultiModalGNN`
    for the layer maths; this class only adapts the interface.

    Shapes: ``nodes [B, M, D]`` (or ``[B, M, T, D]``: ``T`` temporal nodes per modality) -> ``[B, out_dim]``.

    Mask: missing modalities (or steps, with a ``[B, M, T]`` mask) are nodes without edges, left out of the
    readout.

    Unaligned modalities (sequences of different lengths ``T_m``, or vectors mixed with sequences) cannot be stacked
    into one tensor; :meth:`fuse_unaligned` takes them by name (``FusionModel`` calls it for such embeddings).

    Args:
        names: node-type names, one per modality (default ``["m0", "m1", ...]``).
        **kwargs: passed to ``MultiModalGNN`` (``layers``, ``conv``, ``heads``, ``relations``, ``readout``, ...).
            ``hidden`` is ``out_dim``. Inputs are validated here, once, so the inner GNN only checks shapes unless
            ``validate`` is given.
    """

    supports_sequences = True
    supports_unaligned = True
    supports_explain = True
    uses_modality_names = True

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None, names: list[str] | None = None,
                 **kwargs) -> None:
        super().__init__(num_modalities, dim, out_dim)
        from mmgraph.gnn import MultiModalGNN  # lazy: the fusion package must import without the GNN module

        names = [f"m{i}" for i in range(num_modalities)] if names is None else list(names)
        if len(names) != num_modalities or len(set(names)) != num_modalities:
            raise ValueError(f"names: expected {num_modalities} distinct modality names, got {names!r}")
        if "hidden" in kwargs:
            raise TypeError("hidden: not accepted by the gnn fusion; pass out_dim instead")
        kwargs.setdefault("validate", "shapes")
        self.names = names
        self.gnn = MultiModalGNN({name: dim for name in names}, hidden=self.out_dim, **kwargs)

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()

    def forward(self, nodes: Tensor, mask: Tensor | None = None) -> Tensor:
        """Validate, then :meth:`MultiModalGNN.fuse` (given the caller's mask, so ``None`` keeps the GNN's
        sample-independent fast path)."""
        self.check_inputs(nodes, mask)
        return self.gnn.fuse(nodes, mask)

    def fuse_unaligned(self, nodes: Mapping[str, Tensor], mask: Tensor | None = None,
                       step_mask: Mapping[str, Tensor] | None = None) -> Tensor:
        """Fuse modalities of different lengths: ``nodes = {name: Tensor[B, D] | Tensor[B, T_m, D]}`` (the names of
        ``names``), ``mask: BoolTensor[B, M]``, ``step_mask = {name: BoolTensor[B, T_m]}`` -> ``[B, out_dim]``.
        Cross-modal edges join steps by relative time position (see :class:`~mmgraph.graph.ModalityGraph`)."""
        return self.gnn(nodes, mask, step_mask)

    def explain(self, nodes: Tensor | Mapping[str, Tensor], mask: Tensor | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> dict:
        """:meth:`MultiModalGNN.explain <mmgraph.gnn.MultiModalGNN.explain>` of ``nodes [B, M, D]`` (or
        ``[B, M, T, D]``, or by name as :meth:`fuse_unaligned` takes them) with ``mask [B, M]``."""
        return self.gnn.explain(nodes, mask, step_mask)
