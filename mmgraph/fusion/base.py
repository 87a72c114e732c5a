"""The fusion interface: registry, the common base class (input validation once, at the boundary) and mask helpers.

Every fusion maps a batch of modality embeddings to one fused vector per sample::

    fused = fusion(nodes, mask)    # nodes: Tensor[B, M, D], mask: BoolTensor[B, M] (True = present) -> [B, out_dim]

Methods with ``supports_sequences = True`` also accept ``nodes: Tensor[B, M, T, D]`` with ``mask: [B, M]`` or
``[B, M, T]``. Before a method sees the batch, :meth:`FusionBase.forward` validates it and overwrites masked entries
with 0, so what a missing modality held (zeros, garbage, NaN) can never reach the output; each method then decides
how a missing modality is left out (excluded from a mean or softmax, the neutral element 1 of a product, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from mmgraph.utils import describe, tracing

_REGISTRY: dict[str, type[FusionBase]] = {}


def register_fusion(name: str) -> Callable[[type[FusionBase]], type[FusionBase]]:
    """Class decorator: make a :class:`FusionBase` subclass buildable as ``build_fusion(name, ...)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")

    def decorator(cls: type[FusionBase]) -> type[FusionBase]:
        if not (isinstance(cls, type) and issubclass(cls, FusionBase)):
            raise TypeError(f"register_fusion({name!r}): expected a FusionBase subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"register_fusion: name {name!r} is already taken by {_REGISTRY[name].__name__}")
        cls.fusion_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def available_fusions() -> list[str]:
    """The registered fusion names, sorted."""
    return sorted(_REGISTRY)


def fusion_class(name: str) -> type[FusionBase]:
    """The class registered as ``name`` (to read what it supports before building it: ``supports_sequences``,
    ``supports_unaligned``, ``supports_explain``, ``uses_modality_names``)."""
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown fusion {name!r}; expected one of {available_fusions()}")
    return _REGISTRY[name]


def build_fusion(name: str, num_modalities: int, dim: int, out_dim: int | None = None, **kwargs) -> FusionBase:
    """Build the fusion registered as ``name`` for ``num_modalities`` inputs of width ``dim``.

    ``out_dim=None`` means ``out_dim = dim``; ``kwargs`` go to the method's constructor.

    >>> fusion = build_fusion("mfb", num_modalities=3, dim=64, out_dim=32, factor=5)
    """
    return fusion_class(name)(num_modalities, dim, out_dim, **kwargs)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values [B, M, ...]`` over the present entries of ``mask [B, M]`` -> ``[B, ...]``."""
    weights = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - mask.dim())))
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def masked_softmax(scores: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask`` (True = present): masked entries get weight exactly
    0, and a slice with nothing present gives all zeros (never NaN, in the value or its gradient).

    Masked entries get ``-inf`` before the softmax, except in all-masked slices, which keep their scores (so nothing
    is NaN) and are then zeroed by the mask. ``mask`` broadcasts against ``scores`` (e.g. without a heads dim): the
    ``-inf`` offsets are built at its size and added once. The one masked softmax of the package (fusions, GNN
    attention, readout).
    """
    skip = ~mask & mask.any(dim=dim, keepdim=True)  # masked entries of slices with something present
    offset = torch.zeros(skip.shape, dtype=scores.dtype, device=scores.device).masked_fill_(skip, float("-inf"))
    return torch.softmax(scores + offset, dim=dim) * mask


def check_mask(mask: Tensor | Mapping[str, Tensor] | None, modalities: Iterable[str], batch: int,
               device: torch.device) -> Tensor | None:
    """The one check of a modality mask at a boundary (:class:`~mmgraph.models.FusionModel`,
    :class:`~mmgraph.gnn.MultiModalGNN`): ``{modality: BoolTensor[B]}`` (by name, a subset of ``modalities``; the
    rest present) or ``BoolTensor[B, M]`` in ``modalities`` order -> ``BoolTensor[B, M]`` (None stays None).

    Raises:
        TypeError / ValueError: naming the argument (``mask`` or ``mask[name]``), the expected and the received
            shape, dtype or keys.
    """
    if mask is None:
        return None
    names = list(modalities)
    if isinstance(mask, Mapping):
        unknown = [k for k in mask if k not in names]
        if unknown:
            raise ValueError(f"mask: unknown modality keys {unknown}; expected a subset of {names}")
        for name, value in mask.items():
            if not isinstance(value, Tensor) or value.dtype != torch.bool or tuple(value.shape) != (batch,):
                raise ValueError(f"mask[{name!r}]: expected BoolTensor of shape ({batch},), got {describe(value)}")
        full = torch.ones(batch, dtype=torch.bool, device=device)
        return torch.stack([mask[name].to(device) if name in mask else full for name in names], dim=1)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a BoolTensor [B, M] (dtype torch.bool, True = present) or a dict "
                        f"{{modality: BoolTensor[B]}}, got {describe(mask)}")
    if tuple(mask.shape) != (batch, len(names)):
        raise ValueError(f"mask: expected shape ({batch}, {len(names)}) = [B, M] in the order {names}, got "
                         f"{tuple(mask.shape)}")
    return mask


