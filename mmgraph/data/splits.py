"""Reproducible stratified splits (:func:`stratified_split`) and standardisation with training statistics
(:func:`standardize`, :func:`standardization_stats`) of a :class:`~mmgraph.data.MultiModalDataset`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mmgraph.data.dataset import ArrayLike, MultiModalDataset, _as_tensor, _chunk_rows

__all__ = ["standardization_stats", "standardize", "stratified_split"]


# ---------------------------------------------------------------------------------------------------- splits
def stratified_split(dataset_or_labels: MultiModalDataset | ArrayLike | Sequence[int], test_size: float = 0.2,
                     val_size: float = 0.0, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Reproducible stratified (train, val, test) indices.

    The test part is ``test_size`` of all samples; the validation part is ``val_size`` of the remaining training
    part. Stratified by the class ids of the first task (a dataset) or by the given labels ``[N]``; a regression
    first task is split by plain shuffling. Same ``seed`` -> same indices.

    Returns:
        ``(train, val, test)``: sorted ``LongTensor`` indices, disjoint, covering every sample.
    """
    if isinstance(dataset_or_labels, MultiModalDataset):
        labels = dataset_or_labels.labels().numpy()
        stratify = dataset_or_labels.tasks[next(iter(dataset_or_labels.tasks))] > 0
    else:
        labels = _as_tensor("dataset_or_labels", dataset_or_labels).numpy()
        stratify = labels.dtype.kind in "biu"
    if labels.ndim != 1:
        raise ValueError(f"dataset_or_labels: expected labels of shape [N], got {labels.shape}")
    for arg, value in (("test_size", test_size), ("val_size", val_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{arg}: expected a fraction in [0, 1), got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    everything = np.arange(len(labels))
    train, test = _split(everything, labels, test_size, stratify, seed, "test_size")
    train, val = _split(train, labels[train], val_size, stratify, seed + 1, "val_size")
    return tuple(torch.from_numpy(np.sort(part)).long() for part in (train, val, test))  # type: ignore[return-value]


def _split(indices: np.ndarray, labels: np.ndarray, fraction: float, stratify: bool, seed: int,
           arg: str) -> tuple[np.ndarray, np.ndarray]:
    if fraction == 0.0 or len(indices) == 0:
        return indices, indices[:0]
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(n_splits=1, test_size=fraction,
                                                                      random_state=seed)
    try:
        keep, held_out = next(splitter.split(indices, labels if stratify else None))
    except ValueError as error:
        raise ValueError(f"{arg}={fraction}: cannot split {len(indices)} samples with classes "
                         f"{np.bincount(labels).tolist() if stratify else '-'} ({error})") from error
    return indices[keep], indices[held_out]


# ---------------------------------------------------------------------------------------------------- scaling
def standardize(train: MultiModalDataset, *others: MultiModalDataset,
                eps: float = 1e-6) -> tuple[MultiModalDataset, ...]:
    """Z-score the float modalities of ``train`` and ``others`` with statistics from ``train`` only.

    Statistics are per feature over the present samples (and real steps) of ``train``: vectors ``[N, F]`` and
    frames ``[N, T, F]`` per feature ``F``, images ``[N, C, H, W]`` per channel. A feature whose training std is
    below ``eps`` (constant) is only centred (std taken as 1), so held-out data cannot blow up. Token modalities
    (int64) are left alone.

    Returns:
        ``(train, *others)`` standardised, as new datasets.
    """
    if not isinstance(train, MultiModalDataset):
        raise TypeError(f"train: expected a MultiModalDataset, got {type(train).__name__}")
    for position, other in enumerate(others):
        if not isinstance(other, MultiModalDataset):
            raise TypeError(f"others[{position}]: expected a MultiModalDataset, got {type(other).__name__}")
        if other.input_shapes != train.input_shapes:
            raise ValueError(f"others[{position}]: modalities and shapes {other.input_shapes} differ from train's "
                             f"{train.input_shapes}")
    stats = standardization_stats(train, eps)
    return tuple(dataset.with_features({name: (dataset.features[name] - mean) / std
                                        for name, (mean, std) in stats.items()})
                 for dataset in (train, *others))


def standardization_stats(train: MultiModalDataset, eps: float = 1e-6) -> dict[str, tuple[Tensor, Tensor]]:
    """The statistics :func:`standardize` applies: ``{float modality: (mean, std)}``, each shaped to broadcast
    against that modality's ``[N, ...]`` tensor (``[1, F]`` vectors, ``[1, 1, F]`` frames, ``[1, C, 1, 1]``
    images). ``FusionModel.from_dataset(..., standardize=True)`` keeps them as buffers of the model."""
    if not isinstance(train, MultiModalDataset):
        raise TypeError(f"train: expected a MultiModalDataset, got {type(train).__name__}")
    return {name: _moments(train, name, eps) for name, x in train.features.items() if x.is_floating_point()}


_STATS_CHUNK = 2**22  # values per chunk of the standardisation statistics (32 MiB in float64)


def _moments(dataset: MultiModalDataset, name: str, eps: float) -> tuple[Tensor, Tensor]:
    """Mean and std of one float modality, shaped to broadcast against ``[N, ...]``.

    Accumulated in float64 (the squares of float32 features overflow from ``|x| ~ 1e19``: an inf std would zero the
    modality; the moments of finite float32 values are finite float32 values) over chunks of about
    ``_STATS_CHUNK`` values, so the float64 copy never holds the whole modality."""
    x = dataset.features[name]
    present = dataset.mask[:, dataset.modalities.index(name)]  # [N]
    steps = (dataset.step_mask or {}).get(name)
    axis = 1 if x.ndim == 4 else x.ndim - 1  # channels of images, last axis otherwise
    dims = [d for d in range(x.ndim) if d != axis]
    rows = _chunk_rows(x, _STATS_CHUNK)

    def chunks():
        """``(values, weight)`` float64 ``[n, ...]`` per chunk of samples; masked entries (NaN placeholders) -> 0."""
        for start in range(0, len(x), rows):
            part = slice(start, start + rows)
            weight = present[part].double().view(-1, *([1] * (x.ndim - 1)))
            if steps is not None:
                weight = weight * steps[part].double().view(*steps[part].shape, *([1] * (x.ndim - 2)))
            weight = weight.expand_as(x[part])
            yield torch.where(weight > 0, x[part].double(), torch.zeros((), dtype=torch.float64)), weight

    shape = [x.shape[d] if d == axis else 1 for d in range(x.ndim)]
    count, total, squares = (torch.zeros(shape, dtype=torch.float64) for _ in range(3))
    for values, weight in chunks():
        count += weight.sum(dim=dims, keepdim=True)
        total += (values * weight).sum(dim=dims, keepdim=True)
    mean = total / count.clamp_min(1.0)
    for values, weight in chunks():
        squares += ((values - mean) ** 2 * weight).sum(dim=dims, keepdim=True)
    std = (squares / count.clamp_min(1.0)).sqrt()
    std = torch.where(std < eps, torch.ones_like(std), std)
    return mean.to(x.dtype), std.to(x.dtype)
