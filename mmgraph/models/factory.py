"""The model factory: :func:`from_dataset` picks default encoders from a data set's per-sample shapes and builds a
:class:`~mmgraph.models.FusionModel` for its tasks. It is the body of :meth:`FusionModel.from_dataset
<mmgraph.models.FusionModel.from_dataset>` (``FusionModel.from_dataset = classmethod(from_dataset)``); benchmarks
and the CLI build their models through it, so every fusion gets the same encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mmgraph.models.fusion_model import FusionModel

__all__ = ["from_dataset"]


def from_dataset(cls: type[FusionModel], dataset, fusion: str, dim: int = 64, encoder: str = "mlp",
                 fusion_kwargs: dict[str, Any] | None = None, encoder_kwargs: dict[str, Any] | None = None,
                 standardize: bool = False, seed: int | None = None, **kwargs: Any) -> FusionModel:
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

    ``standardize=True`` fits per-modality mean/std of the float features on ``dataset`` (see
    :func:`mmgraph.data.standardization_stats`) and keeps them as buffers of the model: give it raw features
    at train and predict time. ``seed`` makes the initialisation reproducible (without touching the global
    RNG). The dataset's class names and string labels travel with the model.
    """
    from mmgraph.data import standardization_stats
    from mmgraph.fusion import available_fusions, fusion_class

    if not dataset.tasks:
        raise ValueError("dataset: has no targets (built with targets=None); a model needs the tasks it "
                         "predicts: build it from a training set with targets")
    if fusion not in available_fusions():
        raise ValueError(f"fusion: unknown fusion {fusion!r}; expected one of {available_fusions()}")
    shapes = dict(dataset.input_shapes)
    features = dataset.features  # {modality: Tensor[N, ...]}
    floating = {name: features[name].is_floating_point() for name in shapes}
    frames = [shape for name, shape in shapes.items() if len(shape) == 2 and floating[name]]
    temporal = (fusion_class(fusion).supports_sequences and len(frames) == len(shapes)
                and len({shape[0] for shape in frames}) == 1)
    encoders: dict[str, dict[str, Any]] = {}
    for name, shape in shapes.items():
        if len(shape) == 1 and floating[name]:
            encoders[name] = {"name": encoder, "in_dim": shape[0], **(encoder_kwargs or {})}
        elif len(shape) == 3 and floating[name]:
            encoders[name] = {"name": "cnn", "in_channels": shape[0]}
        elif len(shape) == 1:
            encoders[name] = {"name": "gru", "vocab_size": int(features[name].max()) + 1}
        elif len(shape) == 2 and floating[name]:
            encoders[name] = {"name": "mlp" if temporal else "gru", "in_dim": shape[1]}
        else:
            raise ValueError(f"dataset.input_shapes[{name!r}]: no default encoder for a per-sample shape "
                             f"{tuple(shape)} of dtype {features[name].dtype}; build the encoders yourself")
    stats = standardization_stats(dataset) if standardize else None
    kwargs = {"class_names": dataset.class_names, "string_labels": dataset.string_labels,
              "input_spec": {name: _input_spec(shape, floating[name]) for name, shape in shapes.items()}, **kwargs}
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return cls(encoders, fusion, dict(dataset.tasks), dim=dim, fusion_kwargs=fusion_kwargs,
                   input_stats=stats, **kwargs)


def _input_spec(shape: tuple[int, ...], floating: bool) -> dict[str, Any]:
    """What the model accepts for a modality of per-sample ``shape`` (its ``input_spec`` entry): float features keep
    their feature axis (vectors ``[F]``, frames ``[*, F]``) and image channels (``[C, *, *]``), as the
    standardisation statistics do; token ids may be of any length."""
    if not floating:
        return {"dtype": "int", "shape": [None] * len(shape)}
    if len(shape) == 3:
        return {"dtype": "float", "shape": [shape[0], None, None]}
    return {"dtype": "float", "shape": [None] * (len(shape) - 1) + [shape[-1]]}
