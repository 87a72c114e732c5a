"""CMU-MOSI and CMU-MOSEI from MultiBench's affect pickles.

Layout (MultiBench ``datasets/affect/get_data.py``, MulT ``src/dataset.py``): a pickled dict with keys ``train``,
``valid``, ``test``; each a dict of

* ``vision``: ``(N, T_v, D_v)`` (FACET; ``mosi_raw.pkl``/``mosei_senti_data.pkl``: ``D_v = 35``, ``mosi_data.pkl``:
  20), ``audio``: ``(N, T_a, D_a)`` (COVAREP, ``D_a = 74``; ``mosi_data.pkl``: 5), holding ``-inf`` where the log
  energy underflowed, ``text``: ``(N, T_t, 300)`` GloVe vectors;
* ``labels``: ``(N, 1, 1)`` float sentiment in [-3, 3]; ``id``: the segment ids.

The loaders move each sequence's real steps to the front (the padding to the end, as packed RNNs and the temporal
GNN expect) and mark them in ``step_mask``.

Aligned files (word-aligned, ``T = 50`` for every modality) are padded with all-zero rows at the **start** of each
sequence; unaligned files (``*_noalign.pkl``) have a different ``T`` per modality (MOSI: vision 500, audio 375,
text 50), padded the same way.

The pickle is read by :func:`read_pickle`, a restricted unpickler: it builds only dicts, lists, tuples, strings,
bytes, numbers and numpy arrays / scalars / dtypes, and refuses any other global (a pickle can name any callable,
e.g. ``os.system``, and plain ``pickle.load`` would call it) with the path and the global's name.
"""

from __future__ import annotations

import importlib
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgraph.data.avmnist import layout_error
from mmgraph.data.dataset import MultiModalDataset
from mmgraph.metrics import binary_sentiment

__all__ = ["AFFECT_LAYOUT", "AFFECT_MODALITIES", "UnsafePickleError", "binary_sentiment", "load_mosei", "load_mosi",
           "read_pickle"]

AFFECT_MODALITIES = ("text", "audio", "vision")
AFFECT_LAYOUT = ("a pickled dict {'train', 'valid', 'test'}, each {'vision': (N, T, Dv), 'audio': (N, T, Da), "
                 "'text': (N, T, 300), 'labels': (N, 1, 1) sentiment in [-3, 3], 'id': ...}, sequences zero "
                 "left-padded")
_SOURCES = {
    "mosi": "CMU-MOSI (Zadeh et al., 2016) in MultiBench's affect pickles (https://github.com/pliang279/MultiBench, "
            "datasets/affect/get_data.py: mosi_raw.pkl, mosi_data.pkl, mosi_raw_noalign.pkl) or MulT's "
            "(https://github.com/yaohungt/Multimodal-Transformer, src/dataset.py)",
    "mosei": "CMU-MOSEI (Zadeh et al., 2018) in MultiBench's affect pickles (https://github.com/pliang279/MultiBench,"
             " datasets/affect/get_data.py: mosei_senti_data.pkl, mosei_raw_noalign.pkl) or MulT's "
             "(https://github.com/yaohungt/Multimodal-Transformer, src/dataset.py)",
}


