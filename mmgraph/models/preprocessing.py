"""Preprocessing inside the model: :class:`Standardize` (z-scoring with the statistics kept as buffers, so raw
features go in at train and predict time), the check that an input has the shape its statistics were taken on,
and :func:`prepare` (raw columns -> the model's input tensors and masks, with the kinds and step counts it was
built for)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmgraph.utils import check_int, describe, tracing

__all__ = ["Standardize", "check_input_kinds", "prepare"]


class Standardize(nn.Module):
    """``(x - mean) / std`` with the statistics as buffers (saved and moved with the model).

    Shapes: ``mean``, ``std`` broadcast against ``x: [B, ...]`` (``[1, F]``, ``[1, 1, F]``, ``[1, C, 1, 1]``).
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if not isinstance(mean, Tensor) or not isinstance(std, Tensor) or mean.shape != std.shape:
            raise ValueError(f"input_stats: expected (mean, std) tensors of one shape, got {describe(mean)} and "
                             f"{describe(std)}")
        self.register_buffer("mean", mean.detach().float().clone())
        self.register_buffer("std", std.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mean.shape)}"


def _check_standardized_shape(name: str, x: Tensor, mean: Tensor) -> None:
    """``inputs[name]`` must have the per-sample shape the standardisation statistics were taken on (``mean``:
    ``[1, F]``, ``[1, 1, F]``, ``[1, C, 1, 1]``; a 1 there matches any size), or broadcasting would fail inside
    the model, or silently succeed on a wrong layout."""
    if tracing():
        return
    _check_input_shape(name, x, [None if m == 1 else m for m in mean.shape[1:]])


def _shape_text(shape: Sequence[int | None]) -> str:
    """A per-sample shape as an error message writes it, batch first: ``[None, 8]`` -> ``"B, *, 8"``."""
    return ", ".join(["B", *("*" if s is None else str(s) for s in shape)])


def _check_input_shape(name: str, x: Tensor, shape: Sequence[int | None]) -> None:
    """``inputs[name]: [B, *shape]`` (None in ``shape`` = any size), whatever the rank of ``x``."""
    if x.dim() != len(shape) + 1 or any(s is not None and s != n for s, n in zip(shape, x.shape[1:])):
        raise ValueError(f"inputs[{name!r}]: expected shape [{_shape_text(shape)}] (the shape the model was trained "
                         f"on), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------- raw columns
def check_input_kinds(modalities: list[str], input_kinds: Mapping[str, str] | None,
                     fixed_steps: Mapping[str, int] | None) -> tuple[dict[str, str], dict[str, int]]:
    """Validate a model's ``input_kinds`` and ``fixed_steps`` (see :class:`~mmgraph.models.FusionModel`)."""
    from mmgraph.data.columns import KINDS

    kinds, steps = dict(input_kinds or {}), dict(fixed_steps or {})
    for arg, value in (("input_kinds", kinds), ("fixed_steps", steps)):
        unknown = [name for name in value if name not in modalities]
        if unknown:
            raise ValueError(f"{arg}: unknown modalities {unknown}; expected a subset of {modalities}")
    for name, kind in kinds.items():
        if kind not in KINDS:
            raise ValueError(f"input_kinds[{name!r}]: expected one of {list(KINDS)}, got {kind!r}")
    for name, value in steps.items():
        check_int(f"fixed_steps[{name!r}]", value, 1)
    return kinds, steps


def prepare(model, columns: Any, mask: Any = None, step_mask: Mapping[str, Any] | None = None
            ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor] | None]:
    """The body of :meth:`FusionModel.prepare <mmgraph.models.FusionModel.prepare>`: raw columns (or a data set)
    -> ``(inputs {m: Tensor[N, ...]}, mask {m: BoolTensor[N]}, step_mask {m: BoolTensor[N, T]} | None)`` with the
    model's kinds and fixed step counts."""
    from mmgraph.data.columns import as_columns, column_to_tensor, every_entry_missing
    from mmgraph.data.dataset import MultiModalDataset, _as_tensor

    if isinstance(columns, MultiModalDataset):
        if mask is not None or step_mask is not None:
            raise ValueError("mask, step_mask: a MultiModalDataset carries its own masks; pass them only with "
                             "columns")
        inputs = columns.features
        masks = {name: columns.mask[:, m] for m, name in enumerate(columns.modalities)}
        steps = dict(columns.step_mask or {})
    else:
        columns = as_columns(columns)
        inputs, masks, steps = {}, {}, {}
        for name, values in columns.items():
            # the stored kind decides where the form alone is ambiguous (strings, [N, H, W] images); vector and
            # sequence arrays are read as they are, and a wrong shape meets the model's own shape checks
            kind = model.input_kinds.get(name) if name in model.modalities else None
            if name in model.modalities and every_entry_missing(values):  # e.g. one utterance without video
                inputs[name], masks[name] = _placeholder(model, name, len(values)), torch.zeros(len(values),
                                                                                                dtype=torch.bool)
                continue
            if getattr(model, "input_spec", {}).get(name, {}).get("dtype") == "int" and _integer_array(values):
                inputs[name] = torch.as_tensor(np.asarray(values)).long()  # token ids stay ids
                masks[name] = torch.ones(len(inputs[name]), dtype=torch.bool)
                continue
            read, inputs[name], masks[name], found = column_to_tensor(
                name, values, kind if kind in ("text", "image") else None)
            if read == "text" and kind is not None and kind != "text":  # strings where numbers were trained
                shape = getattr(model, "input_spec", {}).get(name, {}).get("shape")
                raise TypeError(f"columns[{name!r}]: got strings, but the model was trained on {kind} input for "
                                f"{name!r}" + (f" (shape [{_shape_text(shape)}])" if shape is not None else "")
                                + "; give numbers")
            if found is not None:
                steps[name] = found
        if mask is not None:
            for name, given in _named_mask(mask, list(columns), len(next(iter(inputs.values())))).items():
                masks[name] = masks[name] & given
        for name, given in (step_mask or {}).items():
            if name not in inputs:
                raise ValueError(f"step_mask: unknown modality {name!r}; expected one of {list(inputs)}")
            given = _as_tensor(f"step_mask[{name!r}]", given)
            if name in steps:
                raise ValueError(f"step_mask[{name!r}]: columns[{name!r}] is a ragged list whose step mask is "
                                 "built from it; give a step mask only with a padded array [N, T, D]")
            steps[name] = given
    missing = [name for name in model.modalities if name not in inputs]
    unknown = [name for name in inputs if name not in model.modalities]
    if missing or unknown:
        hint = (f"; a modality absent from every sample is a column of None: columns[{missing[0]!r}] = [None] * N"
                if missing else "")
        raise ValueError(f"columns: the model takes modalities {model.modalities}; missing {missing}, unknown "
                         f"{unknown}{hint}")
    for name, length in model.fixed_steps.items():
        inputs[name], fitted = _fit_steps(name, inputs[name], steps.get(name), masks[name], length)
        if fitted is not None:
            steps[name] = fitted
    order = model.modalities
    return ({name: inputs[name] for name in order}, {name: masks[name] for name in order},
            {name: steps[name] for name in order if name in steps} or None)


