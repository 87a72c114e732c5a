"""Multimodal datasets with masks and vectorised batching (splits and standardisation: :mod:`mmgraph.data.splits`).

A :class:`MultiModalDataset` holds one tensor per modality (``[N, ...]``, in memory or memory-mapped from an
``.npz``), one target tensor per task (``[N]``), a presence mask ``[N, M]`` and optional per-step masks for padded
sequences. Indexing with a batch of indices gathers every tensor at once (``dataset[LongTensor[B]] ->
MultiModalBatch``): no per-sample collation. It is a ``torch.utils.data.Dataset`` whose ``__getitems__`` serves a
whole batch, so a ``DataLoader`` with a ``batch_sampler`` and :func:`collate_batch` gathers one batch per call, also
in worker processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmgraph.data.columns import from_columns as _from_columns

__all__ = ["MultiModalBatch", "MultiModalDataset", "collate_batch"]

ArrayLike = Tensor | np.ndarray
Index = int | slice | Sequence[int] | Tensor | np.ndarray


@dataclass
class MultiModalBatch:
    """One batch of ``B`` samples.

    Attributes:
        inputs: ``{modality: Tensor[B, ...]}`` (float32 features, int64 token ids).
        mask: ``BoolTensor[B, M]``, True = modality present, columns in the dataset's ``modalities`` order.
        targets: ``{task: Tensor[B]}`` (int64 class ids, or float32 for regression); empty for a dataset without
            targets.
        step_mask: ``{modality: BoolTensor[B, T]}`` (True = real step) for padded sequences, or None.
    """

    inputs: dict[str, Tensor]
    mask: Tensor
    targets: dict[str, Tensor]
    step_mask: dict[str, Tensor] | None = None

    def to(self, device: str | torch.device, non_blocking: bool = False) -> MultiModalBatch:
        """A copy with every tensor moved to ``device``."""
        def move(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
            return {name: t.to(device, non_blocking=non_blocking) for name, t in tensors.items()}

        return MultiModalBatch(move(self.inputs), self.mask.to(device, non_blocking=non_blocking), move(self.targets),
                               None if self.step_mask is None else move(self.step_mask))

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def named_mask(self) -> dict[str, Tensor]:
        """The mask matched by name: ``{modality: BoolTensor[B]}`` (``mask`` columns follow ``inputs``' keys)."""
        return {name: self.mask[:, m] for m, name in enumerate(self.inputs)}


def collate_batch(batch: MultiModalBatch) -> MultiModalBatch:
    """The ``collate_fn`` of a ``DataLoader`` over a :class:`MultiModalDataset`: ``__getitems__`` already returned
    the whole batch, which passes through unchanged.

    Example:
        >>> from torch.utils.data import BatchSampler, DataLoader, RandomSampler
        >>> loader = DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds), 64, drop_last=False),
        ...                     num_workers=2, collate_fn=collate_batch)
    """
    if not isinstance(batch, MultiModalBatch):
        raise TypeError(f"batch: expected the MultiModalBatch of MultiModalDataset.__getitems__, got "
                        f"{type(batch).__name__}; use a batch_sampler (or batch_size) with collate_fn=collate_batch")
    return batch


class MultiModalDataset(torch.utils.data.Dataset):
    """Multimodal samples held as tensors, indexed in batches.

    Args:
        features: ``{modality: Tensor | ndarray [N, ...]}``; insertion order is the modality order ``M``. Floating
            (and bool) arrays are stored as float32; integer arrays are token ids, stored as int64 (must be >= 0).
            Entries of masked-out modalities may hold anything finite or NaN (placeholders); present entries must
            be finite.
        targets: one array ``[N]`` (task ``"label"``), ``{task: array [N]}``, or None (no targets: a dataset to
            predict on). Integer targets are class ids; string targets (an ndarray of ``str`` or a list of ``str``)
            are class names: the classes are the sorted unique names (or the order of ``class_names[task]``), the
            task is listed in ``string_labels`` and predictions come back as names. Float targets are regression
            values unless ``task_types`` says otherwise -- also when every value is integral (``0.0 .. 3.0``), which
            warns: pass integer labels or ``task_types={task: "classification"}`` for classes.
        mask: ``BoolTensor[N, M]`` (columns in the order of ``features``' keys) or ``{modality: BoolTensor[N]}``
            (modalities left out are present); True = present. Default: everything present. Every sample needs at
            least one present modality.
        step_mask: ``{modality: BoolTensor[N, T]}`` (True = real step) for sequence modalities ``[N, T, ...]``;
            a sample whose modality is present needs at least one real step.
        task_types: ``{task: num_classes}`` (an int; 0 = regression) or ``{task: "classification" |
            "regression"}``; tasks left out are inferred (integer -> ``max + 1`` classes, float -> regression).
            Give the class count when a subset may miss the highest classes.
        name: a label for ``repr`` and reports.
        class_names: optional ``{task: [name of class 0, name of class 1, ...]}``.

    Raw data (strings, ragged lists, ``None`` for missing entries, images, a pandas ``DataFrame``):
    ``MultiModalDataset.from_columns(columns, targets=None, kinds=None, class_names=None)`` (see
    :func:`mmgraph.data.columns.from_columns`).

    Attributes:
        modalities: ``list[str]``; tasks: ``{task: num_classes}`` (0 = regression; empty without targets);
        input_shapes: per-sample shape of each modality; class_names: ``{task: list[str]}``; string_labels: tasks
        whose targets were given as strings; name; kinds: ``{modality: kind}`` (from :meth:`from_columns`, else
        empty).

    Example:
        >>> ds = MultiModalDataset({"a": torch.randn(100, 5), "b": torch.randn(100, 3)}, torch.randint(0, 2, (100,)))
        >>> batch = ds[torch.arange(8)]   # inputs {"a": [8, 5], "b": [8, 3]}, mask [8, 2], targets {"label": [8]}
        >>> ds = MultiModalDataset.from_npz("mine.npz", mmap=True)   # the layout of `mmgraph train --data`
    """

    def __init__(
        self,
        features: Mapping[str, ArrayLike],
        targets: ArrayLike | Sequence[str] | Mapping[str, ArrayLike | Sequence[str]] | None,
        mask: ArrayLike | Mapping[str, ArrayLike] | None = None,
        step_mask: Mapping[str, ArrayLike] | None = None,
        task_types: Mapping[str, int | str] | None = None,
        name: str = "",
        class_names: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        features = _as_feature_tensors(features)
        self.modalities: list[str] = list(features)
        num_samples = next(iter(features.values())).shape[0]
        self._mask = _check_mask(mask, self.modalities, num_samples)
        self._features = _check_features(features, self._mask)
        self._step_mask = _check_step_mask(step_mask, self._features, self._mask, self.modalities)
        targets, string_names = _encode_string_targets(targets, class_names)
        self._targets, self.tasks = _check_targets(targets, task_types, num_samples)
        self.input_shapes: dict[str, tuple[int, ...]] = {m: tuple(x.shape[1:]) for m, x in self._features.items()}
        self.name = str(name)
        self.class_names = _check_class_names({**dict(class_names or {}), **string_names}, self.tasks)
        self.string_labels: list[str] = list(string_names)
        self.kinds: dict[str, str] = {}  # {modality: "vector" | "sequence" | "image" | "text"}, set by from_columns

    from_columns = classmethod(_from_columns)

    # ------------------------------------------------------------------------------------------------ access
    @property
    def features(self) -> dict[str, Tensor]:
        """``{modality: Tensor[N, ...]}`` (the stored tensors, not copies)."""
        return dict(self._features)

    @property
    def targets(self) -> dict[str, Tensor]:
        """``{task: Tensor[N]}``."""
        return dict(self._targets)

    @property
    def mask(self) -> Tensor:
        """``BoolTensor[N, M]``, True = present."""
        return self._mask

    @property
    def step_mask(self) -> dict[str, Tensor] | None:
        """``{modality: BoolTensor[N, T]}`` or None."""
        return None if self._step_mask is None else dict(self._step_mask)

    def __len__(self) -> int:
        return self._mask.shape[0]

    def __getitem__(self, index: Index) -> MultiModalBatch:
        """Gather a batch with one tensor-indexing operation per tensor.

        ``index``: an int (a batch of one), a slice, a list of ints, a ``LongTensor[B]`` / integer ndarray, or a
        ``BoolTensor[N]`` selecting samples. Negative indices count from the end.
        """
        rows = self._rows(index)
        step_mask = None if self._step_mask is None else {m: s[rows] for m, s in self._step_mask.items()}
        return MultiModalBatch({m: x[rows] for m, x in self._features.items()}, self._mask[rows],
                               {t: y[rows] for t, y in self._targets.items()}, step_mask)

    def __getitems__(self, indices: Sequence[int] | Tensor) -> MultiModalBatch:
        """A whole batch for ``DataLoader`` (``indices``: the batch sampler's list or ``LongTensor[B]``): one gather
        per tensor, as ``self[indices]``; pair it with ``collate_fn=collate_batch``."""
        return self[indices]

    @classmethod
    def from_npz(cls, path: str | Path, targets: Sequence[str] = ("label",), mmap: bool = False,
                 task_types: Mapping[str, int | str] | None = None, name: str | None = None) -> MultiModalDataset:
        """A dataset from an ``.npz`` in the layout of ``mmgraph train --data`` (see :mod:`mmgraph.data.npz`): one
        array per modality, targets under ``label`` (or the keys in ``targets``), optional boolean
        ``<modality>_mask [N]`` and ``<modality>_step_mask [N, T]``.

        ``mmap=True`` maps the feature arrays instead of reading them: batches read their rows from disk, so data
        larger than memory trains (store float32 features and int64 token ids: other dtypes are converted, in
        memory). Uncompressed members (``np.savez``) are mapped inside the file; compressed ones are decompressed
        once to a cache folder ``.<file>.mmap`` next to it. :meth:`subset` copies the selected rows into memory, so
        keep the training and validation parts of large data in separate files.
        """
        from mmgraph.data.npz import read_npz

        arrays, labels, masks, steps = read_npz(path, tuple(targets), mmap=mmap)
        return cls(arrays, labels, mask=masks or None, step_mask=steps or None, task_types=task_types,
                   name=Path(path).stem if name is None else name)

    def subset(self, indices: Index) -> MultiModalDataset:
        """A new dataset with the selected samples (same modalities, tasks, class counts and class names)."""
        batch = self[indices]
        return self._derive(batch.inputs, batch.targets, batch.mask, batch.step_mask)

    def labels(self, task: str | None = None) -> Tensor:
        """Targets ``[N]`` of ``task`` (default: the first task)."""
        if not self.tasks:
            raise ValueError("labels: this dataset has no targets (built with targets=None)")
        if task is None:
            task = next(iter(self.tasks))
        if task not in self._targets:
            raise ValueError(f"task: expected one of {list(self.tasks)}, got {task!r}")
        return self._targets[task]

    def with_features(self, features: Mapping[str, ArrayLike]) -> MultiModalDataset:
        """A copy whose features are replaced modality by modality (same targets, masks and task types)."""
        unknown = [m for m in features if m not in self._features]
        if unknown:
            raise ValueError(f"features: unknown modalities {unknown}; expected a subset of {self.modalities}")
        return self._derive({m: features.get(m, x) for m, x in self._features.items()}, self._targets, self._mask,
                            self._step_mask)

    def with_mask(self, mask: ArrayLike | Mapping[str, ArrayLike]) -> MultiModalDataset:
        """A copy with another presence mask (``BoolTensor[N, M]`` or ``{modality: BoolTensor[N]}``, as in the
        constructor; every sample keeps at least one present modality), e.g. modalities dropped at test time."""
        return self._derive(self._features, self._targets, _check_mask(mask, self.modalities, len(self)),
                            self._step_mask)

    def _derive(self, features: Mapping[str, Tensor], targets: Mapping[str, Tensor], mask: Tensor,
                step_mask: Mapping[str, Tensor] | None) -> MultiModalDataset:
        """A dataset of the same kind (tasks, class counts, class names, string labels) with other tensors."""
        derived = MultiModalDataset(features, targets or None, mask, step_mask, task_types=self.tasks or None,
                                    name=self.name, class_names=self.class_names)
        derived.string_labels = list(self.string_labels)
        derived.kinds = dict(self.kinds)
        return derived

    def __repr__(self) -> str:
        shapes = ", ".join(f"{m}: {tuple(s)}" for m, s in self.input_shapes.items())
        return (f"MultiModalDataset(name={self.name!r}, samples={len(self)}, modalities={{{shapes}}}, "
                f"tasks={self.tasks})")

    def _rows(self, index: Index) -> Tensor:
        num_samples = len(self)
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if not -num_samples <= index < num_samples:
                raise IndexError(f"index: {index} out of range for a dataset of {num_samples} samples")
            return torch.tensor([index % num_samples])
        if isinstance(index, slice):
            return torch.arange(num_samples)[index]
        rows = torch.as_tensor(np.asarray(index) if isinstance(index, (list, tuple)) else index)
        if rows.dtype == torch.bool:
            if rows.shape != (num_samples,):
                raise IndexError(f"index: a boolean index must have shape ({num_samples},), got {tuple(rows.shape)}")
            return rows.nonzero().squeeze(1)
        if rows.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        if rows.ndim != 1 or rows.is_floating_point() or rows.is_complex():
            raise IndexError(f"index: expected an int, slice, list of ints or 1-D integer tensor, got "
                             f"{rows.dtype} of shape {tuple(rows.shape)}")
        rows = rows.long()
        if int(rows.min()) < -num_samples or int(rows.max()) >= num_samples:
            raise IndexError(f"index: values must lie in [{-num_samples}, {num_samples}), got "
                             f"[{int(rows.min())}, {int(rows.max())}]")
        return rows % num_samples


# ---------------------------------------------------------------------------------------------------- validation
def _as_tensor(arg: str, value: ArrayLike) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{arg}: expected a numeric array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):
        return torch.as_tensor(np.asarray(value))
    raise TypeError(f"{arg}: expected a Tensor or ndarray, got {type(value).__name__}")


def _as_feature_tensors(features: Mapping[str, ArrayLike]) -> dict[str, Tensor]:
    if not isinstance(features, Mapping) or not features:
        raise TypeError(f"features: expected a non-empty dict {{modality: Tensor[N, ...]}}, got "
                        f"{type(features).__name__}")
    tensors: dict[str, Tensor] = {}
    for name, value in features.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"features: modality names must be non-empty str, got {name!r}")
        x = _as_tensor(f"features[{name!r}]", value)
        if x.ndim < 2:
            raise ValueError(f"features[{name!r}]: expected shape [N, ...] with per-sample features, got "
                             f"{tuple(x.shape)}")
        tensors[name] = x
    sizes = {name: x.shape[0] for name, x in tensors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"features: every modality needs the same number of samples, got {sizes}")
    return tensors


