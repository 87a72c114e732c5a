"""Your data as it comes: raw columns -> tensors, masks and step masks.

A *column* holds one entry per sample of one modality, in any of these forms:

=================================================  ============  ===============================================
what you have                                      kind          what the library stores
=================================================  ============  ===============================================
strings (list, ndarray of ``str``, pandas column)  ``text``      code points ``int64 [N, L]`` (the model's text
                                                                 encoder tokenises them)
list of 2-D arrays ``[T_i, D]``, lengths vary      ``sequence``  zero-padded ``[N, T_max, D]`` + ``step_mask``
array ``[N, D]`` (or ``[N]``, or 1-D entries)      ``vector``    float32 ``[N, D]``
array ``[N, T, D]``                                ``sequence``  float32 ``[N, T, D]``
array ``[N, C, H, W]`` (or 3-D entries)            ``image``     float32 ``[N, C, H, W]``
array ``[N, H, W]`` with ``kinds={m: "image"}``    ``image``     float32 ``[N, 1, H, W]``
=================================================  ============  ===============================================

A ``None`` entry marks that modality missing for that sample (mask False; the stored placeholder is zeros or an
empty string). ``kinds={modality: kind}`` overrides the detection (e.g. ``[N, H, W]`` is a sequence unless told it
is an image). :meth:`MultiModalDataset.from_columns <mmgraph.data.MultiModalDataset.from_columns>` builds a data set
from columns, :meth:`FusionModel.prepare <mmgraph.models.FusionModel.prepare>` applies the same conversion (with the
kinds the model was trained on) at predict time, and :func:`pad_ragged` pads ragged sequences for a ``.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["KINDS", "as_columns", "column_to_tensor", "every_entry_missing", "from_columns", "is_dataframe",
           "pad_ragged"]

KINDS = ("vector", "sequence", "image", "text")


def pad_ragged(sequences: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-pad sequences of different lengths.

    Args:
        sequences: ``N`` entries, each an array ``[T_i, D]`` (or ``[T_i]``, read as ``[T_i, 1]``) with ``T_i >= 1``,
            or ``None`` for a missing sample.

    Returns:
        ``(padded float32 [N, T_max, D], step_mask bool [N, T_max], mask bool [N])``: real steps first, True =
        real step / present sample.

    Example:
        >>> padded, step_mask, mask = pad_ragged([np.ones((3, 2)), None, np.ones((5, 2))])   # [3, 5, 2]
    """
    padded, step_mask, mask = _pad(_check_column_list("sequences", sequences), "sequences")
    return padded, step_mask, mask


def is_dataframe(value: Any) -> bool:
    """Whether ``value`` is a pandas ``DataFrame`` (duck-typed: pandas is not a dependency)."""
    return hasattr(value, "columns") and hasattr(value, "to_dict") and hasattr(value, "iloc")


def as_columns(columns: Any, arg: str = "columns") -> dict[str, Any]:
    """``columns`` (a dict ``{modality: column}`` or a pandas ``DataFrame``, one column per modality) as a dict."""
    if is_dataframe(columns):
        return {str(name): _series_values(columns[name]) for name in columns.columns}
    if not isinstance(columns, Mapping) or not columns:
        raise TypeError(f"{arg}: expected a non-empty dict {{modality: column}} or a pandas DataFrame, got "
                        f"{type(columns).__name__}")
    out = {}
    for name, values in columns.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"{arg}: modality names must be non-empty str, got {name!r}")
        out[name] = _series_values(values) if hasattr(values, "to_numpy") and hasattr(values, "iloc") else values
    return out