def _placeholder(model, name: str, num_samples: int) -> Tensor:
    """Zeros of the form ``model`` takes for modality ``name`` (from its ``input_spec``, ``input_kinds`` and image
    encoder), for a column missing in every sample: masked out, so their values never reach an output."""
    from mmgraph.data.columns import column_to_tensor

    if model.input_kinds.get(name) == "text":
        return column_to_tensor(name, [""] * num_samples, "text")[1]
    spec = getattr(model, "input_spec", {}).get(name)
    if spec is None:
        raise ValueError(f"columns[{name!r}]: every entry is None (missing), and this model records no input_spec "
                         f"for {name!r} to build its placeholder; give at least one present entry or a mask")
    if spec["dtype"] == "int":
        return torch.zeros(num_samples, *(1 if size is None else size for size in spec["shape"]), dtype=torch.long)
    shape = list(spec["shape"])
    if model.input_kinds.get(name) == "image":
        encoder = (model._config.get("encoders") or {}).get(name) or {}
        height, width = encoder.get("image_size", [8, 8])
        shape[1:] = [height, width]
    return torch.zeros(num_samples, *(1 if size is None else size for size in shape))


def _integer_array(values: Any) -> bool:
    return (isinstance(values, Tensor) and not values.is_floating_point() and not values.is_complex()) or \
        (isinstance(values, np.ndarray) and values.dtype.kind in "iu")


def _named_mask(mask: Any, names: list[str], num_samples: int) -> dict[str, Tensor]:
    """A user's mask (``{m: bool [N]}`` or ``bool [N, M]`` in ``names`` order) as ``{m: BoolTensor[N]}``."""
    from mmgraph.data.dataset import _check_mask

    checked = _check_mask(mask, names, num_samples) if not isinstance(mask, Mapping) else None
    if checked is not None:
        return {name: checked[:, m] for m, name in enumerate(names)}
    unknown = [name for name in mask if name not in names]
    if unknown:
        raise ValueError(f"mask: unknown modalities {unknown}; expected some of {names}")
    full = _check_mask(dict(mask), names, num_samples)
    return {name: full[:, m] for m, name in enumerate(names) if name in mask}


def _fit_steps(name: str, x: Tensor, steps: Tensor | None, present: Tensor, length: int
               ) -> tuple[Tensor, Tensor | None]:
    """Pad ``x [N, T, ...]`` with zeros (or drop padded steps) to exactly ``length`` steps; the step mask follows.
    Real steps beyond ``length`` are refused: the model was built for ``length`` aligned steps."""
    if x.dim() < 3:  # not a sequence: the model's input check names the expected shape
        return x, steps
    real = torch.ones(x.shape[:2], dtype=torch.bool) if steps is None else steps.bool()
    if tuple(real.shape) != tuple(x.shape[:2]):
        raise ValueError(f"step_mask[{name!r}]: expected shape {tuple(x.shape[:2])}, got {tuple(real.shape)}")
    real = real & present[:, None]
    if x.shape[1] > length:
        if bool(real[:, length:].any()):
            raise ValueError(f"columns[{name!r}]: sequences of up to {int(real.sum(1).max())} real steps, but the "
                             f"model fuses {name!r} as {length} aligned temporal steps; trim them to {length}")
        x, real = x[:, :length], real[:, :length]
    elif x.shape[1] < length:
        pad = length - x.shape[1]
        x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)
        real = torch.cat([real, real.new_zeros(real.shape[0], pad)], dim=1)
    return x, real
