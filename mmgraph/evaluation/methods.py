"""The comparison's method registry: a method name means one model everywhere (fusion + its kwargs + encoders).

* a registered fusion name (``concat``, ``late``, ``tfn``, ...): that fusion with its defaults;
* ``gnn``: :class:`~mmgraph.gnn.MultiModalGNN`, GAT with 4 heads, 2 layers, concat readout, sinusoidal positions
  (issue 21: docs/design.md); on data with sequence modalities also temporal edges between steps up to
  :data:`~mmgraph.models.factory.TEMPORAL_WINDOW` (4) apart
  (elsewhere none: they would only add unused relation weights);
* ``gnn-no-temporal``: the same GNN without temporal edges (the control on sequence data);
* ``gnn-temporal`` / ``gnn-frames-no-temporal`` (image + spectrogram data): the spectrogram as
  :data:`AUDIO_FRAMES` frames of a :class:`~mmgraph.encoders.SpectrogramCNNFramesEncoder` (the image repeated at
  every frame) into the GNN with / without temporal edges;
* ``cnn-frames`` / ``seq2seq-frames`` (image + spectrogram data): the same frames into the two other fusions that
  read sequences, the controls that say whether the frame GNN gains from its graph or from its frames;
* ``gnn-pruned-<fraction>`` (sequence data, opt-in): ``gnn`` with MTAG-style edge pruning of that fraction;
* ``unimodal:<modality>``: that modality alone, with the same encoder, MLP and head as early fusion (``concat``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmgraph.data import MultiModalDataset
from mmgraph.fusion import available_fusions
from mmgraph.models.factory import TEMPORAL_WINDOW  # one default for from_dataset and the comparison

__all__ = ["AUDIO_FRAMES", "FRAME_METHODS", "GNN_KWARGS", "SEQUENCE_METHODS", "Method", "available_methods",
           "default_methods", "is_audio_visual", "has_sequences", "resolve_method"]

GNN_KWARGS = {"conv": "gat", "heads": 4, "layers": 2, "readout": "concat", "positional": "sinusoidal"}
# the frames the frame methods see on av-digits' 112-column spectrograms (8 columns apart): the encoder derives
# them (SpectrogramCNNFramesEncoder.frames); this names the figure for the docs, and a test ties the two
AUDIO_FRAMES = 14
FRAME_METHODS = ("gnn-temporal", "gnn-frames-no-temporal", "cnn-frames", "seq2seq-frames")
# on sequence benchmarks the fusions that read sequences compete
SEQUENCE_METHODS = ("gnn", "gnn-no-temporal", "seq2seq", "cnn")
PRUNED_PREFIX = "gnn-pruned-"
UNIMODAL_PREFIX = "unimodal:"


@dataclass(frozen=True)
class Method:
    """What a method name resolves to.

    Attributes:
        name: the method name; fusion: a registered fusion name; fusion_kwargs: its keyword arguments;
        frames: the spectrogram as frames (:data:`FRAME_METHODS`); modality: the one modality a unimodal baseline
        reads (None: all).
    """

    name: str
    fusion: str
    fusion_kwargs: dict = field(default_factory=dict)
    frames: bool = False
    modality: str | None = None


def pruning_of(name: str) -> float | None:
    """The edge-pruning fraction of a ``gnn-pruned-<fraction>`` name (in (0, 1)), None for other names."""
    if not name.startswith(PRUNED_PREFIX):
        return None
    try:
        fraction = float(name[len(PRUNED_PREFIX):])
    except ValueError:
        return None
    return fraction if 0.0 < fraction < 1.0 else None


def resolve_method(name: str, sequences: bool = False) -> Method:
    """The :class:`Method` of ``name`` on data with (``sequences``) or without sequence modalities; ``ValueError``
    for an unknown name."""
    gnn = {**GNN_KWARGS, "temporal_window": TEMPORAL_WINDOW}
    if name == "gnn":
        return Method(name, "gnn", gnn if sequences else dict(GNN_KWARGS))
    if name in ("gnn-no-temporal", "gnn-frames-no-temporal"):
        return Method(name, "gnn", {**gnn, "temporal_window": 0}, frames=name in FRAME_METHODS)
    if name == "gnn-temporal":
        return Method(name, "gnn", gnn, frames=True)
    if name in ("cnn-frames", "seq2seq-frames"):
        return Method(name, name.removesuffix("-frames"), frames=True)
    if pruning_of(name) is not None:
        return Method(name, "gnn", {**gnn, "edge_pruning": pruning_of(name)})
    if name.startswith(UNIMODAL_PREFIX) and len(name) > len(UNIMODAL_PREFIX):
        return Method(name, "concat", modality=name[len(UNIMODAL_PREFIX):])
    if name in available_fusions():
        return Method(name, name)
    raise ValueError(f"methods: unknown method {name!r}; expected one of {available_methods()} "
                     f"(sequence data, opt-in: {PRUNED_PREFIX}<fraction in (0, 1)>)")


def available_methods() -> list[str]:
    """Every method name without a parameter (``unimodal:<modality>`` and ``gnn-pruned-<f>`` are families)."""
    return [*available_fusions(), "gnn-no-temporal", *FRAME_METHODS, f"{UNIMODAL_PREFIX}<modality>"]


def has_sequences(data: MultiModalDataset) -> bool:
    """Whether some modality is a sequence of float vectors ``[N, T, F]``."""
    return any(len(shape) == 2 and data.features[m].is_floating_point() for m, shape in data.input_shapes.items())


def is_audio_visual(data: MultiModalDataset) -> bool:
    """Image + spectrogram data (modalities ``image`` and ``audio``, each ``[C, H, W]``): CNN encoders per
    modality (:func:`mmgraph.evaluation.runner.audio_visual_encoders`), and the frame methods apply."""
    return set(data.modalities) == {"image", "audio"} and all(len(s) == 3 for s in data.input_shapes.values())


def default_methods(data: MultiModalDataset, preset: tuple[str, ...] | None = None) -> list[str]:
    """The methods compared on ``data`` by default: ``preset`` when given (a data set's protocol preset), else
    every fusion, the frame methods on image + spectrogram data, and a unimodal baseline per modality when the
    data set has two modalities, both present in every sample."""
    if preset is not None:
        return list(preset)
    methods = list(available_fusions())
    if is_audio_visual(data):
        methods += FRAME_METHODS
    if len(data.modalities) == 2 and bool(data.mask.all()):
        methods += [UNIMODAL_PREFIX + m for m in data.modalities]
    return methods


def applies(name: str, data: MultiModalDataset, preset: tuple[str, ...] | None = None) -> bool:
    """Whether method ``name`` runs on ``data`` (one of its defaults, or an opt-in pruned GNN on sequences)."""
    return name in default_methods(data, preset) or (pruning_of(name) is not None and has_sequences(data))
