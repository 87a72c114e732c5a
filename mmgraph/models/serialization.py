"""The model file: :func:`save_model` writes a :class:`~mmgraph.models.FusionModel`'s constructor config, weights,
preprocessing buffers and versions to one self-describing, checksummed file (see :mod:`mmgraph.io`); :func:`load_model`
rebuilds the model from it with no data at hand. They are the bodies of :meth:`FusionModel.save
<mmgraph.models.FusionModel.save>` and :meth:`FusionModel.load <mmgraph.models.FusionModel.load>`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmgraph.io import CorruptFileError, load_file, save_file

if TYPE_CHECKING:
    from mmgraph.models.fusion_model import FusionModel

__all__ = ["MODEL_FORMAT", "load_model", "save_model"]

# 2: MultiModalGNN's defaults changed (issue 21); a format-1 file is rebuilt with the defaults it was written with
MODEL_FORMAT = 2


def save_model(model: FusionModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` (see :meth:`FusionModel.save <mmgraph.models.FusionModel.save>`); returns the path
    written."""
    from mmgraph import __version__

    config = model.config()
    _check_plain("config", config)
    payload = {"format": MODEL_FORMAT, "config": config,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "versions": {"mmgraph": str(__version__), "torch": str(torch.__version__)}}
    return save_file(path, payload, kind="model")


def load_model(cls: type[FusionModel], path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> FusionModel:
    """Rebuild a ``cls`` model written by :func:`save_model` (see :meth:`FusionModel.load
    <mmgraph.models.FusionModel.load>`)."""
    payload = load_file(path, kind="model", map_location=map_location)
    if payload.get("format") not in (1, MODEL_FORMAT) or not isinstance(payload.get("config"), dict):
        raise CorruptFileError(f"{path}: model file format {payload.get('format')!r}, expected {MODEL_FORMAT} (or 1)")
    config = dict(payload["config"])
    if payload["format"] == 1:
        from mmgraph.fusion.graph import format_1_config

        config = format_1_config(config)
    shapes = config.pop("input_stats")
    config["input_stats"] = {name: (torch.zeros(shape), torch.ones(shape)) for name, shape in shapes.items()}
    model = cls(**config)
    model.load_state_dict(payload["state_dict"])
    model.versions = dict(payload.get("versions", {}))
    return model.to(map_location).eval()


def _check_plain(where: str, value: Any) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` cannot read back (naming where they are)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_plain(f"{where}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(f"{where}[{index}]", item)
    elif not (value is None or type(value) in (str, int, float, bool)):  # exact types: no str/int subclasses
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a model file (plain values only: "
                        "str, numbers, lists, dicts); e.g. give relations as a list of triples, not a graph object")