def _chunk_rows(x: Tensor, values: int) -> int:
    """Samples per chunk so that a chunk of ``x [N, ...]`` holds about ``values`` values (at least one sample): what
    the passes over a whole modality (non-finite check, standardisation statistics) read at a time, so that no
    full-size temporary exists and a memory-mapped array is read, never copied."""
    return max(1, values // max(1, x[0].numel() if len(x) else 1))


def _check_features(features: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """Float32 / int64 copies of ``features``; non-finite values are allowed only where ``mask`` is False."""
    checked: dict[str, Tensor] = {}
    for m, (name, x) in enumerate(features.items()):
        if x.is_floating_point() or x.dtype == torch.bool:
            x = x.float()
            rows = _chunk_rows(x, 2**18)
            bad = torch.cat([(~torch.isfinite(x[i:i + rows])).flatten(1).any(1) for i in range(0, len(x), rows)]
                            or [torch.zeros(0, dtype=torch.bool)]) & mask[:, m]
            if bool(bad.any()):
                bad = bad.nonzero().squeeze(1)
                raise ValueError(f"features[{name!r}]: NaN or Inf values in {bad.numel()} samples where {name!r} "
                                 f"is present (first: {bad[:5].tolist()}); mark missing modalities in `mask`")
        elif x.is_complex():
            raise TypeError(f"features[{name!r}]: expected real values, got {x.dtype}")
        else:
            x = x.long()
            if x.numel() and int(x.min()) < 0:
                raise ValueError(f"features[{name!r}]: integer features are token ids and must be >= 0, got "
                                 f"min {int(x.min())}")
        checked[name] = x
    return checked


def _encode_string_targets(targets, class_names: Mapping[str, Sequence[str]] | None
                           ) -> tuple[dict[str, ArrayLike], dict[str, list[str]]]:
    """``({task: targets with string labels replaced by class ids}, {task: class names of those tasks})``.

    Classes of a string task are ``class_names[task]`` when given (every label must be one of them), else the
    sorted unique labels.
    """
    if targets is None:
        return {}, {}
    named = dict(targets) if isinstance(targets, Mapping) else {"label": targets}
    if not named:
        raise ValueError("targets: expected at least one task or None, got an empty dict")
    encoded: dict[str, ArrayLike] = {}
    string_names: dict[str, list[str]] = {}
    for task, value in named.items():
        missing = _missing_label_rows(value)
        if missing:
            raise ValueError(f"targets[{task!r}]: {len(missing)} missing labels (NaN or None) at rows {missing[:10]}"
                             f"{' ...' if len(missing) > 10 else ''}; drop those samples or give them a label")
        labels = value if isinstance(value, np.ndarray) else np.asarray(value) if isinstance(value, (list, tuple)) \
            else None
        if labels is None or labels.dtype.kind not in "USO" or (labels.dtype.kind == "O" and not all(
                isinstance(v, str) for v in labels.ravel())):
            encoded[task] = value
            continue
        if labels.ndim != 1:
            raise ValueError(f"targets[{task!r}]: expected shape ({labels.shape[0]},) (one label per sample), got "
                             f"{labels.shape}")
        labels = labels.astype(str)
        given = (class_names or {}).get(task)
        names = [str(n) for n in given] if given is not None else sorted(set(labels.tolist()))
        lookup = {name: i for i, name in enumerate(names)}
        distinct, inverse = np.unique(labels, return_inverse=True)
        unknown = [label for label in distinct.tolist() if label not in lookup]
        if unknown:
            raise ValueError(f"targets[{task!r}]: labels {unknown[:5]} are not in class_names[{task!r}] = {names}")
        ids = np.array([lookup[label] for label in distinct.tolist()], dtype=np.int64)  # one entry per class
        encoded[task] = torch.from_numpy(ids[inverse.reshape(-1)])
        string_names[task] = names
    return encoded, string_names


def _missing_label_rows(value: object) -> list[int]:
    """Rows of a label list / tuple / object array that hold ``None``, or NaN among string labels (numpy would turn
    it into the class ``'nan'``); numeric NaN targets are refused later, as NaN regression targets."""
    if not isinstance(value, (list, tuple)) and not (isinstance(value, np.ndarray) and value.dtype.kind == "O"):
        return []
    rows = list(value)
    strings = any(isinstance(v, str) for v in rows)
    return [i for i, v in enumerate(rows)
            if v is None or (strings and isinstance(v, (float, np.floating)) and bool(np.isnan(v)))]


def _check_targets(named: Mapping[str, ArrayLike], task_types: Mapping[str, int | str] | None,
                   num_samples: int) -> tuple[dict[str, Tensor], dict[str, int]]:
    task_types = dict(task_types or {})
    unknown = [t for t in task_types if t not in named]
    if unknown:
        raise ValueError(f"task_types: unknown tasks {unknown}; the targets have tasks {list(named)}")
    checked: dict[str, Tensor] = {}
    tasks: dict[str, int] = {}
    for task, value in named.items():
        y = _as_tensor(f"targets[{task!r}]", value)
        if y.ndim != 1 or y.shape[0] != num_samples:
            raise ValueError(f"targets[{task!r}]: expected shape ({num_samples},) (one value per sample), got "
                             f"{tuple(y.shape)}")
        kind = task_types.get(task, "regression" if y.is_floating_point() else "classification")
        if task not in task_types and y.is_floating_point() and y.numel() and bool((y == y.round()).all()):
            warnings.warn(f"targets[{task!r}]: float targets with integral values only ({int(y.unique().numel())} "
                          "distinct) are treated as regression; pass integer labels or "
                          f"task_types={{{task!r}: 'classification'}} for classes", UserWarning, stacklevel=3)
        if kind == "regression" or kind == 0:
            y = y.float()
            if not bool(torch.isfinite(y).all()):
                raise ValueError(f"targets[{task!r}]: NaN or Inf regression targets")
            checked[task], tasks[task] = y, 0
            continue
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise ValueError(f"targets[{task!r}]: class ids must be integers, got non-integral values")
        y = y.long()
        if kind == "classification":
            if num_samples == 0:
                raise ValueError(f"targets[{task!r}]: cannot infer the number of classes of an empty dataset; "
                                 f"give task_types={{{task!r}: num_classes}}")
            classes = int(y.max()) + 1
        elif isinstance(kind, int) and not isinstance(kind, bool) and kind >= 2:
            classes = kind
        else:
            raise ValueError(f"task_types[{task!r}]: expected an int >= 2 (classes), 0 (regression), "
                             f"'classification' or 'regression', got {kind!r}")
        if num_samples and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(f"targets[{task!r}]: class ids must lie in [0, {classes}), got "
                             f"[{int(y.min())}, {int(y.max())}]")
        checked[task], tasks[task] = y, classes
    return checked, tasks


def _check_mask(mask: ArrayLike | Mapping[str, ArrayLike] | None, modalities: list[str],
                num_samples: int) -> Tensor:
    if mask is None:
        return torch.ones(num_samples, len(modalities), dtype=torch.bool)
    if isinstance(mask, Mapping):
        unknown = [m for m in mask if m not in modalities]
        if unknown:
            raise ValueError(f"mask: unknown modalities {unknown}; expected some of {modalities}")
        columns = []
        for name in modalities:
            column = (_as_tensor(f"mask[{name!r}]", mask[name]) if name in mask
                      else torch.ones(num_samples, dtype=torch.bool))
            if column.dtype != torch.bool or column.shape != (num_samples,):
                raise ValueError(f"mask[{name!r}]: expected a BoolTensor of shape ({num_samples},), got "
                                 f"{column.dtype} of shape {tuple(column.shape)}")
            columns.append(column)
        checked = torch.stack(columns, dim=1)
    else:
        checked = _as_tensor("mask", mask)
        if checked.dtype != torch.bool or checked.shape != (num_samples, len(modalities)):
            raise ValueError(f"mask: expected a BoolTensor of shape ({num_samples}, {len(modalities)}) "
                             f"(samples, modalities {modalities}), got {checked.dtype} of shape {tuple(checked.shape)}")
    empty = (~checked.any(dim=1)).nonzero().squeeze(1)
    if empty.numel():
        raise ValueError(f"mask: {empty.numel()} samples have every modality masked out (first: "
                         f"{empty[:5].tolist()}); each sample needs at least one present modality")
    return checked.clone()


def _check_step_mask(step_mask: Mapping[str, ArrayLike] | None, features: dict[str, Tensor], mask: Tensor,
                     modalities: list[str]) -> dict[str, Tensor] | None:
    if step_mask is None:
        return None
    if not isinstance(step_mask, Mapping):
        raise TypeError(f"step_mask: expected a dict {{modality: BoolTensor[N, T]}}, got {type(step_mask).__name__}")
    checked: dict[str, Tensor] = {}
    for name, value in step_mask.items():
        if name not in features:
            raise ValueError(f"step_mask: unknown modality {name!r}; expected one of {modalities}")
        steps = _as_tensor(f"step_mask[{name!r}]", value)
        x = features[name]
        if x.ndim < 2 or steps.dtype != torch.bool or steps.shape != x.shape[:2]:
            raise ValueError(f"step_mask[{name!r}]: expected a BoolTensor of shape {tuple(x.shape[:2])} "
                             f"(samples, steps of features[{name!r}]), got {steps.dtype} of shape "
                             f"{tuple(steps.shape)}")
        no_steps = (mask[:, modalities.index(name)] & ~steps.any(dim=1)).nonzero().squeeze(1)
        if no_steps.numel():
            raise ValueError(f"step_mask[{name!r}]: {no_steps.numel()} samples where {name!r} is present have no "
                             f"real step (first: {no_steps[:5].tolist()})")
        checked[name] = steps.clone()
    return checked or None


def _check_class_names(class_names: Mapping[str, Sequence[str]] | None, tasks: dict[str, int]) -> dict[str, list[str]]:
    checked: dict[str, list[str]] = {}
    for task, names in (class_names or {}).items():
        if task not in tasks:
            raise ValueError(f"class_names: unknown task {task!r}; expected one of {list(tasks)}")
        if len(names) != tasks[task]:
            raise ValueError(f"class_names[{task!r}]: expected {tasks[task]} names, got {len(names)}")
        checked[task] = [str(n) for n in names]
    return checked