def column_to_tensor(name: str, values: Any, kind: str | None = None
                     ) -> tuple[str, Tensor, Tensor, Tensor | None]:
    """One column as ``(kind, tensor [N, ...], mask BoolTensor[N], step_mask BoolTensor[N, T] | None)``.

    ``kind`` (one of :data:`KINDS`) forces the interpretation; None detects it (see the module docstring).
    Text becomes code points (:func:`mmgraph.encoders.text.encode_texts`), missing entries zeros (or ``""``).

    Raises:
        TypeError / ValueError: naming ``columns[name]``, what was expected and what was received.
    """
    arg = f"columns[{name!r}]"
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kinds[{name!r}]: expected one of {list(KINDS)}, got {kind!r}")
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return _from_array(arg, name, values, kind)
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "USO":
            raise TypeError(f"{arg}: expected numbers or strings, got an array of dtype {values.dtype}")
        if values.ndim != 1:
            raise ValueError(f"{arg}: expected one entry per sample (a 1-D array), got an array of shape "
                             f"{values.shape} and dtype {values.dtype}")
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{arg}: expected one entry per sample (a list, an ndarray, a pandas column), got "
                        f"{type(values).__name__}")
    entries = _check_column_list(arg, values)
    present = [entry for entry in entries if entry is not None]
    if all(isinstance(entry, str) for entry in present):
        if kind not in (None, "text"):
            raise ValueError(f"kinds[{name!r}]: {kind!r} given, but {arg} holds strings (kind 'text')")
        from mmgraph.encoders.text import encode_texts

        mask = torch.tensor([entry is not None for entry in entries], dtype=torch.bool)
        return "text", encode_texts(["" if entry is None else entry for entry in entries]), mask, None
    if kind == "text":
        raise ValueError(f"kinds[{name!r}]: 'text' given, but {arg} holds {_entry_type(present)} entries, not "
                         "strings")
    arrays = [_entry_array(arg, i, entry) for i, entry in enumerate(entries)]
    dims = {a.ndim for a in arrays if a is not None}
    if len(dims) > 1:
        raise ValueError(f"{arg}: entries must all have the same number of dimensions, got {sorted(dims)} "
                         "(None marks a missing entry)")
    ndim = dims.pop()
    if ndim == 2 and kind != "image":
        if kind not in (None, "sequence"):
            raise ValueError(f"kinds[{name!r}]: {kind!r} given, but {arg} holds 2-D entries [T_i, D] (kind "
                             "'sequence', or 'image' for [H, W] entries)")
        padded, step_mask, mask = _pad(arrays, arg)
        return "sequence", torch.from_numpy(padded), torch.from_numpy(mask), torch.from_numpy(step_mask)
    stacked, mask = _stack(arg, arrays)
    return _from_array(arg, name, stacked, kind, mask)


def from_columns(cls, columns: Any, targets: Any = None, kinds: Mapping[str, str] | None = None,
                 class_names: Mapping[str, Sequence[str]] | None = None):
    """The body of :meth:`MultiModalDataset.from_columns <mmgraph.data.MultiModalDataset.from_columns>`: a data
    set from raw columns (see the module docstring).

    Args:
        columns: ``{modality: column}`` or a pandas ``DataFrame`` (one column per modality).
        targets: as for :class:`~mmgraph.data.MultiModalDataset` (an array ``[N]``, strings, ``{task: ...}``), or
            the name of a ``DataFrame`` column (taken out of the modalities).
        kinds: ``{modality: "vector" | "sequence" | "image" | "text"}`` overriding the detection.
        class_names: ``{task: [name of class 0, ...]}``.

    Returns:
        a :class:`~mmgraph.data.MultiModalDataset` whose ``kinds`` attribute records each modality's kind.
    """
    if isinstance(targets, str) and is_dataframe(columns):
        if targets not in columns.columns:
            raise ValueError(f"targets: no column {targets!r} in the DataFrame; its columns are "
                             f"{[str(c) for c in columns.columns]}")
        columns, targets = columns.drop(columns=[targets]), _series_values(columns[targets])
    columns = as_columns(columns)
    kinds = dict(kinds or {})
    unknown = [name for name in kinds if name not in columns]
    if unknown:
        raise ValueError(f"kinds: unknown modalities {unknown}; expected some of {list(columns)}")
    features, masks, step_masks, found = {}, {}, {}, {}
    for name, values in columns.items():
        found[name], features[name], masks[name], steps = column_to_tensor(name, values, kinds.get(name))
        if steps is not None:
            step_masks[name] = steps
    sizes = {name: int(x.shape[0]) for name, x in features.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"columns: every modality needs one entry per sample, got {sizes} entries")
    dataset = cls(features, targets, mask=masks, step_mask=step_masks or None, class_names=class_names)
    dataset.kinds = found
    return dataset


