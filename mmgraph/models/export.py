"""ONNX export of a :class:`~mmgraph.models.FusionModel`: :func:`export_onnx` writes one ``.onnx`` file whose inputs
are ``inputs_<modality>``, whose outputs are named by task (``label``, ...: the raw outputs ``[B, C]``) and whose
metadata (``metadata_props``) carries what a consumer needs to read them: class names, tasks, modalities. Needs the
optional extra ``mmgraph[export]`` (onnx, onnxscript) and torch >= 2.5."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from mmgraph.io import write_atomic
from mmgraph.utils import eval_mode

__all__ = ["export_onnx"]


def export_onnx(model: nn.Module, path: str | os.PathLike, inputs: Mapping[str, Tensor], max_batch: int = 4096
                ) -> Path:
    """Export ``model`` (eval mode) to ONNX at ``path`` (atomic), with a dynamic batch of 1 to ``max_batch``.

    Args:
        model: a :class:`~mmgraph.models.FusionModel`.
        path: destination ``.onnx`` file.
        inputs: an example batch ``{modality: Tensor[B, ...]}`` (every modality of the model).

    Returns:
        the path written. The file's outputs are ``model.tasks`` in order (raw outputs ``[B, C]``, ``C = 1`` for
        regression); its ``metadata_props`` hold ``mmgraph.class_names`` (JSON ``{task: [name, ...]}``),
        ``mmgraph.tasks`` (JSON ``{task: num_classes}``, 0 = regression), ``mmgraph.modalities`` (JSON list, the
        input order) and ``mmgraph.version``.
    """
    import onnx_ir

    from mmgraph import __version__

    tasks, modalities = dict(getattr(model, "tasks", {})), list(getattr(model, "modalities", []))
    if not tasks or not modalities:
        raise TypeError(f"model: expected a FusionModel (with tasks and modalities), got {type(model).__name__}")
    if not isinstance(inputs, Mapping) or sorted(inputs) != sorted(modalities):
        raise ValueError(f"inputs: expected an example batch {{modality: Tensor}} for {modalities}, got "
                         f"{sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__}")
    inputs = {name: inputs[name] for name in modalities}
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on torch internals, not the user's code
        program = torch.onnx.export(model, (), kwargs={"inputs": inputs}, dynamo=True, verbose=False,
                                    output_names=list(tasks),
                                    dynamic_shapes={"inputs": {name: {0: batch} for name in inputs}})
    program.model.metadata_props.update({
        "mmgraph.class_names": json.dumps(dict(getattr(model, "class_names", {}))),
        "mmgraph.tasks": json.dumps(tasks), "mmgraph.modalities": json.dumps(modalities),
        "mmgraph.version": str(__version__)})
    return write_atomic(path, onnx_ir.to_proto(program.model).SerializeToString())
