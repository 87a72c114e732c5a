"""The model factory: :func:`from_dataset` picks default encoders from a data set's per-sample shapes and builds a
:class:`~mmgraph.models.FusionModel` for its tasks. It is the body of :meth:`FusionModel.from_dataset
<mmgraph.models.FusionModel.from_dataset>` (``FusionModel.from_dataset = classmethod(from_dataset)``); benchmarks
and the CLI build their models through it, so every fusion gets the same encoders."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from mmgraph.encoders.cnn import default_stem
from mmgraph.encoders.text import DEFAULT_TEXT_MODEL
from mmgraph.utils import check_choice

if TYPE_CHECKING:
    from mmgraph.models.fusion_model import FusionModel

__all__ = ["from_dataset"]


SEGMENTS = 8
"""Temporal nodes per ragged sequence with ``sequence_nodes="segments"`` (a fusion that takes unaligned sequences)."""

TEMPORAL_WINDOW = 4
"""``temporal_window`` the GNN gets by default when some modality gives it temporal nodes (and the comparison's
``gnn`` on sequence data): 4 since issue 21's second round, chosen on validation (docs/design.md: synthetic-temporal
97.12 against 96.19 with 2, av-digits' frame GNN 94.79 against 93.96, sentiment MAE 0.400 against 0.408)."""

MAX_TOKENS = 64
"""At most this many token nodes per text."""

UNIMODAL_WEIGHT = 1.0
"""The default ``unimodal_weight`` of :class:`~mmgraph.models.FusionModel`, the CLI's ``--unimodal-weight`` and the
scikit-learn estimators: the weight of the unimodal auxiliary heads' loss (docs/design.md, "Sixth round")."""