# ---------------------------------------------------------------------------------------------------- helpers
def _from_array(arg: str, name: str, array: np.ndarray, kind: str | None, mask: np.ndarray | None = None
                ) -> tuple[str, Tensor, Tensor, None]:
    """A numeric array ``[N, ...]`` of one kind (see the module docstring)."""
    if array.ndim == 0:
        raise ValueError(f"{arg}: expected one entry per sample ([N, ...]), got a scalar")
    if array.ndim == 1:
        array = array[:, None]
    detected = {2: "vector", 3: "sequence", 4: "image"}.get(array.ndim)
    kind = kind or detected
    allowed = {"vector": (2,), "sequence": (2, 3), "image": (3, 4)}[kind] if kind in ("vector", "sequence", "image") \
        else ()
    if detected is None or array.ndim not in allowed:
        raise ValueError(f"{arg}: an array of shape {array.shape} cannot be kind {kind!r}; expected [N, D] "
                         "(vector), [N, T, D] (sequence), [N, H, W] or [N, C, H, W] (image)")
    if kind == "sequence" and array.ndim == 2:
        array = array[:, :, None]  # [N, T] -> [N, T, 1]
    if kind == "image" and array.ndim == 3:
        array = array[:, None]  # [N, H, W] -> [N, 1, H, W]
    present = np.ones(len(array), dtype=bool) if mask is None else mask
    return kind, torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), torch.from_numpy(present), None


def every_entry_missing(values: Any) -> bool:
    """Whether a column is a non-empty list, tuple or object array of ``None`` only (a stream missing from every
    sample): nothing to read a shape from. A data set refuses it; ``FusionModel.prepare`` builds a placeholder."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "O" and values.ndim == 1:
        values = values.tolist()
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(entry is None for entry in values)


def _check_column_list(arg: str, values: Sequence[Any]) -> list[Any]:
    entries = list(values)
    if not entries:
        raise ValueError(f"{arg}: expected at least one entry, got none")
    if every_entry_missing(entries):
        raise ValueError(f"{arg}: every entry is None (missing); a modality needs at least one present sample")
    return entries


def _entry_array(arg: str, index: int, entry: Any) -> np.ndarray | None:
    if entry is None:
        return None
    if isinstance(entry, Tensor):
        entry = entry.detach().cpu().numpy()
    if isinstance(entry, str):
        raise TypeError(f"{arg}[{index}]: a string among numeric entries; a column holds either strings (text) or "
                        "arrays")
    array = np.asarray(entry)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{arg}[{index}]: expected numbers, got {type(entry).__name__} of dtype {array.dtype}")
    return array


def _pad(arrays: Sequence[Any], arg: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged ``[T_i, D]`` (or ``[T_i]``) entries / None -> ``(padded [N, T_max, D], step_mask [N, T_max],
    mask [N])``."""
    checked = []
    for index, entry in enumerate(arrays):
        array = _entry_array(arg, index, entry)
        if array is not None:
            if array.ndim == 1:
                array = array[:, None]
            if array.ndim != 2 or array.shape[0] == 0:
                raise ValueError(f"{arg}[{index}]: expected a sequence [T, D] with T >= 1 (None marks a missing "
                                 f"entry), got shape {array.shape}")
        checked.append(array)
    widths = {a.shape[1] for a in checked if a is not None}
    if len(widths) > 1:
        first = {a.shape[1]: i for i, a in reversed(list(enumerate(checked))) if a is not None}
        raise ValueError(f"{arg}: every entry needs the same feature width D, got widths {sorted(widths)} (first "
                         f"entries: {dict(sorted(first.items()))})")
    width = widths.pop()
    steps = max(a.shape[0] for a in checked if a is not None)
    padded = np.zeros((len(checked), steps, width), dtype=np.float32)
    step_mask = np.zeros((len(checked), steps), dtype=bool)
    for row, array in enumerate(checked):
        if array is not None:
            padded[row, :len(array)] = array
            step_mask[row, :len(array)] = True
    return padded, step_mask, np.array([a is not None for a in checked], dtype=bool)


def _stack(arg: str, arrays: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Same-shape entries / None -> ``(stacked [N, ...] with zeros for None, mask [N])``."""
    shapes = {a.shape for a in arrays if a is not None}
    if len(shapes) > 1:
        raise ValueError(f"{arg}: entries must share one shape, got {sorted(shapes)[:4]} (ragged sequences are "
                         "lists of 2-D arrays [T_i, D])")
    shape = shapes.pop()
    stacked = np.zeros((len(arrays), *shape), dtype=np.float32)
    for row, array in enumerate(arrays):
        if array is not None:
            stacked[row] = array
    return stacked, np.array([a is not None for a in arrays], dtype=bool)


def _series_values(series: Any) -> Any:
    """A pandas column as an ndarray (numbers) or a list (strings, arrays, None for missing)."""
    values = series.to_numpy()
    if values.dtype.kind in "biuf":
        return values
    return [None if _is_missing(v) else v for v in values.tolist()]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _entry_type(present: list[Any]) -> str:
    return type(next(e for e in present if not isinstance(e, str))).__name__
