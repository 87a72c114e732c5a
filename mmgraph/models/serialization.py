"""The model file: :func:`save_model` writes a :class:`~mmgraph.models.FusionModel` to one safetensors file;
:func:`load_model` rebuilds the model from it with no data at hand. They are the bodies of :meth:`FusionModel.save
<mmgraph.models.FusionModel.save>` and :meth:`FusionModel.load <mmgraph.models.FusionModel.load>`.

Format 2 (written now) is a plain `safetensors <https://github.com/huggingface/safetensors>`_ file: any language
reads it without executing anything (``safetensors.safe_open(path, "pt")`` in Python). Its tensors are the model's
``state_dict`` (weights and the standardisation buffers; an int8 layer as ``<layer>.weight`` int8 ``[out, in]``
plus ``<layer>.weight_scale`` float32 ``[out]``); its metadata (str -> str) holds

* ``format``: ``"mmgraph.model"``; ``format_version``: ``"2"`` (:data:`MODEL_FORMAT`);
* ``config``: JSON, the constructor arguments (:meth:`FusionModel.config <mmgraph.models.FusionModel.config>`);
* ``preprocessing``: JSON, ``{modality: {"kind": "standardize", "mean": tensor name, "std": tensor name}}``;
* ``class_names``: JSON, ``{task: [name of class 0, ...]}``;
* ``quantization``: JSON, ``{"int8_weight_per_channel": [layer names]}`` (``{}`` for a float model);
* ``versions``: JSON, ``{"mmgraph", "torch", "safetensors"}`` of the writer;
* ``sha256``: hex SHA-256 over every tensor, in name order, of ``name \\0 dtype \\0 shape \\0 bytes``, then every
  other metadata entry, in key order, of ``key \\0 value \\0`` (:func:`content_digest`).

Format 1 (mmgraph 0.1.0: the :mod:`mmgraph.io` checksummed ``torch.save`` envelope, read with ``weights_only=True``)
is still read. Every failure names the path: damage is a :class:`~mmgraph.io.CorruptFileError`; an intact file this
version cannot use (a newer format, a config key it does not know, weights that disagree with the config) an
:class:`~mmgraph.io.IncompatibleFileError` saying what differs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mmgraph.io import CorruptFileError, IncompatibleFileError, load_file, write_atomic
from mmgraph.models.quantization import Int8Linear, _replace, int8_weight

if TYPE_CHECKING:
    from mmgraph.models.fusion_model import FusionModel

__all__ = ["MODEL_FORMAT", "content_digest", "load_model", "save_model"]

MODEL_FORMAT = 2
_MAGIC = "mmgraph.model"
_INT8 = "int8_weight_per_channel"


def save_model(model: FusionModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` as safetensors (atomic; see the module docstring); returns the path written."""
    import safetensors
    import safetensors.torch

    from mmgraph import __version__

    config = model.config()
    _check_plain("config", config)
    tensors, int8_layers = _tensors(model)
    metadata = {
        "format": _MAGIC, "format_version": str(MODEL_FORMAT), "config": json.dumps(config),
        "preprocessing": json.dumps({name: {"kind": "standardize", "mean": f"scalers.{name}.mean",
                                            "std": f"scalers.{name}.std"} for name in model.scalers}),
        "class_names": json.dumps(model.class_names),
        "quantization": json.dumps({_INT8: int8_layers} if int8_layers else {}),
        "versions": json.dumps({"mmgraph": str(__version__), "torch": str(torch.__version__),
                                "safetensors": str(safetensors.__version__)})}
    metadata["sha256"] = content_digest(tensors, metadata)
    return write_atomic(path, safetensors.torch.save(tensors, metadata))


