"""FusionModel: per-modality encoders -> one fusion module -> one head per task.

.. code-block:: text

    inputs {m: Tensor[B, ...]} --encoders--> {m: [B, D] | [B, T, D]} --stack--> nodes [B, M, D] | [B, M, T, D]
        --fusion(nodes, mask)--> fused [B, H] --heads--> {task: Tensor[B, C_task]}

Every fusion method (the GNN included) is called the same way, so swapping ``fusion="concat"`` for ``fusion="gnn"``
changes nothing else: same encoders, same heads, same training loop.

Everything that crosses the model boundary is matched by modality name: ``inputs`` is a dict, a mask may be a dict
``{modality: BoolTensor[B]}``, and a positional ``[B, M]`` mask is read in ``model.modalities`` order only. A model
built from encoder specs and a fusion name (as :meth:`FusionModel.from_dataset` does) is self-describing:
:meth:`FusionModel.save` writes weights, constructor config, preprocessing statistics and class names to one
checksummed file and :meth:`FusionModel.load` rebuilds it with no data at hand.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgraph.data.dataset import _check_class_names
from mmgraph.data.transforms import drop_modalities
from mmgraph.fusion import build_fusion, check_mask, fusion_class, masked_mean
from mmgraph.models import factory
from mmgraph.models.preprocessing import (Standardize, _check_input_shape, _check_standardized_shape, _shape_text,
                                           check_input_kinds, prepare)
from mmgraph.models.serialization import load_model, save_model
from mmgraph.utils import check_int as _check_int
from mmgraph.utils import describe, eval_mode, tracing

__all__ = ["FusionModel"]


class FusionModel(nn.Module):
    """Encoders + fusion + task heads, for single- and multi-task learning with a shared trunk.

    Args:
        encoders: ``{modality: module or spec}``; each maps its input ``[B, ...]`` to ``[B, dim]`` (or
            ``[B, T, dim]`` for sequence encoders). A spec ``{"name": "mlp", "in_dim": 76, ...}`` is built as
            ``build_encoder(name, dim, **rest)`` and recorded, so that the model can be saved. Their order fixes the
            modality order ``M`` of ``nodes`` and of a positional ``mask``.
        fusion: a registered fusion name (see :func:`mmgraph.fusion.available_fusions`), built as
            ``build_fusion(fusion, M, dim, **fusion_kwargs)`` (a fusion with ``uses_modality_names``, such as
            ``"gnn"``, also gets ``names=list(encoders)``), or an already built module with
            ``forward(nodes, mask) -> [B, out_dim]`` and an ``out_dim`` attribute.
        tasks: ``{task: num_classes}``; ``0`` = regression (one output).
        dim: embedding width ``D`` every encoder produces.
        fusion_kwargs: extra keyword arguments for :func:`~mmgraph.fusion.build_fusion` (only with a fusion name).
        modality_dropout: in training mode, each present modality of each sample is masked out with this
            probability; at least one modality of every sample is always kept. Off in eval mode.
        head_hidden: if given, every head is an MLP ``Linear(H, head_hidden) -> ReLU -> Linear``; else one Linear.
        head_dropout: dropout on the fused vector (and on the hidden layer of MLP heads).
        input_stats: ``{modality: (mean, std)}`` applied to raw inputs before their encoders (kept as buffers of
            :class:`Standardize` modules, so raw features go in at train and predict time).
        class_names: ``{task: [name of class 0, ...]}``, carried in the saved file.
        string_labels: tasks whose labels are names: :func:`mmgraph.training.predict` returns them as strings.
        input_spec: ``{modality: {"dtype": "float" | "int", "shape": [per-sample sizes, None = any size]}}``, what
            each modality was trained on (:meth:`from_dataset` records it; carried in the saved file). An input of
            another rank or size is refused naming the modality and both shapes; an ``"int"`` modality takes token
            ids (integer tensors only); a ``"float"`` modality takes features, float64 and integer ones cast to the
            model's dtype. Modalities left out are only checked by their encoders.
        input_kinds: ``{modality: "vector" | "sequence" | "image" | "text"}``: how :meth:`prepare` reads raw
            columns (default: detected from the columns).
        fixed_steps: ``{modality: T}`` for sequences fused step by step as aligned temporal nodes: :meth:`prepare`
            pads (or trims padding) to exactly ``T`` steps, so the graph never depends on how a batch was padded.
        unimodal_weight: weight of the unimodal auxiliary loss: in training, every classification task also gets
            one linear head per modality on that modality's own embedding (a sequence's mean over its present
            steps), and :meth:`unimodal_loss` (which :func:`~mmgraph.training.fit` adds to the task loss) is
            ``unimodal_weight · Σ_t w_t · mean_m CE(head_{t,m}(e_m), y_t)`` over the samples where modality ``m``
            is present. The heads start at zero, so an encoder gets no gradient through its head until its
            embedding predicts the label; on a task no modality predicts alone (an XOR) they stay out of the way.
            The heads are used in training only: predictions come from the fused heads alone. Each
            encoder thus learns its modality's own evidence, which joint training under-learns when one modality
            suffices to fit the training set (Wang et al., "What makes training multi-modal classification networks
            hard?", CVPR 2020; Du et al., "On uni-modal feature learning in supervised multi-modal learning", ICML
            2023). Regression tasks get no such heads (a score that needs several modalities, as in
            :func:`~mmgraph.data.synthetic.make_sentiment`, lost accuracy with them), nor does a model of one
            modality (the head would duplicate the task head; unimodal baselines lost accuracy with it). The same
            for every fusion (docs/design.md, "Sixth round", has the figures); ``0``: no heads.

    Shapes:
        ``forward(inputs, mask, step_mask)`` with ``inputs = {m: Tensor[B, ...]}`` (every modality of
        ``encoders``, any key order), ``mask: BoolTensor[B, M]`` in ``modalities`` order or ``{m: BoolTensor[B]}``
        (True = present; modalities left out are present) and ``step_mask: {m: BoolTensor[B, T]}`` for sequence
        embeddings -> ``{task: Tensor[B, C]}`` (``C = 1`` for regression).

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
        input_stats: Mapping[str, tuple[Tensor, Tensor]] | None = None,
        class_names: Mapping[str, Sequence[str]] | None = None,
        string_labels: Sequence[str] = (),
        input_spec: Mapping[str, Mapping[str, Any]] | None = None,
        input_kinds: Mapping[str, str] | None = None,
        fixed_steps: Mapping[str, int] | None = None,
        unimodal_weight: float = factory.UNIMODAL_WEIGHT,
    ) -> None:
        super().__init__()
        if not isinstance(encoders, Mapping) or not encoders:
            raise TypeError(f"encoders: expected a non-empty dict {{modality: nn.Module}}, got {encoders!r}")
        for name, encoder in encoders.items():
            spec = isinstance(encoder, Mapping) and isinstance(encoder.get("name"), str)
            if not isinstance(name, str) or not (isinstance(encoder, nn.Module) or spec):
                raise TypeError(f"encoders[{name!r}]: expected an nn.Module or a spec {{'name': str, ...}} under a "
                                f"str key, got {type(encoder).__name__}")
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
        if isinstance(unimodal_weight, bool) or not isinstance(unimodal_weight, (int, float)) \
                or not 0.0 <= unimodal_weight < float("inf"):
            raise ValueError(f"unimodal_weight: expected a finite float >= 0, got {unimodal_weight!r}")

        self.modalities: list[str] = list(encoders)
        self.tasks: dict[str, int] = dict(tasks)
        self.dim = dim
        self.modality_dropout = float(modality_dropout)
        self.class_names: dict[str, list[str]] = _check_class_names(class_names, self.tasks)
        self.string_labels: list[str] = list(string_labels)
        unnamed = [t for t in self.string_labels if t not in self.class_names]
        if unnamed:
            raise ValueError(f"string_labels: tasks {unnamed} have no class_names")
        self._config: dict[str, Any] = {
            "encoders": {name: dict(e) if isinstance(e, Mapping) else None for name, e in encoders.items()},
            "fusion": fusion if isinstance(fusion, str) else None, "tasks": dict(self.tasks), "dim": dim,
            "fusion_kwargs": dict(fusion_kwargs or {}), "modality_dropout": self.modality_dropout,
            "head_hidden": head_hidden, "head_dropout": float(head_dropout), "class_names": self.class_names,
            "string_labels": list(self.string_labels)}
        self.input_spec: dict[str, dict[str, Any]] = _check_input_spec(input_spec, self.modalities)
        self._config["input_spec"] = self.input_spec
        self.input_kinds, self.fixed_steps = check_input_kinds(self.modalities, input_kinds, fixed_steps)
        self._config.update(input_kinds=dict(self.input_kinds), fixed_steps=dict(self.fixed_steps))
        from mmgraph.encoders import build_encoder

        encoders = {name: build_encoder(e["name"], dim, **{k: v for k, v in e.items() if k != "name"})
                    if isinstance(e, Mapping) else e for name, e in encoders.items()}
        self.encoders = nn.ModuleDict(encoders)
        unknown = [name for name in (input_stats or {}) if name not in self.modalities]
        if unknown:
            raise ValueError(f"input_stats: unknown modalities {unknown}; expected a subset of {self.modalities}")
        self.scalers = nn.ModuleDict({name: Standardize(*stats) for name, stats in (input_stats or {}).items()})
        # encoders that pool a padded sequence themselves (GRU, Conv1d) take its step mask as `step_mask=`
        self._step_aware = {name for name, encoder in encoders.items()
                            if "step_mask" in inspect.signature(encoder.forward).parameters}
        if isinstance(fusion, str):
            kwargs = dict(fusion_kwargs or {})
            if fusion_class(fusion).uses_modality_names:
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
        self.unimodal_weight = float(unimodal_weight)
        self._config["unimodal_weight"] = self.unimodal_weight
        classified = {task: classes for task, classes in self.tasks.items() if classes}
        # one linear head per (classification task, modality), used in training only (unimodal_loss)
        self.unimodal_heads = nn.ModuleDict({
            task: nn.ModuleDict({name: nn.Linear(dim, classes) for name in self.modalities})
            for task, classes in classified.items()}) if self.unimodal_weight > 0 and classified \
            and len(self.modalities) > 1 else None  # one modality: its head would be the task head's twin
        if self.unimodal_heads is not None:  # zero: no gradient reaches an encoder until its modality predicts
            for heads in self.unimodal_heads.values():
                for head in heads.values():
                    nn.init.zeros_(head.weight)
                    nn.init.zeros_(head.bias)
        self._unimodal: tuple[dict[str, Tensor], Tensor | None] | None = None

    from_dataset = classmethod(factory.from_dataset)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (plain values: what :meth:`save` writes).

        Raises:
            TypeError: an encoder or the fusion was passed as a built module, so the model cannot describe itself.
        """
        config = self._config
        built = [name for name, spec in config["encoders"].items() if spec is None]
        if built or config["fusion"] is None:
            what = f"encoders {built}" if built else "the fusion"
            raise TypeError(f"model: {what} were given as built modules, so the model cannot be rebuilt from a "
                            "file; build it with encoder specs and a fusion name (FusionModel.from_dataset does)")
        return {**config, "input_stats": {name: list(scaler.mean.shape) for name, scaler in self.scalers.items()}}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to one self-describing safetensors file (atomic, SHA-256 of its content recorded; see
        :mod:`mmgraph.models.serialization`).

        The file holds the weights and preprocessing buffers as tensors (int8 layers, of
        :func:`~mmgraph.models.quantize_int8` or ``quantize_dynamic``, as int8 weights + per-channel scales) and, as
        metadata, the constructor config (encoder specs with vocabularies and input widths, fusion name and kwargs,
        tasks, dims, class names) as JSON and the mmgraph / torch / safetensors versions.
        ``safetensors.safe_open(path, "pt")`` reads it without executing anything; :meth:`load` rebuilds the model
        with no data at hand. Returns the path written.
        """
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> FusionModel:
        """Rebuild a model written by :meth:`save` (in eval mode); also reads the files of mmgraph 0.1.0 (format 1,
        a checksummed ``torch.save`` envelope, read with ``weights_only=True``). ``model.versions`` holds the
        versions of the writer.

        Raises:
            FileNotFoundError: no file at ``path``.
            mmgraph.io.CorruptFileError: the file is corrupt, truncated or not an mmgraph model (names the path).
            mmgraph.io.IncompatibleFileError: written by a newer mmgraph (a later format, a config key this
                version does not know), or its config and weights disagree (names the path and what differs).
        """
        return load_model(cls, path, map_location)

    def prepare(self, columns, mask=None, step_mask=None
                ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor] | None]:
        """Raw columns -> this model's inputs: the preprocessing every entry point applies (``predict``,
        ``evaluate``, :meth:`explain`, the scikit-learn estimators, the CLI).

        Args:
            columns: ``{modality: column}`` or a pandas ``DataFrame`` in the forms of
                :meth:`MultiModalDataset.from_columns <mmgraph.data.MultiModalDataset.from_columns>` (strings,
                ragged lists, ``None`` for a missing entry, arrays, images), read with the kinds the model was
                trained on; or a :class:`~mmgraph.data.MultiModalDataset`.
            mask: ``{modality: bool [N]}`` or ``bool [N, M]`` (columns in ``columns``' key order), True = present;
                combined with the ``None`` entries.
            step_mask: ``{modality: bool [N, T]}`` for padded arrays ``[N, T, D]`` (True = real step).

        Returns:
            ``(inputs {modality: Tensor[N, ...]}, mask {modality: BoolTensor[N]}, step_mask {modality:
            BoolTensor[N, T]} | None)``, ready for :meth:`forward` (tensors on CPU).
        """
        return prepare(self, columns, mask, step_mask)

    @property
    def aux_loss(self) -> Tensor | None:
        """The fusion's auxiliary loss of the last forward (e.g. Seq2Seq translation loss), or None."""
        return getattr(self.fusion, "aux_loss", None)

    def unimodal_loss(self, targets: Mapping[str, Tensor], task_weights: Mapping[str, float] | None = None,
                      class_weights: Mapping[str, Tensor] | None = None) -> Tensor | None:
        """The unimodal auxiliary loss of the last training-mode forward (see ``unimodal_weight``), or None (no
        unimodal heads, or no training forward since the last call: the logits are consumed).

        Args:
            targets: ``{task: LongTensor[B]}`` of that forward's batch (other tasks are ignored).
            task_weights: ``{task: w_t}`` (default 1 each), as the task loss weighs its tasks.
            class_weights: ``{task: Tensor[C]}`` for the cross-entropy, as the task loss's.

        Returns:
            ``unimodal_weight · Σ_t w_t · (1/M) Σ_m mean_{b: m present in b} CE(head_{t,m}(e_{b,m}), y_{b,t})``, a
            scalar tensor.
        """
        if self._unimodal is None:
            return None
        logits, present = self._unimodal
        self._unimodal = None
        total = 0.0
        for task, per_modality in logits.items():
            target = targets[task].long()
            weight = (class_weights or {}).get(task)
            for m, output in enumerate(per_modality.unbind(1)):  # [B, M, C] -> M x [B, C]
                loss = F.cross_entropy(output.float(), target, weight=weight, reduction="none")
                if present is not None:
                    keep = present[:, m].to(loss.dtype)
                    loss = (loss * keep).sum() / keep.sum().clamp(min=1.0)
                else:
                    loss = loss.mean()
                total = total + (task_weights or {}).get(task, 1.0) * loss / len(self.modalities)
        return self.unimodal_weight * total

    def extra_repr(self) -> str:
        return f"modalities={self.modalities}, tasks={self.tasks}, dim={self.dim}, " \
               f"modality_dropout={self.modality_dropout}" + \
               (f", unimodal_weight={self.unimodal_weight}" if self.unimodal_heads is not None else "")

    def forward(self, inputs: Mapping[str, Tensor], mask: Tensor | Mapping[str, Tensor] | None = None,
                step_mask: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Encode, fuse and predict. See the class docstring for shapes. Returns ``{task: Tensor[B, C]}``."""
        nodes, node_mask, step_masks = self._encode(inputs, mask, step_mask)
        if isinstance(nodes, Mapping):  # unaligned: {modality: [B, D] | [B, T_m, D]}
            fused = self.fusion.fuse_unaligned(nodes, node_mask, step_masks)
        else:
            fused = self.fusion(nodes, node_mask)  # [B, H]
        return {task: head(fused) for task, head in self.heads.items()}

    @torch.no_grad()
    def explain(self, inputs: Mapping[str, Any], mask: Any = None,
                step_mask: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Per-sample explanation of a fusion with ``supports_explain`` (the GNN: edge attention and readout
        weights), with modality names.

        Takes the same arguments as :meth:`forward` (encoders, standardisation and masks applied), or whatever
        ``predict`` takes (numpy arrays, raw columns: strings, ragged lists, ``None`` entries; read by
        :meth:`prepare`), and
        returns :meth:`mmgraph.gnn.MultiModalGNN.explain`'s dict (``edges``: per layer ``Tensor[B, R, N, N, K]``,
        ``readout [B, N]``, ``modality_weights {modality: Tensor[B]}``, ``node_names``, ``node_mask [B, N]``,
        ``readout_kind``, ...) plus ``modalities`` and ``node_modality`` (the modality name of each of the N nodes).
        Runs in eval mode (no modality dropout); draw it with :func:`mmgraph.viz.plot_explanation`.
        """
        if not getattr(self.fusion, "supports_explain", False):
            raise TypeError(f"explain: needs a fusion with supports_explain, such as the 'gnn' fusion (attention "
                            f"over the modality graph); this model fuses with {type(self.fusion).__name__}")
        if not _all_tensors(inputs):  # raw columns or arrays: the model's own preprocessing
            inputs, mask, step_mask = self.prepare(inputs, mask, step_mask)
            device = next(iter(self.parameters())).device
            inputs = {name: x.to(device) for name, x in inputs.items()}
            mask = {name: m.to(device) for name, m in mask.items()}
            step_mask = None if step_mask is None else {name: m.to(device) for name, m in step_mask.items()}
        with eval_mode(self):
            nodes, node_mask, node_steps = self._encode(inputs, mask, step_mask)
        if node_mask is None:  # explicit, so every explanation carries a [B, M] node mask
            first = next(iter(nodes.values())) if isinstance(nodes, Mapping) else nodes
            node_mask = torch.ones(first.shape[0], len(self.modalities), dtype=torch.bool, device=first.device)
        if node_mask.dim() == 3:  # [B, M, T]: per-step presence of sequence nodes
            node_steps = {name: node_mask[:, m] for m, name in enumerate(self.modalities)}
            node_mask = node_mask.any(-1)
        explanation = self.fusion.explain(nodes, node_mask, node_steps)
        explanation["modalities"] = list(self.modalities)
        explanation["node_modality"] = [self.modalities[t] for t in explanation["node_type"].tolist()]
        return explanation

    # ------------------------------------------------------------------ internals
    def _encode(self, inputs: Mapping[str, Tensor], mask: Tensor | Mapping[str, Tensor] | None,
                step_mask: Mapping[str, Tensor] | None
                ) -> tuple[Tensor | dict[str, Tensor], Tensor | None, dict[str, Tensor] | None]:
        """Validate, standardise, encode and stack, modality dropout applied in training mode:
        ``-> (nodes [B, M, D] | [B, M, T, D], mask [B, M] | [B, M, T] | None, None)``, or for unaligned modalities
        (a fusion with ``supports_unaligned``) ``({modality: [B, D] | [B, T_m, D]}, mask [B, M] | None,
        {modality: step mask [B, T_m]})``."""
        batch = self._check_inputs(inputs)
        device = next(iter(inputs.values())).device
        if mask is not None:
            mask = self._check_mask(mask, list(inputs), batch, device)
        if step_mask is not None and not isinstance(step_mask, Mapping):
            raise TypeError(f"step_mask: expected a dict {{modality: BoolTensor[B, T]}}, got "
                            f"{type(step_mask).__name__}")

        step_mask = dict(step_mask or {})
        unknown = [name for name in step_mask if name not in self.modalities]
        if unknown:
            raise ValueError(f"step_mask: unknown modalities {unknown}; expected a subset of {self.modalities}")
        embeddings = []
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        for m, name in enumerate(self.modalities):
            x = _as_model_dtype(inputs[name], self.input_spec.get(name), dtype)
            if name in self.scalers:
                _check_standardized_shape(name, x, self.scalers[name].mean)
                x = self.scalers[name](x)
            if mask is not None:
                # missing entries may hold NaN or garbage; zero them so no NaN reaches the encoder's gradients
                present = mask[:, m].view(-1, *([1] * (x.dim() - 1)))
                x = torch.where(present, x, torch.zeros((), dtype=x.dtype, device=x.device))
            if name in step_mask and name in self._step_aware:
                embedding = self.encoders[name](x, step_mask=step_mask[name])
            else:
                embedding = self.encoders[name](x)
            if isinstance(embedding, tuple):  # (embedding [B, T_out, D], its own step mask [B, T_out] | None)
                embedding, out_steps = embedding
                step_mask.pop(name, None)
                if out_steps is not None:
                    step_mask[name] = out_steps
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

        # the unimodal heads' logits of this forward (training with autograd only), for unimodal_loss; another
        # forward drops stale ones (no write otherwise: tracing and export see no attribute change)
        if self.training and self.unimodal_heads is not None and torch.is_grad_enabled():
            self._unimodal = self._unimodal_logits(embeddings, mask, step_mask)
        elif self._unimodal is not None:
            self._unimodal = None
        if self.training and self.modality_dropout > 0.0:
            mask = self._drop_modalities(mask, batch, device)
        if all(e.dim() == 2 for e in embeddings):
            return torch.stack(embeddings, dim=1), mask, None  # nodes [B, M, D]
        if getattr(self.fusion, "supports_unaligned", False) and len({e.shape[1:-1] for e in embeddings}) > 1:
            # sequences of different lengths, or vectors mixed with sequences: passed by modality name, unstacked
            by_name = dict(zip(self.modalities, embeddings))
            return by_name, mask, {name: steps for name, steps in step_mask.items() if by_name[name].dim() == 3}
        nodes, node_mask = self._stack_sequences(embeddings, mask, step_mask)  # [B, M, T, D], [B, M, T]
        return nodes, node_mask, None

    def _unimodal_logits(self, embeddings: list[Tensor], mask: Tensor | None, step_mask: Mapping[str, Tensor]
                         ) -> tuple[dict[str, Tensor], Tensor | None]:
        """Each unimodal head on its modality's embedding (before modality dropout; a sequence ``[B, T, D]`` pooled
        by the mean over its present steps): ``({task: [B, M, C]}, present [B, M] | None)``."""
        pooled, present = [], []
        for m, (name, embedding) in enumerate(zip(self.modalities, embeddings)):
            here = None if mask is None else mask[:, m]
            if embedding.dim() == 3:
                steps = step_mask.get(name)
                if steps is None:
                    embedding = embedding.mean(1)
                else:
                    embedding = masked_mean(embedding, steps)
                    here = steps.any(1) if here is None else here & steps.any(1)
            pooled.append(embedding)
            present.append(here)
        if all(p is None for p in present):
            keep = None
        else:
            keep = torch.stack([torch.ones(len(pooled[0]), dtype=torch.bool, device=pooled[0].device)
                                if p is None else p for p in present], dim=1)
        logits = {task: torch.stack([heads[name](e) for name, e in zip(self.modalities, pooled)], dim=1)
                  for task, heads in self.unimodal_heads.items()}
        return logits, keep

    def _drop_modalities(self, mask: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Mask out each present modality with probability ``p``; a sample that would lose all of them keeps one
        present modality, chosen uniformly (:func:`mmgraph.data.transforms.drop_modalities`). ``-> BoolTensor[B, M]``."""
        present = mask if mask is not None else torch.ones(batch, len(self.modalities), dtype=torch.bool,
                                                             device=device)
        return drop_modalities(present, self.modality_dropout)

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
                                 f"{describe(steps_present)}")
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
        for name in self.modalities:
            x = inputs[name]
            if not isinstance(x, Tensor) or x.dim() == 0:
                hint = " (torch.as_tensor(x), or mmgraph.predict, which takes arrays)" if hasattr(x, "shape") else ""
                raise TypeError(f"inputs[{name!r}]: expected a Tensor [B, ...], got {describe(x)}{hint}")
            _check_input(name, x, self.input_spec.get(name))
        batch = inputs[self.modalities[0]].shape[0]
        # pairwise comparisons, not a set of sizes: traced sizes are tensors (torch.jit.trace) or symbols (export)
        if any(inputs[name].shape[0] != batch for name in self.modalities):
            sizes = {name: int(inputs[name].shape[0]) for name in self.modalities}
            raise ValueError(f"inputs: batch sizes disagree: {sizes}")
        return batch

    def _check_mask(self, mask: Tensor | Mapping[str, Tensor], order: list[str], batch: int,
                    device: torch.device) -> Tensor:
        """The mask as ``BoolTensor[B, M]`` in ``self.modalities`` order. A dict is matched by name; a positional
        mask is read in model order and refused when ``inputs`` come in another order (unless nothing is
        masked, where order cannot matter)."""
        checked = check_mask(mask, self.modalities, batch, device)
        if isinstance(mask, Mapping):
            return checked
        if order != self.modalities and (tracing() or not bool(mask.all())):
            raise ValueError(f"mask: a [B, M] mask is read in the model's modality order {self.modalities}, but "
                             f"inputs come in the order {order}; pass the mask by name as {{modality: "
                             "BoolTensor[B]}, or order inputs and mask columns as the model's modalities")
        return mask.to(device)


def _all_tensors(inputs: Any) -> bool:
    """Whether ``inputs`` is already a dict of tensors (what :meth:`FusionModel.forward` takes)."""
    return isinstance(inputs, Mapping) and all(isinstance(x, Tensor) for x in inputs.values())


def _check_input_spec(input_spec: Mapping[str, Mapping[str, Any]] | None, modalities: list[str]
                      ) -> dict[str, dict[str, Any]]:
    """``input_spec`` as plain ``{modality: {"dtype": "float" | "int", "shape": [int | None, ...]}}``."""
    if input_spec is None:
        return {}
    if not isinstance(input_spec, Mapping):
        raise TypeError(f"input_spec: expected a dict {{modality: {{'dtype': ..., 'shape': ...}}}}, got "
                        f"{type(input_spec).__name__}")
    unknown = [name for name in input_spec if name not in modalities]
    if unknown:
        raise ValueError(f"input_spec: unknown modalities {unknown}; expected a subset of {modalities}")
    checked = {}
    for name, spec in input_spec.items():
        shape = spec.get("shape") if isinstance(spec, Mapping) else None
        if not (isinstance(spec, Mapping) and spec.get("dtype") in ("float", "int") and isinstance(shape, (list, tuple))
                and all(s is None or (type(s) is int and s >= 1) for s in shape)):
            raise ValueError(f"input_spec[{name!r}]: expected {{'dtype': 'float' | 'int', 'shape': [per-sample sizes, "
                             f"None = any]}}, got {str(spec)[:120]}")
        checked[name] = {"dtype": spec["dtype"], "shape": list(shape)}
    return checked


def _check_input(name: str, x: Tensor, spec: Mapping[str, Any] | None) -> None:
    """``inputs[name]`` against its ``input_spec`` entry: the per-sample shape it was trained on, whatever the rank
    (an extra axis would otherwise pass through an encoder that maps ``[..., F]``), and integers for token ids."""
    if spec is None:
        return
    if spec["dtype"] == "int" and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"inputs[{name!r}]: expected integer token ids [{_shape_text(spec['shape'])}], got "
                        f"{str(x.dtype).removeprefix('torch.')} of shape {tuple(x.shape)}; this modality's encoder "
                        "embeds ids, it does not take float features")
    if not tracing():
        _check_input_shape(name, x, spec["shape"])


def _as_model_dtype(x: Tensor, spec: Mapping[str, Any] | None, dtype: torch.dtype) -> Tensor:
    """A feature input in the model's floating ``dtype`` (float64 arrays from numpy, integer or bool features of a
    ``"float"`` modality: values, not token ids); token ids and inputs of unknown kind that are not floats are left
    as they are for their encoders."""
    if spec is not None and spec["dtype"] == "int":
        return x
    if x.is_floating_point() or (spec is not None and not x.is_complex()):
        return x.to(dtype)
    return x


def _head(in_dim: int, out_dim: int, hidden: int | None, dropout: float) -> nn.Module:
    """``Dropout -> Linear`` or, with ``hidden``, ``Dropout -> Linear -> ReLU -> Dropout -> Linear``."""
    if hidden is None:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, out_dim))
