"""One data set registry for every entry point (training CLI, :func:`mmgraph.compare`, the ``mmgraph`` command).

A loader is a callable returning a :class:`~mmgraph.data.MultiModalDataset`, or the published splits
``{"train": ..., "valid": ..., "test": ...}`` (kept by the comparison; concatenated in that order otherwise). Loaders
may take the keywords ``seed`` (data that differ per seed: the synthetic sets), ``samples`` (a size) and ``data_dir``
(a folder holding the benchmark's files, or the file itself); :func:`load_dataset` passes each only to a loader that
takes it.

>>> from mmgraph.data import register_dataset, load_dataset
>>> register_dataset("mine", lambda: my_dataset)          # doctest: +SKIP
>>> load_dataset("mine")                                  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmgraph.data.dataset import MultiModalDataset

__all__ = ["BUILTIN_DATASETS", "DATA_DIR_FILES", "OPTIONAL_KEYWORDS", "SYNTHETIC_TEMPORAL", "available_datasets",
           "concatenate", "load_dataset", "load_dataset_with_split", "register_dataset"]

Loader = Callable[..., "MultiModalDataset | Mapping[str, MultiModalDataset]"]
Split = tuple[Tensor, Tensor, Tensor]
# keywords every entry point may pass; a loader that does not take one of them is called without it
OPTIONAL_KEYWORDS = ("seed", "samples", "data_dir")
PARTS = ("train", "valid", "test")

_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str, loader: Loader, overwrite: bool = False) -> None:
    """Make ``loader`` available as ``name`` to :func:`load_dataset`, ``mmgraph train --dataset NAME`` and
    ``mmgraph.compare(NAME)``. Registering a taken name raises ``ValueError`` unless ``overwrite``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty str, got {name!r}")
    if not callable(loader):
        raise TypeError(f"loader: expected a callable returning a MultiModalDataset, got {type(loader).__name__}")
    if name in _LOADERS and not overwrite:
        raise ValueError(f"name: data set {name!r} is already registered; pass overwrite=True to replace it")
    _LOADERS[name] = loader


def available_datasets() -> list[str]:
    """Registered data set names, in registration order (the built-in ones first)."""
    return list(_LOADERS)


def load_dataset(name: str, **kwargs) -> MultiModalDataset:
    """The registered data set ``name`` as one :class:`MultiModalDataset` (published splits concatenated in the
    order train, valid, test). ``kwargs`` go to the loader; see the module docstring for ``seed``/``samples``/
    ``data_dir``."""
    return load_dataset_with_split(name, **kwargs)[0]


def load_dataset_with_split(name: str, **kwargs) -> tuple[MultiModalDataset, Split | None]:
    """``(data, split)``: the data set, and for one published with its split the ``(train, valid, test)`` index
    tensors into ``data`` (None otherwise)."""
    if name not in _LOADERS:
        raise ValueError(f"dataset: expected one of {available_datasets()}, got {name!r} (register your own with "
                         "mmgraph.data.register_dataset)")
    loader = _LOADERS[name]
    try:
        parameters = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass everything
        parameters = None
    takes_any = parameters is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    passed = {key: value for key, value in kwargs.items() if takes_any or key in parameters}
    refused = [key for key in kwargs if key not in passed and key not in OPTIONAL_KEYWORDS]
    if refused:
        raise TypeError(f"{name}: its loader takes no keyword(s) {refused}; it takes {list(parameters)}")
    loaded = loader(**passed)
    if isinstance(loaded, MultiModalDataset):
        return loaded, None
    if isinstance(loaded, Mapping) and list(loaded) == list(PARTS) and all(
            isinstance(part, MultiModalDataset) for part in loaded.values()):
        return concatenate([loaded[part] for part in PARTS])
    raise TypeError(f"{name}: its loader returned {type(loaded).__name__}; expected a MultiModalDataset or "
                    f"{{'train', 'valid', 'test'}} MultiModalDatasets")


