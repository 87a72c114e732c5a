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
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from mmgraph.data.avmnist import layout_error
from mmgraph.data.dataset import MultiModalDataset
from mmgraph.metrics import binary_sentiment

__all__ = ["AFFECT_LAYOUT", "AFFECT_MODALITIES", "binary_sentiment", "load_mosei", "load_mosi"]

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


def load_mosi(path: str | Path) -> dict[str, MultiModalDataset]:
    """CMU-MOSI from a MultiBench affect pickle (``mosi_raw.pkl``, ``mosi_data.pkl`` or ``mosi_raw_noalign.pkl``).

    See :func:`load_mosei`; the same layout, named ``"mosi"``.
    """
    return _load_affect(Path(path), "mosi")


def load_mosei(path: str | Path) -> dict[str, MultiModalDataset]:
    """CMU-MOSEI from a MultiBench affect pickle (``mosei_senti_data.pkl`` or ``mosei_raw_noalign.pkl``).

    Each split becomes a :class:`MultiModalDataset` with modalities ``text: [N, T_t, 300]``, ``audio: [N, T_a,
    D_a]``, ``vision: [N, T_v, D_v]`` (in that order), ``step_mask = {m: BoolTensor[N, T_m]}`` marking the real
    steps, which come first (the leading all-zero padding rows of the file are moved to the end and are False), ``-inf`` audio values replaced by 0 (as MultiBench does), a
    modality whose every step is padding marked absent in ``mask``, and the regression task ``"sentiment"``
    (float in [-3, 3]; :func:`binary_sentiment` gives the binary label of the literature). Samples with NaN
    features, or with no real step in any modality, are dropped with a warning (MultiBench drops NaN samples too).

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
        with open(path, "rb") as handle:
            content = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as error:
        raise layout_error(path, f"not a readable pickle ({type(error).__name__}: {error})", AFFECT_LAYOUT,
                           source) from error
    if not isinstance(content, dict) or any(not isinstance(content.get(s), dict) for s in ("train", "valid", "test")):
        found = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise layout_error(path, f"expected a dict with dict entries 'train', 'valid', 'test', got {found}",
                           AFFECT_LAYOUT, source)
    return {split: _split(content[split], f"{path}[{split!r}]", path, name, source)
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

    missing = [key for key in (*AFFECT_MODALITIES, "labels") if key not in part]
    if missing:
        raise fail(f"missing keys {missing} (found {sorted(part)})")
    labels = np.asarray(part["labels"])
    if labels.dtype.kind not in "biuf" or labels.ndim not in (1, 2, 3) or labels.size != len(labels):
        raise fail(f"'labels': expected (N, 1, 1) sentiment scores, got {labels.dtype} of shape {labels.shape}")
    labels = labels.reshape(-1).astype(np.float32)
    features, steps = {}, {}
    for modality in AFFECT_MODALITIES:
        x = np.asarray(part[modality])
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
