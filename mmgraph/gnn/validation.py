"""Validation at the boundary of :class:`~mmgraph.gnn.MultiModalGNN`: keys, shapes, dtypes, masks, values.

Every error names the argument, what was expected and what was received. Value checks (NaN/Inf in present entries,
samples with nothing present) need the data, so they are skipped while ``torch.compile`` or ``torch.export`` traces
the model: a trace must not branch on tensor values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmgraph.fusion.base import check_mask  # noqa: F401 (the package's one modality-mask check)
from mmgraph.graph import GraphLayout
from mmgraph.utils import check_choice, describe, tracing  # noqa: F401 (check_choice, tracing: re-exported)


def check_inputs(inputs: Mapping[str, Tensor], dims: Mapping[str, int]) -> int:
    batch = None
    for name, x in inputs.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"inputs[{name!r}]: expected a Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"inputs[{name!r}]: expected a floating-point tensor, got dtype {x.dtype} "
                            "(encode integer data, e.g. token ids, before fusion)")
        if x.dim() not in (2, 3) or x.shape[-1] != dims[name]:
            raise ValueError(f"inputs[{name!r}]: expected shape [B, {dims[name]}] or [B, T, {dims[name]}], "
                             f"got {tuple(x.shape)}")
        if x.dim() == 3 and x.shape[1] == 0:
            raise ValueError(f"inputs[{name!r}]: expected at least one time step, got shape {tuple(x.shape)}")
        if batch is None:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            sizes = {k: v.shape[0] for k, v in inputs.items()}
            raise ValueError(f"inputs: batch sizes disagree: {sizes}")
    if batch == 0:
        raise ValueError("inputs: empty batch (B = 0)")
    return batch


def check_step_mask(step_mask, inputs: Mapping[str, Tensor], batch: int) -> dict[str, Tensor] | None:
    if step_mask is None:
        return None
    if not isinstance(step_mask, Mapping):
        raise TypeError(f"step_mask: expected a dict {{modality: BoolTensor[B, T]}}, got {type(step_mask).__name__}")
    for name, value in step_mask.items():
        if name not in inputs:
            raise ValueError(f"step_mask: unknown modality {name!r}; expected one of {list(inputs)}")
        x = inputs[name]
        expected = (batch, x.shape[1] if x.dim() == 3 else 1)
        if not isinstance(value, Tensor) or value.dtype != torch.bool or tuple(value.shape) != expected:
            raise ValueError(f"step_mask[{name!r}]: expected BoolTensor of shape {expected}, got {describe(value)}")
    return dict(step_mask)


def check_values(inputs: Mapping[str, Tensor], node_mask: Tensor, layout: GraphLayout,
                  modalities: Mapping[str, int]) -> None:
    for m, (name, x) in enumerate(inputs.items()):
        x = x if x.dim() == 3 else x.unsqueeze(1)
        present = node_mask[:, layout.node_type == m]  # [B, T_m]
        bad = ~torch.isfinite(x).all(-1) & present
        if bool(bad.any()):
            sample = int(bad.any(-1).nonzero()[0, 0])
            raise ValueError(f"inputs[{name!r}]: NaN or Inf in a present entry (sample {sample}); mark missing "
                             "modalities in `mask` instead")
    empty = ~node_mask.any(1)
    if bool(empty.any()):
        samples = empty.nonzero()[:, 0].tolist()[:10]
        raise ValueError(f"mask: every modality of sample(s) {samples} is masked; each sample needs at least one "
                         f"present modality among {list(modalities)}")
