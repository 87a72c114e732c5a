"""FusionModel: per-modality encoders -> one fusion module -> one head per task.

.. code-block:: text

    inputs {m: Tensor[B, ...]} --encoders--> {m: [B, D] | [B, T, D]} --stack--> nodes [B, M, D] | [B, M, T, D]
        --fusion(nodes, mask)--> fused [B, H] --heads--> {task: Tensor[B, C_task]}

Every fusion method (the GNN included) is called the same way, so swapping ``fusion="concat"`` for ``fusion="gnn"``
changes nothing else: same encoders, same heads, same training loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mmgraph.fusion import build_fusion

__all__ = ["FusionModel"]


class FusionModel(nn.Module):
    """Encoders + fusion + task heads, for single- and multi-task learning with a shared trunk.

    Args:
        encoders: ``{modality: module}``; each maps its input ``[B, ...]`` to ``[B, dim]`` (or ``[B, T, dim]`` for
            sequence encoders). Their order fixes the modality order ``M`` of ``nodes`` and ``mask``.
        fusion: a registered fusion name (see :func:`mmgraph.fusion.available_fusions`), built as
            ``build_fusion(fusion, M, dim, **fusion_kwargs)`` (``"gnn"`` also gets ``names=list(encoders)``), or an
            already built module with ``forward(nodes, mask) -> [B, out_dim]`` and an ``out_dim`` attribute.
        tasks: ``{task: num_classes}``; ``0`` = regression (one output).
        dim: embedding width ``D`` every encoder produces.
        fusion_kwargs: extra keyword arguments for :func:`~mmgraph.fusion.build_fusion` (only with a fusion name).
        modality_dropout: in training mode, each present modality of each sample is masked out with this
            probability; at least one modality of every sample is always kept. Off in eval mode.
        head_hidden: if given, every head is an MLP ``Linear(H, head_hidden) -> ReLU -> Linear``; else one Linear.
        head_dropout: dropout on the fused vector (and on the hidden layer of MLP heads).

    Shapes:
        ``forward(inputs, mask, step_mask)`` with ``inputs = {m: Tensor[B, ...]}`` (every modality of
        ``encoders``), ``mask: BoolTensor[B, M]`` (True = present) and ``step_mask: {m: BoolTensor[B, T]}`` for
        sequence embeddings -> ``{task: Tensor[B, C]}`` (``C = 1`` for regression).

    Example:
        >>> model = FusionModel({"a": nn.Linear(10, 64), "b": nn.Linear(5, 64)}, "gnn", {"label": 3})
        >>> logits = model({"a": torch.randn(8, 10), "b": torch.randn(8, 5)})["label"]   # [8, 3]
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: str | nn.Module,
        tasks: Mapping[str, int],
        dim: int = 64,
        fusion_kwargs: dict[str, Any] | None = None,
        modality_dropout: float = 0.0,
        head_hidden: int | None = None,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(encoders, Mapping) or not encoders:
            raise TypeError(f"encoders: expected a non-empty dict {{modality: nn.Module}}, got {encoders!r}")
        for name, encoder in encoders.items():
            if not isinstance(name, str) or not isinstance(encoder, nn.Module):
                raise TypeError(f"encoders[{name!r}]: expected an nn.Module under a str key, "
                                f"got {type(encoder).__name__}")
        if not isinstance(tasks, Mapping) or not tasks:
            raise TypeError(f"tasks: expected a non-empty dict {{task: num_classes}}, got {tasks!r}")
        for task, classes in tasks.items():
            if isinstance(classes, bool) or not isinstance(classes, int) or classes < 0 or classes == 1:
                raise ValueError(f"tasks[{task!r}]: expected an int >= 2 (classes) or 0 (regression), "
                                 f"got {classes!r}")
        _check_int("dim", dim, 1)
        if head_hidden is not None:
            _check_int("head_hidden", head_hidden, 1)
        for arg, value in (("modality_dropout", modality_dropout), ("head_dropout", head_dropout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{arg}: expected a float in [0, 1), got {value!r}")

        self.modalities: list[str] = list(encoders)
        self.tasks: dict[str, int] = dict(tasks)
        self.dim = dim
        self.modality_dropout = float(modality_dropout)
        self.encoders = nn.ModuleDict(encoders)
        # encoders that pool a padded sequence themselves (GRU, Conv1d) take its step mask as `step_mask=`
        self._step_aware = {name for name, encoder in encoders.items()
                            if "step_mask" in inspect.signature(encoder.forward).parameters}
        if isinstance(fusion, str):
            kwargs = dict(fusion_kwargs or {})
            if fusion == "gnn":
                kwargs.setdefault("names", list(self.modalities))
            self.fusion = build_fusion(fusion, len(self.modalities), dim, **kwargs)
        elif isinstance(fusion, nn.Module):
            if fusion_kwargs:
                raise ValueError("fusion_kwargs: only used with a fusion name, but fusion is an already built "
                                 f"{type(fusion).__name__}")
            self.fusion = fusion
        else:
            raise TypeError(f"fusion: expected a fusion name (str) or an nn.Module, got {type(fusion).__name__}")
        fused_dim = getattr(self.fusion, "out_dim", None)
        if isinstance(fused_dim, bool) or not isinstance(fused_dim, int) or fused_dim < 1:
            raise TypeError(f"fusion: expected a module with an int `out_dim`, got {type(self.fusion).__name__} "
                            f"with out_dim={fused_dim!r}")
        self.heads = nn.ModuleDict({
            task: _head(fused_dim, classes or 1, head_hidden, head_dropout) for task, classes in self.tasks.items()})

    @classmethod
    def from_dataset(cls, dataset, fusion: str, dim: int = 64, encoder: str = "mlp",
                     fusion_kwargs: dict[str, Any] | None = None, encoder_kwargs: dict[str, Any] | None = None,
                     **kwargs: Any) -> FusionModel:
        """Build encoders from ``dataset.input_shapes`` (and dtypes) and a model for ``dataset.tasks``.

        Per modality, by the shape of one sample:

        * ``(F,)`` float vector -> ``encoder`` (default ``"mlp"``) with ``in_dim=F``;
        * ``(C, H, W)`` image -> ``"cnn"`` with ``in_channels=C``;
        * ``(T,)`` integer tokens -> ``"gru"`` with ``vocab_size = max id + 1``;
        * ``(T, F)`` float frames -> a per-step ``"mlp"`` (embeddings ``[B, T, D]``, temporal nodes) when the fusion
          supports sequences and every modality is such a sequence of the same ``T``; otherwise ``"gru"``
          pooling the sequence to ``[B, D]``.

        ``encoder_kwargs`` (e.g. ``{"dropout": 0.2}``) go to every vector-modality encoder. Extra ``kwargs``
        (``modality_dropout``, ``head_hidden``, ...) go to :class:`FusionModel`. Benchmarks and the
        CLI build their models through this method, so every fusion gets the same encoders.
        """
        from mmgraph.encoders import build_encoder

        shapes = dict(dataset.input_shapes)
        features = dataset.features  # {modality: Tensor[N, ...]}
        floating = {name: features[name].is_floating_point() for name in shapes}
        fusion_kwargs = dict(fusion_kwargs or {})
        if fusion == "gnn":
            fusion_kwargs.setdefault("names", list(shapes))
        fused = build_fusion(fusion, len(shapes), dim, **fusion_kwargs)
        frames = [shape for name, shape in shapes.items() if len(shape) == 2 and floating[name]]
        temporal = (getattr(fused, "supports_sequences", False) and len(frames) == len(shapes)
                    and len({shape[0] for shape in frames}) == 1)
        encoders: dict[str, nn.Module] = {}
        for name, shape in shapes.items():
            if len(shape) == 1 and floating[name]:
                encoders[name] = build_encoder(encoder, dim, in_dim=shape[0], **(encoder_kwargs or {}))
            elif len(shape) == 3 and floating[name]:
                encoders[name] = build_encoder("cnn", dim, in_channels=shape[0])
            elif len(shape) == 1:
                encoders[name] = build_encoder("gru", dim, vocab_size=int(features[name].max()) + 1)
            elif len(shape) == 2 and floating[name]:
                encoders[name] = (build_encoder("mlp", dim, in_dim=shape[1]) if temporal
                                  else build_encoder("gru", dim, in_dim=shape[1]))
            else:
                raise ValueError(f"dataset.input_shapes[{name!r}]: no default encoder for a per-sample shape "
                                 f"{tuple(shape)} of dtype {features[name].dtype}; build the encoders yourself")
        return cls(encoders, fused, dict(dataset.tasks), dim=dim, **kwargs)

    @property
    def aux_loss(self) -> Tensor | None:
        """The fusion's auxiliary loss of the last forward (e.g. Seq2Seq translation loss), or None."""
        return getattr(self.fusion, "aux_loss", None)

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, tasks={self.tasks}, dim={self.dim}, " \
               f"modality_dropout={self.modality_dropout}"

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, fuse and predict. See the class docstring for shapes. Returns ``{task: Tensor[B, C]}``."""
        batch = self._check_inputs(inputs)
        device = next(iter(inputs.values())).device
        if mask is not None:
            mask = self._check_mask(mask, batch, device)
        if step_mask is not None and not isinstance(step_mask, Mapping):
            raise TypeError(f"step_mask: expected a dict {{modality: BoolTensor[B, T]}}, got "
                            f"{type(step_mask).__name__}")

        step_mask = dict(step_mask or {})
        unknown = [name for name in step_mask if name not in self.modalities]
        if unknown:
            raise ValueError(f"step_mask: unknown modalities {unknown}; expected a subset of {self.modalities}")
        embeddings = []
        for m, name in enumerate(self.modalities):
            x = inputs[name]
            if mask is not None:
                # missing entries may hold NaN or garbage; zero them so no NaN reaches the encoder's gradients
                present = mask[:, m].view(-1, *([1] * (x.dim() - 1)))
                x = torch.where(present, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if name in step_mask and name in self._step_aware:
                embedding = self.encoders[name](x, step_mask=step_mask[name])
            else:
                embedding = self.encoders[name](x)
            if not isinstance(embedding, Tensor) or embedding.dim() not in (2, 3) \
                    or embedding.shape[0] != batch or embedding.shape[-1] != self.dim:
                got = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
                raise ValueError(f"encoders[{name!r}]: expected output [B, {self.dim}] or [B, T, {self.dim}] with "
                                 f"B={batch}, got {got}")
            if name in step_mask and embedding.dim() == 2 and name not in self._step_aware:
                raise ValueError(f"step_mask[{name!r}]: encoder {type(self.encoders[name]).__name__} pools the "
                                 "sequence without taking a step mask (no `step_mask` argument), so padded steps "
                                 "would leak into its output; use a step-aware encoder (gru, lstm, conv1d)")
            embeddings.append(embedding)

        if self.training and self.modality_dropout > 0.0:
            mask = self._drop_modalities(mask, batch, device)
        if all(e.dim() == 2 for e in embeddings):
            fused = self.fusion(torch.stack(embeddings, dim=1), mask)  # nodes [B, M, D] -> [B, H]
        elif getattr(self.fusion, "supports_unaligned", False) and len({e.shape[1:-1] for e in embeddings}) > 1:
            # sequences of different lengths, or vectors mixed with sequences: passed by modality name, unstacked
            by_name = dict(zip(self.modalities, embeddings))
            fused = self.fusion.fuse_unaligned(
                by_name, mask, {name: steps for name, steps in step_mask.items() if by_name[name].dim() == 3})
        else:
            nodes, node_mask = self._stack_sequences(embeddings, mask, step_mask)  # [B, M, T, D], [B, M, T]
            fused = self.fusion(nodes, node_mask)  # [B, H]
        return {task: head(fused) for task, head in self.heads.items()}

    # ------------------------------------------------------------------ internals
    def _drop_modalities(self, mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Mask out each present modality with probability ``p``; a sample that would lose all of them keeps one
        present modality, chosen uniformly. ``-> BoolTensor[B, M]``."""
        present = mask if mask is not None else torch.ones(batch, len(self.modalities), dtype=torch.bool,
                                                             device=device)
        keep = present & (torch.rand(present.shape, device=device) >= self.modality_dropout)  # [B, M]
        scores = torch.rand(present.shape, device=device).masked_fill(~present, -1.0)
        rescue = nn.functional.one_hot(scores.argmax(1), len(self.modalities)).bool()  # [B, M]
        return keep | (rescue & present & ~keep.any(1, keepdim=True))

    def _stack_sequences(self, embeddings: list[Tensor], mask: Tensor | None,
                         step_mask: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        shapes = {name: tuple(e.shape[1:-1]) for name, e in zip(self.modalities, embeddings)}
        if any(e.dim() != 3 for e in embeddings) or len({e.shape[1] for e in embeddings}) != 1:
            raise ValueError("encoders: sequence embeddings [B, T, D] are fused as temporal nodes only when every "
                             f"modality is a sequence of the same length T; got step shapes {shapes} "
                             "(pool the sequences in their encoders instead)")
        if not getattr(self.fusion, "supports_sequences", False):
            raise ValueError(f"fusion: {type(self.fusion).__name__} does not support sequence nodes [B, M, T, D]; "
                             "use vector encoders or a fusion with supports_sequences=True (e.g. 'gnn')")
        nodes = torch.stack(embeddings, dim=1)  # [B, M, T, D]
        batch, _, steps, _ = nodes.shape
        if mask is None and not step_mask:
            return nodes, None
        node_mask = torch.ones(batch, len(self.modalities), steps, dtype=torch.bool, device=nodes.device)
        if mask is not None:
            node_mask = node_mask & mask.unsqueeze(-1)  # [B, M, T]
        for name, steps_present in step_mask.items():
            if not isinstance(steps_present, Tensor) or steps_present.dtype != torch.bool \
                    or tuple(steps_present.shape) != (batch, steps):
                raise ValueError(f"step_mask[{name!r}]: expected BoolTensor of shape ({batch}, {steps}), got "
                                 f"{_describe(steps_present)}")
            m = self.modalities.index(name)
            node_mask[:, m] &= steps_present.to(node_mask.device)
        return nodes, node_mask

    def _check_inputs(self, inputs: Mapping[str, Tensor]) -> int:
        if not isinstance(inputs, Mapping):
            raise TypeError(f"inputs: expected a dict {{modality: Tensor}}, got {type(inputs).__name__}")
        missing = [m for m in self.modalities if m not in inputs]
        unknown = [k for k in inputs if k not in self.modalities]
        if missing or unknown:
            raise ValueError(f"inputs: expected modalities {self.modalities}; missing {missing}, unknown {unknown}")
        sizes = {}
        for name in self.modalities:
            x = inputs[name]
            if not isinstance(x, Tensor) or x.dim() == 0:
                raise TypeError(f"inputs[{name!r}]: expected a Tensor [B, ...], got {_describe(x)}")
            sizes[name] = x.shape[0]
        if len(set(sizes.values())) != 1:
            raise ValueError(f"inputs: batch sizes disagree: {sizes}")
        return next(iter(sizes.values()))

    def _check_mask(self, mask: Tensor, batch: int, device: torch.device) -> Tensor:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask: expected a BoolTensor [B, M] (True = present), got {_describe(mask)}")
        if tuple(mask.shape) != (batch, len(self.modalities)):
            raise ValueError(f"mask: expected shape ({batch}, {len(self.modalities)}) = [B, M] in the order "
                             f"{self.modalities}, got {tuple(mask.shape)}")
        return mask.to(device)


def _head(in_dim: int, out_dim: int, hidden: int | None, dropout: float) -> nn.Module:
    """``Dropout -> Linear`` or, with ``hidden``, ``Dropout -> Linear -> ReLU -> Dropout -> Linear``."""
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))


def _check_int(arg: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]