def load_model(cls: type[FusionModel], path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> FusionModel:
    """Rebuild a ``cls`` model written by :func:`save_model`, or by mmgraph 0.1.0 (format 1); see
    :meth:`FusionModel.load <mmgraph.models.FusionModel.load>`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive: format 1
    if zipped:
        payload = load_file(path, kind="model", map_location="cpu")
        version = payload.get("format")
        _check_version(path, version)
        if version != 1 or not isinstance(payload.get("config"), dict) or not isinstance(
                payload.get("state_dict"), dict):
            raise CorruptFileError(f"{path}: model file format {version!r} without a config and state_dict")
        config, tensors, int8_layers = dict(payload["config"]), payload["state_dict"], []
        versions = dict(payload.get("versions", {}))
        from mmgraph.fusion.graph import format_1_config  # the GNN defaults of format 1 (changed by issue 21)

        config = format_1_config(config)
    else:
        config, tensors, int8_layers, versions = _read_safetensors(path)
    model = _build(cls, path, config, versions)
    for name in int8_layers:
        module = model.get_submodule(name)
        if not isinstance(module, torch.nn.Linear):
            raise IncompatibleFileError(f"{path}: quantization names {name!r} as an int8 linear layer, but the "
                                        f"config builds a {type(module).__name__} there")
        _replace(model, name, Int8Linear(torch.zeros(module.weight.shape, dtype=torch.int8),
                                         torch.ones(module.out_features), module.bias))
    _check_weights(path, model, tensors)
    model.load_state_dict(tensors)
    model.versions = versions
    return model.to(map_location).eval()


def content_digest(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    """SHA-256 over ``tensors`` (in name order: ``name \\0 dtype \\0 shape \\0`` then the raw bytes) and the
    ``metadata`` entries other than ``sha256`` (in key order: ``key \\0 value \\0``)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    for key in sorted(metadata):
        if key != "sha256":
            digest.update(f"{key}\0{metadata[key]}\0".encode())
    return digest.hexdigest()


def _tensors(model: FusionModel) -> tuple[dict[str, Tensor], list[str]]:
    """The state dict as plain CPU tensors (own storage each, as safetensors needs), int8 layers of any origin
    (:func:`~mmgraph.models.quantization.int8_weight`) as ``weight`` + ``weight_scale`` (+ ``bias``)."""
    int8_layers, tensors = [], {}
    for name, module in model.named_modules():
        quantized = int8_weight(module)
        if quantized is None:
            continue
        int8_layers.append(name)
        weight, scale, bias = quantized
        tensors.update({f"{name}.weight": weight, f"{name}.weight_scale": scale})
        if bias is not None:
            tensors[f"{name}.bias"] = bias
    owned = tuple(f"{name}." for name in int8_layers)
    for key, value in model.state_dict().items():
        if key.startswith(owned):
            continue
        if type(value) not in (Tensor, torch.nn.Parameter):  # packed params, tensor subclasses of other schemes
            raise TypeError(f"model: state_dict[{key!r}] is a {type(value).__name__}, which a model file cannot "
                            "store; of quantised layers it stores int8 nn.Linear weights (quantize_int8, "
                            "torch.ao quantize_dynamic of nn.Linear, torchao Int8WeightOnlyConfig) only")
        tensors[key] = value
    return {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}, int8_layers


def _read_safetensors(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], list[str], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    size = path.stat().st_size
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != _MAGIC:
                raise CorruptFileError(f"{path}: not an mmgraph model file (no mmgraph metadata), or its header is "
                                       "corrupt")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        if isinstance(error, (CorruptFileError, IncompatibleFileError)):
            raise
        first = str(error).splitlines()[0] if str(error) else ""
        raise CorruptFileError(f"{path}: corrupt or truncated model file ({size} bytes), cannot be read: "
                               f"{type(error).__name__}: {first}") from error
    # the checksum (which covers format_version) before the version: a flipped bit in the version is corruption,
    # not a newer mmgraph. A newer format keeps this checksum; if it ever did not, the message says so.
    if content_digest(tensors, metadata) != metadata.get("sha256"):
        claimed = _format_number(metadata.get("format_version"))
        newer = claimed is not None and claimed > MODEL_FORMAT
        raise CorruptFileError(f"{path}: corrupt file: the SHA-256 of its tensors and metadata does not match the "
                               "one recorded when it was written" + (
                                   f" (it claims model format {claimed}, newer than this mmgraph's {MODEL_FORMAT}: "
                                   "if a newer mmgraph wrote it, upgrade mmgraph to read it)" if newer else ""))
    _check_version(path, metadata.get("format_version"))
    try:
        config = json.loads(metadata["config"])
        versions = json.loads(metadata.get("versions", "{}"))
        int8_layers = json.loads(metadata.get("quantization", "{}")).get(_INT8, [])
    except (KeyError, ValueError, AttributeError) as error:
        raise CorruptFileError(f"{path}: corrupt metadata despite a matching checksum: {error}") from error
    if not isinstance(config, dict):
        raise CorruptFileError(f"{path}: corrupt metadata: config is a {type(config).__name__}, not a dict")
    return config, tensors, list(int8_layers), versions


def _format_number(version: Any) -> int | None:
    """The recorded ``format_version`` as an int, None when it is not a number."""
    try:
        return int(version)
    except (TypeError, ValueError):
        return None


def _check_version(path: Path, version: Any) -> None:
    """Refuse a format this version cannot read, saying which and what to do."""
    number = _format_number(version)
    if number is None:
        raise CorruptFileError(f"{path}: model file format {version!r} is not a number; the header is corrupt")
    if number > MODEL_FORMAT:
        raise IncompatibleFileError(f"{path}: written by a newer mmgraph (model format {number}; this mmgraph "
                                    f"reads formats 1 to {MODEL_FORMAT}); upgrade mmgraph to read it")


def _build(cls: type[FusionModel], path: Path, config: dict[str, Any], versions: Mapping[str, str]) -> FusionModel:
    """``cls(**config)`` with the preprocessing statistics as placeholders of the recorded shapes (the buffers
    come with the weights). A key this version does not know, or a setting it refuses, names the file."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = [key for key in config if key not in known]
    writer = f"mmgraph {versions.get('mmgraph', '?')}"
    if unknown:
        raise IncompatibleFileError(f"{path}: config keys {unknown} are not known to this mmgraph (written by "
                                    f"{writer}; this version knows {sorted(known)}); upgrade mmgraph to read it")
    config = dict(config)
    # written before the unimodal heads (docs/design.md, "Sixth round"): the model had none, whatever its fusion
    config.setdefault("unimodal_weight", 0.0)
    shapes = config.pop("input_stats", None) or {}
    config["input_stats"] = {name: (torch.zeros(shape), torch.ones(shape)) for name, shape in shapes.items()}
    try:
        return cls(**config)
    except (TypeError, ValueError) as error:
        raise IncompatibleFileError(f"{path}: its config (written by {writer}) does not build a model with this "
                                    f"mmgraph: {error}") from error


def _check_weights(path: Path, model: FusionModel, tensors: Mapping[str, Tensor]) -> None:
    """The file's tensors must be exactly the state dict the config builds: else list what differs (parameter,
    shape in the file, shape the config builds) instead of torch's ``Error(s) in loading state_dict``."""
    expected = model.state_dict()
    lines = [f"{key}: file {list(tensors[key].shape)} {str(tensors[key].dtype).removeprefix('torch.')}, config "
             f"builds {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
             for key, value in expected.items() if key in tensors and (
                 tensors[key].shape != value.shape or tensors[key].is_floating_point() != value.is_floating_point())]
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    if missing:
        lines.append(f"in the config's model, not in the file: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        lines.append(f"in the file, not in the config's model: {unexpected[:8]}"
                     f"{' ...' if len(unexpected) > 8 else ''}")
    if lines:
        shown = "\n  ".join(lines[:10])
        raise IncompatibleFileError(f"{path}: its config and weights disagree (the file was not written by "
                                    f"FusionModel.save from one model):\n  {shown}")


def _check_plain(where: str, value: Any) -> None:
    """Refuse values that JSON (and ``torch.load(weights_only=True)``) cannot carry (naming where they are)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; a model file stores str keys only")
            _check_plain(f"{where}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(f"{where}[{index}]", item)
    elif not (value is None or type(value) in (str, int, float, bool)):  # exact types: no str/int subclasses
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a model file (plain values only: "
                        "str, numbers, lists, dicts); e.g. give relations as a list of triples, not a graph object")
