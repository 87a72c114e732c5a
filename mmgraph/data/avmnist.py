"""AV-MNIST (Vielzeuf et al., 2018) in MultiBench's file layout, and the checks shared by the file loaders.

Layout (MultiBench ``datasets/avmnist/get_data.py``)::

    root/image/train_data.npy   (60000, 784)       MNIST digits, 0..255
    root/image/test_data.npy    (10000, 784)
    root/audio/train_data.npy   (60000, 112, 112)  spectrograms of spoken digits (FSDD + ESC-50 noise), 0..255
    root/audio/test_data.npy    (10000, 112, 112)
    root/train_labels.npy       (60000,)           digit 0..9
    root/test_labels.npy        (10000,)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmgraph.data.dataset import MultiModalDataset

__all__ = ["AVMNIST_LAYOUT", "AVMNIST_SOURCE", "load_avmnist"]

AVMNIST_SOURCE = ("AV-MNIST as packaged by MultiBench (https://github.com/pliang279/MultiBench, "
                  "datasets/avmnist/get_data.py; data: the avmnist archive linked from its README)")
AVMNIST_LAYOUT = ("root/image/{train,test}_data.npy (N, 784), root/audio/{train,test}_data.npy (N, 112, 112), "
                  "root/{train,test}_labels.npy (N,) with digits 0..9")
IMAGE_SHAPE = (1, 28, 28)
SPECTROGRAM_SHAPE = (1, 112, 112)
MULTIBENCH_TRAIN = 60000
MULTIBENCH_VALID = 5000


def load_avmnist(root: str | Path) -> dict[str, MultiModalDataset]:
    """AV-MNIST from the MultiBench files under ``root``.

    Images become ``image: [N, 1, 28, 28]`` and spectrograms ``audio: [N, 1, 112, 112]``, both divided by 255 as
    MultiBench does (values in [0, 1]); the task ``"label"`` has 10 classes. Validation is the last 5000 training
    samples for MultiBench's 60000 (its split), the last 1/12 for other sizes.

    Returns:
        ``{"train", "valid", "test"}`` of :class:`MultiModalDataset` named ``"avmnist"``.

    Raises:
        FileNotFoundError / ValueError naming the file, the expected layout and where AV-MNIST is published.
    """
    root = Path(root)
    parts = {}
    for split in ("train", "test"):
        image = read_array(root / "image" / f"{split}_data.npy", AVMNIST_LAYOUT, AVMNIST_SOURCE)
        audio = read_array(root / "audio" / f"{split}_data.npy", AVMNIST_LAYOUT, AVMNIST_SOURCE)
        labels_path = root / f"{split}_labels.npy"
        labels = read_array(labels_path, AVMNIST_LAYOUT, AVMNIST_SOURCE)
        expected = {"image": (len(image), 784), "audio": (len(image), 112, 112), "labels": (len(image),)}
        for name, array in (("image", image), ("audio", audio), ("labels", labels)):
            if array.shape != expected[name] or array.dtype.kind not in "biuf":
                where = labels_path if name == "labels" else root / name / f"{split}_data.npy"
                raise layout_error(where, f"expected a numeric array of shape {expected[name]}, got "
                                          f"{array.dtype} of shape {array.shape}", AVMNIST_LAYOUT, AVMNIST_SOURCE)
        if labels.size and (labels.min() < 0 or labels.max() > 9 or not np.array_equal(labels, np.round(labels))):
            raise layout_error(labels_path, f"expected digits 0..9, got values in [{labels.min()}, {labels.max()}]",
                               AVMNIST_LAYOUT, AVMNIST_SOURCE)
        parts[split] = (image, audio, labels)
    return image_audio_splits(parts, "avmnist")


def image_audio_splits(parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       name: str) -> dict[str, MultiModalDataset]:
    """``{"train", "test"}`` of (images ``(N, 784)``, spectrograms ``(N, 112, 112)``, labels ``(N,)``) in 0..255
    -> ``{"train", "valid", "test"}`` datasets with validation carved from the end of train (see
    :func:`load_avmnist`). Shared by AV-MNIST and av-digits, so both reach the models in one layout."""
    image, audio, labels = parts["train"]
    num_valid = MULTIBENCH_VALID if len(labels) == MULTIBENCH_TRAIN else len(labels) // 12
    cut = len(labels) - num_valid
    ranges = {"train": (parts["train"], slice(0, cut)), "valid": (parts["train"], slice(cut, None)),
              "test": (parts["test"], slice(None))}
    class_names = {"label": [str(d) for d in range(10)]}
    return {split: MultiModalDataset(
        {"image": _scaled(images[rows], IMAGE_SHAPE), "audio": _scaled(spectrograms[rows], SPECTROGRAM_SHAPE)},
        torch.from_numpy(np.asarray(digits[rows], dtype=np.int64)), task_types={"label": 10}, name=name,
        class_names=class_names) for split, ((images, spectrograms, digits), rows) in ranges.items()}


def _scaled(values: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """0..255 values ``(N, ...)`` -> float32 ``[N, *shape]`` in [0, 1]."""
    return torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(-1, *shape) / np.float32(255.0))


# ---------------------------------------------------------------------------------------------------- file checks
def layout_error(path: Path, problem: str, layout: str, source: str) -> Exception:
    """The error of a missing (``FileNotFoundError``) or malformed (``ValueError``) data file: the path, what is
    wrong, the expected layout and where the data set is published."""
    message = f"{path}: {problem}. Expected layout: {layout}. The data set is published by {source}"
    return FileNotFoundError(message) if not Path(path).is_file() else ValueError(message)


def read_array(path: Path, layout: str, source: str) -> np.ndarray:
    """``np.load`` of one ``.npy`` file (no pickles), with the path-naming error when it is missing or unreadable."""
    if not path.is_file():
        raise layout_error(path, "file not found", layout, source)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise layout_error(path, f"not a readable .npy array ({error})", layout, source) from error