# The globals a pickle of numpy arrays, scalars and dtypes names (protocols 0-5; numpy 1.x writes ``numpy.core``,
# numpy 2.x ``numpy._core``), each mapped to where this numpy keeps it; ``_codecs.encode`` rebuilds ``bytes`` in
# protocols 0-2.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
    **{(f"numpy.{core}.multiarray", name): ("multiarray", name) for core in ("core", "_core")
       for name in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for core in ("core", "_core")},
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that a data file has no use for (a class, a function such as ``os.system``)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`_PICKLE_GLOBALS` and refuses every other one."""

    def __init__(self, handle, path: Path) -> None:
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        target = _PICKLE_GLOBALS.get((module, name))
        if target is None:
            raise UnsafePickleError(
                f"{self.path}: refused to load the global {module}.{name}: a data pickle may only hold dicts, lists, "
                "tuples, strings, numbers and numpy arrays (loading it would call or build that object)")
        where, attribute = target
        if where in ("multiarray", "numeric"):
            where = _numpy_core(where)
        return getattr(importlib.import_module(where), attribute)


def _numpy_core(submodule: str) -> str:
    """``numpy._core.<submodule>`` on numpy 2.x, ``numpy.core.<submodule>`` on numpy 1.x (no deprecation warning)."""
    try:
        importlib.import_module(f"numpy._core.{submodule}")
        return f"numpy._core.{submodule}"
    except ImportError:
        return f"numpy.core.{submodule}"


def read_pickle(path: str | Path) -> Any:
    """Read a pickled data file with the restricted unpickler: dicts, lists, tuples, strings, bytes, numbers, numpy
    arrays, scalars and dtypes only; no code in the file runs.

    Raises:
        UnsafePickleError: naming ``path`` and the global, when the file names anything else (a class, a
            function such as ``os.system``); or the usual unpickling errors of a damaged file.
    """
    with open(path, "rb") as handle:
        return _RestrictedUnpickler(handle, Path(path)).load()


def load_mosi(path: str | Path) -> dict[str, MultiModalDataset]:
    """CMU-MOSI from a MultiBench affect pickle (``mosi_raw.pkl``, ``mosi_data.pkl`` or ``mosi_raw_noalign.pkl``).

    See :func:`load_mosei`; the same layout, named ``"mosi"``.
    """
    return _load_affect(Path(path), "mosi")


def load_mosei(path: str | Path) -> dict[str, MultiModalDataset]:
    """CMU-MOSEI from a MultiBench affect pickle (``mosei_senti_data.pkl`` or ``mosei_raw_noalign.pkl``).

    Each split becomes a :class:`MultiModalDataset` with modalities ``text: [N, T_t, 300]``, ``audio: [N, T_a,
    D_a]``, ``vision: [N, T_v, D_v]`` (in that order), ``step_mask = {m: BoolTensor[N, T_m]}`` marking the real
    steps, which come first (the leading all-zero padding rows of the file are moved to the end and are False),
    ``-inf`` audio values replaced by 0 (as MultiBench does), a modality whose every step is padding marked absent
    in ``mask``, and the regression task ``"sentiment"`` (float in [-3, 3]; :func:`binary_sentiment` gives the
    binary label of the literature). Samples with NaN features, or with no real step in any modality, are dropped
    with a warning (MultiBench drops NaN samples too).

    The file is read by :func:`read_pickle` (a restricted unpickler: numpy arrays, dicts, lists, strings and
    numbers only), so a pickle from a download link cannot run code here.

    Returns:
        ``{"train", "valid", "test"}``.

    Raises:
        FileNotFoundError / ValueError naming the file, the expected layout and where the data set is published.
    """
    return _load_affect(Path(path), "mosei")


def _load_affect(path: Path, name: str) -> dict[str, MultiModalDataset]:
    source = _SOURCES[name]
    if not path.is_file():
        raise layout_error(path, "file not found", AFFECT_LAYOUT, source)
    try:
        content = read_pickle(path)
    except UnsafePickleError as error:
        raise ValueError(f"{error}. The data set is published by {source}") from None
    except Exception as error:  # a damaged file fails anywhere in numpy's or pickle's C code (TypeError, ...)
        raise layout_error(path, f"not a readable pickle ({type(error).__name__}: {error})", AFFECT_LAYOUT,
                           source) from error
    if not isinstance(content, dict) or any(not isinstance(content.get(s), dict) for s in ("train", "valid", "test")):
        found = sorted(content, key=str) if isinstance(content, dict) else type(content).__name__
        raise layout_error(path, f"expected a dict with dict entries 'train', 'valid', 'test', got {found}",
                           AFFECT_LAYOUT, source)
    return {split: _split(content[split], f"split {split!r}", path, name, source)
            for split in ("train", "valid", "test")}


def _real_steps_first(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded sequences ``(N, T, D)`` -> the same real steps moved to the front (padding at the end, as packed
    RNNs and temporal nodes expect) and the step mask ``(N, T)``, True = real step. The padding is the run of
    all-zero rows at the start of each sequence; an all-zero row after the first real step stays a real step."""
    num_steps = x.shape[1]
    nonzero = (x != 0).any(axis=2)                                         # [N, T]
    padding = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), num_steps)  # leading all-zero rows
    source = (np.arange(num_steps)[None, :] + padding[:, None]) % num_steps  # [N, T]: roll left by the padding
    mask = np.arange(num_steps)[None, :] < (num_steps - padding)[:, None]
    return np.take_along_axis(x, source[:, :, None], axis=1) * mask[:, :, None], mask


def _split(part: dict, where: str, path: Path, name: str, source: str) -> MultiModalDataset:
    def fail(problem: str) -> Exception:
        return ValueError(f"{path}: {where}: {problem}. Expected layout: {AFFECT_LAYOUT}. The data set is "
                          f"published by {source}")

    def array(key: str) -> np.ndarray:
        try:
            return np.asarray(part[key])
        except (ValueError, TypeError) as error:  # ragged nested lists, objects numpy cannot convert
            raise fail(f"{key!r}: not an array ({type(error).__name__}: {error})") from None

    missing = [key for key in (*AFFECT_MODALITIES, "labels") if key not in part]
    if missing:
        raise fail(f"missing keys {missing} (found {sorted(part, key=str)})")
    labels = array("labels")
    if labels.dtype.kind not in "biuf" or labels.ndim not in (1, 2, 3) or labels.size != len(labels):
        raise fail(f"'labels': expected (N, 1, 1) sentiment scores, got {labels.dtype} of shape {labels.shape}")
    labels = labels.reshape(-1).astype(np.float32)
    features, steps = {}, {}
    for modality in AFFECT_MODALITIES:
        x = array(modality)
        if x.dtype.kind not in "biuf" or x.ndim != 3 or len(x) != len(labels):
            raise fail(f"{modality!r}: expected a numeric array (N={len(labels)}, T, D), got {x.dtype} of shape "
                       f"{x.shape}")
        x = np.where(np.isneginf(x), 0.0, x).astype(np.float32)  # audio's -inf log energies, as MultiBench
        features[modality], steps[modality] = _real_steps_first(x)
    broken = np.zeros(len(labels), dtype=bool)
    for x in features.values():
        broken |= ~np.isfinite(x).all(axis=(1, 2))
    broken |= ~np.isfinite(labels)
    empty = ~np.stack([s.any(axis=1) for s in steps.values()], axis=1).any(axis=1)
    keep = ~(broken | empty)
    if not keep.all():
        warnings.warn(f"{path}: {where}: dropped {int(broken.sum())} samples with NaN/Inf values and "
                      f"{int((empty & ~broken).sum())} with no real step in any modality", stacklevel=4)
    present = {m: torch.from_numpy(s[keep].any(axis=1)) for m, s in steps.items()}
    return MultiModalDataset({m: torch.from_numpy(x[keep]) for m, x in features.items()},
                             {"sentiment": torch.from_numpy(labels[keep])}, mask=present,
                             step_mask={m: torch.from_numpy(s[keep]) for m, s in steps.items()},
                             task_types={"sentiment": "regression"}, name=name)