def concatenate(parts: Sequence[MultiModalDataset]) -> tuple[MultiModalDataset, tuple[Tensor, ...]]:
    """One data set holding ``parts`` one after the other (modalities, tasks and class names of the first), and the
    index range of each part (``LongTensor``s)."""
    batches = [part[torch.arange(len(part))] for part in parts]
    step_masks = [b.step_mask for b in batches]
    data = MultiModalDataset(
        {m: torch.cat([b.inputs[m] for b in batches]) for m in parts[0].modalities},
        {t: torch.cat([b.targets[t] for b in batches]) for t in parts[0].tasks},
        torch.cat([b.mask for b in batches]),
        None if step_masks[0] is None else {m: torch.cat([s[m] for s in step_masks]) for m in step_masks[0]},
        task_types=parts[0].tasks, name=parts[0].name, class_names=parts[0].class_names)
    bounds = torch.tensor([0, *(len(part) for part in parts)]).cumsum(0).tolist()
    return data, tuple(torch.arange(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]))


# ------------------------------------------------------------------------------------------------ the built-in sets
def _handwritten() -> MultiModalDataset:
    from mmgraph.data.uci import load_handwritten

    return load_handwritten()


def _nutrimouse() -> MultiModalDataset:
    from mmgraph.data.uci import load_nutrimouse

    return load_nutrimouse()


def _synthetic_interaction(seed: int = 0, samples: int | None = None) -> MultiModalDataset:
    """2000 samples (``samples``), 3 vector modalities of width 8: the label is the XOR of one sign from each of the
    first two, the third is a distractor (docs/benchmarks.md)."""
    from mmgraph.data.synthetic import make_interaction

    return make_interaction(n=samples or 2000, num_modalities=3, dim=8, informative=[0, 1], noise=0.0, seed=seed)


SYNTHETIC_TEMPORAL: dict[str, int] = {"n": 2000, "num_modalities": 2, "steps": 8, "dim": 8}
"""The :func:`~mmgraph.data.synthetic.make_temporal` arguments of the registered ``synthetic-temporal`` (besides
``seed``): also those of its Bayes ceiling, :func:`~mmgraph.data.synthetic.temporal_posterior`."""


def _synthetic_temporal(seed: int = 0, samples: int | None = None) -> MultiModalDataset:
    """2000 samples (``samples``), 2 sequence modalities ``[8, 8]``; the label needs the order of their events."""
    from mmgraph.data.synthetic import make_temporal

    return make_temporal(**{**SYNTHETIC_TEMPORAL, "n": samples or SYNTHETIC_TEMPORAL["n"]}, seed=seed)


def _sentiment(seed: int = 0, samples: int | None = None) -> MultiModalDataset:
    """1000 utterances (``samples``) of a user's raw sentiment data: transcript strings, ragged audio and visual
    sequences (visual missing for 20 %), a score in [-3, 3] that needs all three, with a sign flip carried by the
    audio (:func:`mmgraph.data.synthetic.make_sentiment`), read by ``MultiModalDataset.from_columns``."""
    from mmgraph.data.synthetic import make_sentiment

    dataset = MultiModalDataset.from_columns(*make_sentiment(n=samples or 1000, seed=seed))
    dataset.name = "sentiment"
    return dataset


def _av_digits() -> Mapping[str, MultiModalDataset]:
    from mmgraph.data.avdigits import load_avdigits

    return load_avdigits()


def _from_files(name: str, file: str) -> Loader:
    """A loader of one of the field's benchmarks from ``data_dir / file`` (or ``data_dir`` itself, a file)."""

    def load(data_dir: str | Path | None = None) -> Mapping[str, MultiModalDataset]:
        from mmgraph.data import affect, avmnist

        if data_dir is None:
            raise ValueError(f"data_dir: {name} is read from your copy of its files ({file}; docs/data.md); pass "
                             "the folder holding them")
        path = Path(data_dir)
        path = path if path.name == file or (path.is_file() and file.endswith(".pkl")) else path / file
        return {"mosi": affect.load_mosi, "mosei": affect.load_mosei, "avmnist": avmnist.load_avmnist}[name](path)

    load.__doc__ = f"{name} from ``data_dir/{file}`` (docs/data.md)."
    return load


DATA_DIR_FILES = {"mosi": "mosi_raw.pkl", "mosei": "mosei_senti_data.pkl", "avmnist": "avmnist"}

for _name, _loader in (("handwritten", _handwritten), ("nutrimouse", _nutrimouse),
                       ("synthetic-interaction", _synthetic_interaction), ("synthetic-temporal", _synthetic_temporal),
                       ("sentiment", _sentiment), ("av-digits", _av_digits),
                       *((name, _from_files(name, file)) for name, file in DATA_DIR_FILES.items())):
    register_dataset(_name, _loader)
BUILTIN_DATASETS = tuple(_LOADERS)