def from_dataset(cls: type[FusionModel], dataset, fusion: str, dim: int = 64, encoder: str = "mlp",
                 fusion_kwargs: dict[str, Any] | None = None, encoder_kwargs: dict[str, Any] | None = None,
                 standardize: bool = False, seed: int | None = None, encoders: Mapping[str, Any] | None = None,
                 text_model: str | None = DEFAULT_TEXT_MODEL, text_nodes: str = "tokens",
                 sequence_nodes: str = "pooled", **kwargs: Any
                 ) -> FusionModel:
    """Build encoders from ``dataset.input_shapes`` (dtypes, step masks and ``kinds``) and a model for
    ``dataset.tasks``.

    Per modality, by its kind and the shape of one sample:

    * ``(F,)`` float vector -> ``encoder`` (default ``"mlp"``) with ``in_dim=F``;
    * ``(C, H, W)`` image -> ``"spatial_cnn"`` (keeps spatial layout; a strided stem for images over 56 pixels),
      ``"cnn"`` below 4 x 4 pixels;
    * text (``kinds[m] == "text"``, from :meth:`MultiModalDataset.from_columns
      <mmgraph.data.MultiModalDataset.from_columns>`) -> ``"pretrained_text"`` (``text_model``, by default the
      offline all-MiniLM-L6-v2 of ``mmgraph[text]``, frozen) when it is installed, else ``"vocab_text"`` with a
      vocabulary of the training texts (also with ``text_model=None``). ``text_nodes="tokens"`` gives the GNN one
      node per token, ``"sentence"`` one node; other fusions get the sentence;
    * ``(T, F)`` float frames of a data set built by ``from_columns``, or with a step mask (ragged) where the next
      rule does not apply -> ``"conv1d"`` over the real steps, max-pooled to ``[B, D]`` for every fusion; with
      ``sequence_nodes="segments"`` a fusion that takes unaligned sequences (the GNN) gets :data:`SEGMENTS` temporal
      nodes instead (each the mean of an equal span of the sample's own duration, so padding never matters).
      Pooled is the default: with the GNN's first readouts segment nodes did not learn reliably, and with the
      final one the two are level (figures in docs/data.md);
    * ``(T, F)`` float frames of other data sets -> a per-step ``"mlp"`` (embeddings ``[B, T, D]``, temporal nodes)
      when the fusion supports sequences and every modality is such a sequence of the same ``T`` (that ``T`` is
      kept as the model's ``fixed_steps``); otherwise ``"gru"`` pooling the sequence to ``[B, D]``;
    * ``(T,)`` integer tokens -> ``"gru"`` with ``vocab_size = max id + 1``.

    The GNN gets ``temporal_window=TEMPORAL_WINDOW`` when some modality gives it temporal nodes (unless
    ``fusion_kwargs`` sets it). ``encoders={modality: spec or kind}`` overrides the default of some modalities (a
    spec ``{"name": "gru", ...}``, or an encoder name, completed with the widths read from the data).
    ``encoder_kwargs`` (e.g. ``{"dropout": 0.2}``) go to every vector-modality encoder. Extra ``kwargs``
    (``modality_dropout``, ``head_hidden``, ...) go to :class:`FusionModel`. Benchmarks and the CLI build their
    models through this method, so every fusion gets the same encoders.

    ``standardize=True`` fits per-modality mean/std of the float features on ``dataset`` (see
    :func:`mmgraph.data.standardization_stats`) and keeps them as buffers of the model: give it raw features
    at train and predict time. ``seed`` makes the initialisation reproducible (without touching the global
    RNG). The dataset's class names, string labels and kinds travel with the model.
    """
    from mmgraph.data import standardization_stats
    from mmgraph.fusion import available_fusions, fusion_class

    if not dataset.tasks:
        raise ValueError("dataset: has no targets (built with targets=None); a model needs the tasks it "
                         "predicts: build it from a training set with targets")
    if fusion not in available_fusions():
        raise ValueError(f"fusion: unknown fusion {fusion!r}; expected one of {available_fusions()}")
    check_choice("text_nodes", text_nodes, ("tokens", "sentence"))
    check_choice("sequence_nodes", sequence_nodes, ("pooled", "segments"))
    overrides = dict(encoders or {})
    unknown = [name for name in overrides if name not in dataset.modalities]
    if unknown:
        raise ValueError(f"encoders: unknown modalities {unknown}; expected some of {dataset.modalities}")
    fusion_type = fusion_class(fusion)
    unaligned = getattr(fusion_type, "supports_unaligned", False)
    kinds = {name: _kind(dataset, name) for name in dataset.modalities}
    shapes = dict(dataset.input_shapes)
    frames = [shape for name, shape in shapes.items() if kinds[name] == "sequence"]
    temporal = (not dataset.kinds and fusion_type.supports_sequences and len(frames) == len(shapes)
                and len({shape[0] for shape in frames}) == 1)
    ragged = {name for name in dataset.modalities if kinds[name] == "sequence" and not temporal
              and (dataset.kinds or name in (dataset.step_mask or {}))}
    specs: dict[str, dict[str, Any]] = {}
    for name, shape in shapes.items():
        if name in overrides:
            specs[name] = _override(dataset, name, overrides[name], kinds[name], text_model,
                                    text_nodes if unaligned else "sentence")
        elif kinds[name] == "vector":
            specs[name] = {"name": encoder, "in_dim": shape[0], **(encoder_kwargs or {})}
        elif kinds[name] == "image":
            specs[name] = _image_spec(shape)
        elif kinds[name] == "text":
            specs[name] = _text_spec(dataset, name, text_model, text_nodes if unaligned else "sentence")
        elif kinds[name] == "tokens":
            specs[name] = {"name": "gru", "vocab_size": int(dataset.features[name].max()) + 1}
        elif name in ragged:
            segments = unaligned and sequence_nodes == "segments"
            specs[name] = {"name": "conv1d", "in_dim": shape[1], **({"segments": SEGMENTS} if segments else {})}
        else:
            specs[name] = {"name": "mlp" if temporal else "gru", "in_dim": shape[1]}
    fusion_kwargs = dict(fusion_kwargs or {})
    if fusion == "gnn" and (temporal or any(_gives_steps(spec) for spec in specs.values())):
        fusion_kwargs.setdefault("temporal_window", TEMPORAL_WINDOW)
    fixed_steps = {name: shapes[name][0] for name, spec in specs.items()
                   if spec["name"] == "mlp" and kinds[name] == "sequence"}
    stats = standardization_stats(dataset) if standardize else None
    kwargs = {"class_names": dataset.class_names, "string_labels": dataset.string_labels,
              "input_kinds": {name: kind for name, kind in kinds.items() if kind != "tokens"},
              "fixed_steps": fixed_steps,
              "input_spec": {name: _input_spec(shape, dataset.features[name].is_floating_point())
                             for name, shape in shapes.items()}, **kwargs}
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return cls(specs, fusion, dict(dataset.tasks), dim=dim, fusion_kwargs=fusion_kwargs or None,
                   input_stats=stats, **kwargs)


def _kind(dataset, name: str) -> str:
    """``dataset.kinds[name]``, else read from the stored tensor: vector, sequence, image or tokens (integers)."""
    if name in dataset.kinds:
        return dataset.kinds[name]
    x = dataset.features[name]
    shape = tuple(x.shape[1:])
    if not x.is_floating_point():
        if len(shape) == 1:
            return "tokens"
    elif 1 <= len(shape) <= 3:
        return ("vector", "sequence", "image")[len(shape) - 1]
    raise ValueError(f"dataset.input_shapes[{name!r}]: no default encoder for a per-sample shape {shape} of dtype "
                     f"{x.dtype}; build the encoders yourself")