def neutral_where_masked(values: Tensor, mask: Tensor) -> Tensor:
    """``values [B, M, ...]`` with masked modalities replaced by 1, the neutral element of a product."""
    present = mask.view(*mask.shape, *([1] * (values.dim() - mask.dim())))
    return torch.where(present, values, torch.ones_like(values))


def modality_steps(nodes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Lay a batch out as a sequence of steps whose input is the concatenation of all ``M`` modality slots.

    * ``nodes [B, M, D]``, ``mask [B, M]`` -> ``steps [B, M, M*D]``: step ``i`` carries modality ``i`` in its own
      slot and zeros elsewhere (the modality sequence, with a modality-specific input map for free);
    * ``nodes [B, M, T, D]``, ``mask [B, M, T]`` -> ``steps [B, T, M*D]``: step ``t`` concatenates every modality's
      step ``t``; masked ones are zero (the base class zeroed them).

    Also returns ``step_mask [B, S]``: a step is present when any of its modalities is. One layout for both inputs
    lets the recurrent and convolutional fusions use the same weights (and every weight) for either.
    """
    if nodes.dim() == 3:
        batch, num_modalities, dim = nodes.shape
        slots = torch.eye(num_modalities, dtype=nodes.dtype, device=nodes.device)  # [S=M, M]
        steps = nodes.unsqueeze(1) * slots.unsqueeze(-1)  # [B, S, M, D]
        return steps.reshape(batch, num_modalities, num_modalities * dim), mask
    batch, num_modalities, steps_count, dim = nodes.shape
    steps = nodes.transpose(1, 2).reshape(batch, steps_count, num_modalities * dim)  # [B, T, M*D]
    return steps, mask.any(1)


class ModalityLinear(nn.Module):
    """``M`` independent linear maps applied in one batched op: ``y[b, i] = x[b, i] @ W_i + b_i``.

    Shapes: ``x [B, M, in_features]`` -> ``[B, M, out_features]``; ``weight [M, in, out]``, ``bias [M, out]``.
    Initialised like :class:`torch.nn.Linear` (uniform in ``±1/sqrt(in_features)``).
    """

    def __init__(self, num_modalities: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_modalities, self.in_features, self.out_features = num_modalities, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_modalities, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_modalities, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"num_modalities={self.num_modalities}, in_features={self.in_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("bmi,mio->bmo", x, self.weight)
        return out if self.bias is None else out + self.bias


class FusionBase(nn.Module):
    """Base of every fusion: stores ``num_modalities``, ``dim``, ``out_dim`` and validates inputs once.

    Subclasses implement :meth:`_fuse` on validated inputs: floating ``nodes [B, M, D]`` (or ``[B, M, T, D]``) with
    masked entries already set to 0, and a full ``mask [B, M]`` (or ``[B, M, T]``) with at least one present
    modality per sample.

    What a method supports is declared on its class (read it before building with :func:`fusion_class`), so callers
    such as :class:`~mmgraph.models.FusionModel` never name a method:

    * ``supports_sequences``: also takes ``nodes [B, M, T, D]`` with a ``[B, M]`` or ``[B, M, T]`` mask;
    * ``supports_unaligned``: :meth:`fuse_unaligned` fuses modalities of different lengths, passed by name;
    * ``supports_explain``: :meth:`explain` returns per-sample edge and readout weights;
    * ``uses_modality_names``: the constructor takes ``names=[modality, ...]`` (to name nodes).

    Attributes:
        aux_loss: an auxiliary training loss (a scalar tensor) set by every forward of methods that have one
            (``seq2seq``); None otherwise. Add it to the task loss.
        validate: ``"full"`` also checks values (NaN/Inf in present entries, samples with nothing present), which
            costs a device sync; ``"shapes"`` checks only types and shapes; ``"auto"`` (default) = full on CPU,
            shapes on accelerators. Set it on an instance: ``fusion.validate = "full"``.
    """

    fusion_name: ClassVar[str] = ""
    supports_sequences: ClassVar[bool] = False
    supports_unaligned: ClassVar[bool] = False
    supports_explain: ClassVar[bool] = False
    uses_modality_names: ClassVar[bool] = False
    validate: Literal["auto", "full", "shapes"] = "auto"

    def __init__(self, num_modalities: int, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        for arg, value in (("num_modalities", num_modalities), ("dim", dim), ("out_dim", out_dim)):
            if value is None and arg == "out_dim":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg}: expected a positive int, got {value!r}")
        self.num_modalities = num_modalities
        self.dim = dim
        self.out_dim = dim if out_dim is None else out_dim
        self.aux_loss: Tensor | None = None

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters."""
        return sum(p.numel() for p in self.parameters())

    def reset_parameters(self) -> None:
        """Re-initialise every submodule that knows how to."""
        for module in self.modules():
            if module is not self and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()

    def extra_repr(self) -> str:
        return f"num_modalities={self.num_modalities}, dim={self.dim}, out_dim={self.out_dim}"

    def forward(self, nodes: Tensor, mask: Tensor | None = None) -> Tensor:
        """Fuse ``nodes [B, M, D]`` (or ``[B, M, T, D]``) with ``mask [B, M]`` (or ``[B, M, T]``; None = all
        present) into ``[B, out_dim]``."""
        mask = self.check_inputs(nodes, mask)
        nodes = nodes.masked_fill(~mask.unsqueeze(-1), 0.0)
        return self._fuse(nodes, mask)

    def _fuse(self, nodes: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def fuse_unaligned(self, nodes: Mapping[str, Tensor], mask: Tensor | None = None,
                       step_mask: Mapping[str, Tensor] | None = None) -> Tensor:
        """Fuse modalities of different lengths (only with ``supports_unaligned``): ``nodes = {name: Tensor[B, D] |
        Tensor[B, T_m, D]}``, ``mask: BoolTensor[B, M]``, ``step_mask = {name: BoolTensor[B, T_m]}`` ->
        ``[B, out_dim]``."""
        raise TypeError(f"{type(self).__name__} does not fuse unaligned modalities (supports_unaligned is False): "
                        "give every modality the same shape, or use a fusion that supports them (e.g. 'gnn')")

    def explain(self, nodes: Tensor | Mapping[str, Tensor], mask: Tensor | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> dict:
        """Per-sample explanation of the fusion (only with ``supports_explain``), for inputs as :meth:`forward` or
        :meth:`fuse_unaligned` take them; see :meth:`mmgraph.gnn.MultiModalGNN.explain` for the dict."""
        raise TypeError(f"{type(self).__name__} does not explain its fusion (supports_explain is False); the 'gnn' "
                        "fusion does (attention over the modality graph)")

    def check_inputs(self, nodes: Tensor, mask: Tensor | None) -> Tensor:
        """Validate ``nodes`` and ``mask``; return the mask as a full BoolTensor ``[B, M]`` or ``[B, M, T]``."""
        sequence = "[B, M, D] or [B, M, T, D]" if self.supports_sequences else "[B, M, D]"
        expected = f"{sequence} with M={self.num_modalities}, D={self.dim}"
        if not isinstance(nodes, Tensor):
            raise TypeError(f"nodes: expected a floating-point Tensor {expected}, got {type(nodes).__name__}")
        if not nodes.is_floating_point():
            raise TypeError(f"nodes: expected a floating-point tensor, got dtype {nodes.dtype}")
        ranks = (3, 4) if self.supports_sequences else (3,)
        if (nodes.dim() not in ranks or nodes.shape[1] != self.num_modalities or nodes.shape[-1] != self.dim
                or nodes.shape[0] < 1 or (nodes.dim() == 4 and nodes.shape[2] < 1)):
            hint = ("" if self.supports_sequences or nodes.dim() != 4 else
                    f"; {type(self).__name__} does not take sequences: pool over time first")
            raise ValueError(f"nodes: expected shape {expected} and B >= 1, got {tuple(nodes.shape)}{hint}")

        if mask is None:
            mask = torch.ones(nodes.shape[:-1], dtype=torch.bool, device=nodes.device)
        else:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask: expected a BoolTensor [B, M] (True = present), got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"mask: expected dtype torch.bool (True = present), got {mask.dtype}")
            shapes = [tuple(nodes.shape[:2])] + ([tuple(nodes.shape[:3])] if nodes.dim() == 4 else [])
            if tuple(mask.shape) not in shapes:
                raise ValueError(f"mask: expected shape {' or '.join(map(str, shapes))} for nodes of shape "
                                 f"{tuple(nodes.shape)}, got {tuple(mask.shape)}")
            if mask.device != nodes.device:
                raise ValueError(f"mask: expected device {nodes.device} (that of nodes), got {mask.device}")
            if nodes.dim() == 4 and mask.dim() == 2:
                mask = mask.unsqueeze(-1).expand(nodes.shape[:3])

        # value checks branch on data: skipped while torch.compile / torch.export trace the model
        if not tracing() and (
                self.validate == "full" or (self.validate == "auto" and nodes.device.type == "cpu")):
            _check_values(nodes, mask)
        return mask


def _check_values(nodes: Tensor, mask: Tensor) -> None:
    bad = ~torch.isfinite(nodes).all(-1) & mask
    if bool(bad.any()):
        index = tuple(bad.nonzero()[0].tolist())
        raise ValueError(f"nodes: NaN or Inf in a present entry (sample, modality[, step]) = {index}; mark missing "
                         "modalities in `mask` instead")
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        samples = empty.nonzero()[:, 0].tolist()[:10]
        raise ValueError(f"mask: every modality of sample(s) {samples} is masked; each sample needs at least one "
                         "present modality")