def _image_spec(shape: tuple[int, ...]) -> dict[str, Any]:
    """A :class:`~mmgraph.encoders.SpatialCNNEncoder` for ``(C, H, W)`` images (stride-``s`` stem so the grid
    after it stays >= 28 pixels), a global-pooling ``cnn`` below 4 x 4."""
    channels, height, width = shape
    if min(height, width) < 4:
        return {"name": "cnn", "in_channels": channels}
    return {"name": "spatial_cnn", "in_channels": channels, "image_size": [height, width],
            "stem": default_stem(height, width)}


def _text_spec(dataset, name: str, text_model: str | None, nodes: str) -> dict[str, Any]:
    """``pretrained_text`` when ``text_model`` is available here, else ``vocab_text`` over the training texts."""
    from mmgraph.encoders.text import (build_vocabulary, decode_texts, load_text_model, text_model_available,
                                       tokenize_words)

    present = dataset.mask[:, dataset.modalities.index(name)]
    texts = decode_texts(dataset.features[name][present])
    if text_model is not None and (text_model != DEFAULT_TEXT_MODEL or text_model_available(text_model)):
        model = load_text_model(text_model)
        longest = max((len(model.tokenizer(text)["input_ids"]) for text in dict.fromkeys(texts)), default=1)
        return {"name": "pretrained_text", "model": text_model, "nodes": nodes,
                "max_tokens": min(longest, MAX_TOKENS, model.max_seq_length),
                "in_dim": model.get_embedding_dimension()}
    longest = max((len(tokenize_words(text)) for text in texts), default=1)
    return {"name": "vocab_text", "vocabulary": build_vocabulary(texts), "nodes": nodes,
            "max_tokens": max(1, min(longest, MAX_TOKENS))}


def _override(dataset, name: str, spec: Any, kind: str, text_model: str | None, nodes: str) -> dict[str, Any]:
    """``encoders[name]`` as a full spec: a dict is taken as is; a name gets the widths read from the data."""
    if isinstance(spec, Mapping):
        return dict(spec)
    if not isinstance(spec, str):
        raise TypeError(f"encoders[{name!r}]: expected an encoder name or a spec {{'name': ...}}, got "
                        f"{type(spec).__name__}")
    shape = dataset.input_shapes[name]
    if spec in ("cnn", "spatial_cnn") and kind == "image":
        return {**_image_spec(shape), "name": spec} if spec == "spatial_cnn" else \
            {"name": "cnn", "in_channels": shape[0]}
    if spec in ("mlp", "gru", "lstm") and kind in ("vector", "sequence"):
        return {"name": spec, "in_dim": shape[-1]}
    if spec in ("pretrained_text", "vocab_text") and kind == "text":
        return _text_spec(dataset, name, (text_model or DEFAULT_TEXT_MODEL) if spec == "pretrained_text" else None,
                          nodes)
    if spec == "conv1d" and kind == "sequence":
        return {"name": spec, "in_dim": shape[-1]}
    if spec == "spectrogram_frames" and kind == "image":
        return {"name": spec, "frequencies": shape[0] * shape[1]}
    if spec == "spectrogram_cnn_frames" and kind == "image":
        image = _image_spec(shape)
        if image["name"] != "spatial_cnn":
            raise ValueError(f"encoders[{name!r}]: spectrogram_cnn_frames needs spectrograms of at least 4 x 4, got "
                             f"per-sample shape {tuple(shape)}")
        return {**image, "name": spec}
    raise ValueError(f"encoders[{name!r}]: cannot complete {spec!r} for a {kind} modality of per-sample shape "
                     f"{tuple(shape)}; give a full spec {{'name': {spec!r}, ...}}")


def _gives_steps(spec: Mapping[str, Any]) -> bool:
    """Whether an encoder spec gives temporal nodes ``[B, T, D]``."""
    return (spec["name"] in ("pretrained_text", "vocab_text") and spec.get("nodes", "tokens") == "tokens") \
        or spec["name"] in ("spectrogram_frames", "spectrogram_cnn_frames") or bool(spec.get("segments")) \
        or bool(spec.get("return_sequence"))

def _input_spec(shape: tuple[int, ...], floating: bool) -> dict[str, Any]:
    """What the model accepts for a modality of per-sample ``shape`` (its ``input_spec`` entry): float features keep
    their feature axis (vectors ``[F]``, frames ``[*, F]``) and image channels (``[C, *, *]``), as the
    standardisation statistics do; token ids may be of any length."""
    if not floating:
        return {"dtype": "int", "shape": [None] * len(shape)}
    if len(shape) == 3:
        return {"dtype": "float", "shape": [shape[0], None, None]}
    return {"dtype": "float", "shape": [None] * (len(shape) - 1) + [shape[-1]]}
