"""Loaders of the field's benchmark files (MOSI / MOSEI affect pickles, AV-MNIST) on fixtures written in each
published layout, and the offline av-digits build (skipped when espeak-ng's wheel is absent)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgraph.data import MultiModalDataset, binary_sentiment, load_avdigits, load_avmnist, load_mosei, load_mosi
from mmgraph.data.affect import UnsafePickleError, read_pickle

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- affect
def _affect_split(rng: np.random.Generator, n: int, steps: dict[str, int], dims: dict[str, int],
                  lengths: dict[str, np.ndarray]) -> dict:
    """One split in MultiBench's layout: zero left padding, so sample i's real steps are the last lengths[m][i]."""
    part = {}
    for modality in ("vision", "audio", "text"):
        x = rng.normal(size=(n, steps[modality], dims[modality])).astype(np.float32) + 3.0  # no accidental zeros
        x[np.arange(steps[modality])[None, :] < steps[modality] - lengths[modality][:, None]] = 0.0
        part[modality] = x
    part["labels"] = rng.uniform(-3, 3, size=(n, 1, 1)).astype(np.float32)
    part["labels"][0, 0, 0] = 0.0
    part["id"] = np.array([[f"video{i}", str(i)] for i in range(n)])
    return part


def _write_affect(path: Path, steps: dict[str, int], dims: dict[str, int], seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    content = {}
    for split, n in (("train", 7), ("valid", 3), ("test", 4)):
        lengths = {m: rng.integers(1, t + 1, size=n) for m, t in steps.items()}
        content[split] = _affect_split(rng, n, steps, dims, lengths)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)
    return content


def test_load_mosi_aligned_pickle_moves_left_padding_into_step_mask_and_cleans_minus_inf(tmp_path):
    path = tmp_path / "mosi_raw.pkl"
    content = _write_affect(path, {"vision": 50, "audio": 50, "text": 50}, {"vision": 35, "audio": 74, "text": 300})
    audio = content["train"]["audio"]
    real = (audio != 0).any(2)
    sample, step = 2, int(np.flatnonzero(real[2])[0])
    audio[sample, step, 5] = -np.inf  # COVAREP's log energy underflow, inside a real step
    with open(path, "wb") as handle:
        pickle.dump(content, handle)

    splits = load_mosi(path)
    assert set(splits) == {"train", "valid", "test"}
    for split, data in splits.items():
        raw = content[split]
        assert isinstance(data, MultiModalDataset) and data.name == "mosi"
        assert data.modalities == ["text", "audio", "vision"]
        assert data.input_shapes == {"text": (50, 300), "audio": (50, 74), "vision": (50, 35)}
        assert data.tasks == {"sentiment": 0}
        assert torch.allclose(data.labels(), torch.from_numpy(raw["labels"].reshape(-1)))
        for modality in data.modalities:
            lengths = (raw[modality] != 0).any(2).sum(1)  # the file's real steps: the last ones, after the padding
            expected = np.arange(50)[None, :] < lengths[:, None]  # the loader's: the first ones
            assert torch.equal(data.step_mask[modality], torch.from_numpy(expected))
            x = data.features[modality].numpy()
            for i, length in enumerate(lengths):
                clean = np.where(np.isneginf(raw[modality][i]), 0.0, raw[modality][i])
                assert np.array_equal(x[i, :length], clean[50 - length:]) and not x[i, length:].any()
    train_audio = splits["train"].features["audio"]
    assert torch.isfinite(train_audio).all() and train_audio[sample, step - (50 - real[sample].sum()), 5] == 0.0
    assert binary_sentiment(splits["train"].labels()).tolist() == (content["train"]["labels"].reshape(-1) >= 0
                                                                   ).astype(int).tolist()


def test_load_mosei_unaligned_pickle_keeps_each_modality_length(tmp_path):
    path = tmp_path / "mosei_raw_noalign.pkl"
    content = _write_affect(path, {"vision": 500, "audio": 375, "text": 50}, {"vision": 35, "audio": 74, "text": 300},
                            seed=1)
    splits = load_mosei(path)
    test = splits["test"]
    assert test.name == "mosei" and len(test) == 4
    assert test.input_shapes == {"text": (50, 300), "audio": (375, 74), "vision": (500, 35)}
    for modality, steps in (("text", 50), ("audio", 375), ("vision", 500)):
        assert test.step_mask[modality].shape == (4, steps)
        assert torch.equal(test.step_mask[modality].sum(1), torch.from_numpy((content["test"][modality] != 0)
                                                                             .any(2).sum(1)))


def test_affect_modality_that_is_all_padding_is_marked_absent_and_nan_samples_are_dropped(tmp_path):
    path = tmp_path / "mosi_data.pkl"
    content = _write_affect(path, {"vision": 50, "audio": 50, "text": 50}, {"vision": 20, "audio": 5, "text": 300})
    content["train"]["vision"][1] = 0.0          # no visual frames at all for sample 1
    content["train"]["text"][4, -1, 0] = np.nan  # a broken sample
    length = int((content["train"]["audio"][3] != 0).any(1).sum())
    content["train"]["audio"][3, -1] = 0.0       # an all-zero row after the first real step is a real step
    with open(path, "wb") as handle:
        pickle.dump(content, handle)
    with pytest.warns(UserWarning, match="dropped 1 samples with NaN"):
        train = load_mosi(path)["train"]
    assert len(train) == 6
    assert train.mask[1].tolist() == [True, True, False]
    assert int(train.step_mask["audio"][3].sum()) == length and not train.features["audio"][3, length - 1].any()
    assert not train.step_mask["vision"][1].any()


@pytest.mark.parametrize("loader", [load_mosi, load_mosei])
def test_affect_missing_or_malformed_file_names_path_layout_and_source(tmp_path, loader):
    missing = tmp_path / "absent.pkl"
    with pytest.raises(FileNotFoundError, match=r"absent\.pkl: file not found.*'labels': \(N, 1, 1\).*MultiBench"):
        loader(missing)
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"broken\.pkl: not a readable pickle.*Expected layout.*MultiBench"):
        loader(broken)
    wrong = tmp_path / "wrong.pkl"
    content = _write_affect(wrong, {"vision": 5, "audio": 5, "text": 5}, {"vision": 3, "audio": 2, "text": 300})
    del content["valid"]["audio"]
    with open(wrong, "wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(ValueError, match=r"wrong\.pkl: .*'valid'.*missing keys \['audio'\].*github.com/pliang279"):
        loader(wrong)


class _RunsCode:
    """A pickled value that calls ``os.system`` when plain ``pickle.load`` reads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("loader", [load_mosi, load_mosei])
def test_affect_pickle_that_would_run_code_is_refused_naming_path_and_global(tmp_path, loader):
    path, marker = tmp_path / "evil.pkl", tmp_path / "marker"
    content = _write_affect(path, {"vision": 5, "audio": 5, "text": 5}, {"vision": 3, "audio": 2, "text": 300})
    content["train"]["id"] = _RunsCode(marker)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)
    with pytest.raises(ValueError, match=r"evil\.pkl: refused to load the global (posix|os|nt)\.system"):
        loader(path)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused to load the global (posix|os|nt)\.system"):
        read_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol, other_numpy", [(0, False), (2, False), (2, True), (4, False), (5, False)])
def test_affect_pickles_of_every_protocol_and_numpy_major_load(tmp_path, protocol, other_numpy):
    content = _write_affect(tmp_path / "mosi_raw.pkl", {"vision": 4, "audio": 4, "text": 4},
                            {"vision": 3, "audio": 2, "text": 5})
    content["train"]["scale"] = (np.float32(2.0), np.int64(3), np.dtype("f8"), b"raw", 1.5, None, True)
    data = pickle.dumps(content, protocol=protocol)
    if other_numpy:  # as the other numpy major writes it: numpy 1.x names its helpers numpy.core.*, 2.x numpy._core.*
        new, old = (b"numpy.core.", b"numpy._core.") if b"numpy._core." in data else (b"numpy._core.", b"numpy.core.")
        assert old in data
        data = data.replace(old, new)  # protocol 2 names globals as plain text lines
    path = tmp_path / "written.pkl"
    path.write_bytes(data)
    read = read_pickle(path)
    assert read["train"]["scale"] == content["train"]["scale"]
    for split in ("train", "valid", "test"):
        for key in ("vision", "audio", "text", "labels", "id"):
            assert np.array_equal(read[split][key], content[split][key])
    assert torch.equal(load_mosi(path)["test"].labels(), torch.from_numpy(content["test"]["labels"].reshape(-1)))


def test_affect_damaged_pickle_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "mosi_raw.pkl"
    content = _write_affect(path, {"vision": 5, "audio": 5, "text": 5}, {"vision": 3, "audio": 2, "text": 300})
    data = pickle.dumps(content, protocol=4)
    assert data.count(b"\x8c\x02f4") >= 1
    path.write_bytes(data.replace(b"\x8c\x02f4", b"\x8c\x02UA"))  # a damaged dtype: numpy raises TypeError
    with pytest.raises(ValueError, match=r"mosi_raw\.pkl: not a readable pickle \(TypeError: .*Expected layout"):
        load_mosi(path)
    for key, value, problem in (("vision", [[1.0, 2.0], [3.0]], r"'vision': not an array \(ValueError"),
                                ("labels", [None] * 7, r"'labels': expected \(N, 1, 1\) sentiment scores"),
                                ("audio", "audio", r"'audio': expected a numeric array")):
        damaged = {**content, "train": {**content["train"], key: value, 3: "a key that is not a string"}}
        with open(path, "wb") as handle:
            pickle.dump(damaged, handle)
        with pytest.raises(ValueError, match=rf"mosi_raw\.pkl: split 'train': {problem}"):
            load_mosi(path)


# ---------------------------------------------------------------------------------------------------- AV-MNIST
def _write_avmnist(root: Path, n_train: int, n_test: int) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"image/{split}_data.npy"] = rng.integers(0, 256, size=(n, 784)).astype(np.float64)
        arrays[f"audio/{split}_data.npy"] = rng.integers(0, 256, size=(n, 112, 112)).astype(np.float64)
        arrays[f"{split}_labels.npy"] = rng.integers(0, 10, size=n)
    for name, array in arrays.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / name, array)
    return arrays


def test_load_avmnist_shapes_scaling_and_validation_split(tmp_path):
    arrays = _write_avmnist(tmp_path, n_train=48, n_test=10)
    splits = load_avmnist(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 44, "valid": 4, "test": 10}  # last 1/12 of train
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    assert train.modalities == ["image", "audio"] and train.tasks == {"label": 10}
    assert train.input_shapes == {"image": (1, 28, 28), "audio": (1, 112, 112)}
    expected = torch.from_numpy(arrays["image/train_data.npy"][44:].reshape(4, 1, 28, 28) / 255).float()
    assert torch.allclose(valid.features["image"], expected)
    assert torch.allclose(test.features["audio"][:, 0],
                          torch.from_numpy(arrays["audio/test_data.npy"] / 255).float())
    assert torch.equal(train.labels(), torch.from_numpy(arrays["train_labels.npy"][:44]))
    for data in splits.values():
        for x in data.features.values():
            assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_load_avmnist_missing_and_malformed_files_name_path_layout_and_source(tmp_path):
    arrays = _write_avmnist(tmp_path, n_train=24, n_test=12)
    (tmp_path / "audio" / "test_data.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"audio/test_data\.npy: file not found.*\(N, 112, 112\).*MultiBench"):
        load_avmnist(tmp_path)
    np.save(tmp_path / "audio" / "test_data.npy", arrays["audio/test_data.npy"][:, :100])
    with pytest.raises(ValueError, match=r"audio/test_data\.npy: expected a numeric array of shape \(12, 112, 112\)"):
        load_avmnist(tmp_path)
    np.save(tmp_path / "audio" / "test_data.npy", arrays["audio/test_data.npy"])
    np.save(tmp_path / "train_labels.npy", arrays["train_labels.npy"] + 10)
    with pytest.raises(ValueError, match=r"train_labels\.npy: expected digits 0\.\.9"):
        load_avmnist(tmp_path)


# ---------------------------------------------------------------------------------------------------- av-digits
needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="av-digits needs the optional espeakng-loader package (mmgraph[data])")


@pytest.fixture(scope="module")
def avdigits_root() -> Path:
    """The user's av-digits cache (built there on first use), as the benchmark reads it."""
    from mmgraph.data.avdigits import avdigits_root as cache_folder

    load_avdigits()
    return cache_folder()


@needs_espeak
def test_load_avdigits_layout_splits_and_disjoint_speakers(avdigits_root):
    splits = load_avdigits(avdigits_root)  # read back from the cache
    assert {k: len(v) for k, v in splits.items()} == {"train": 1760, "valid": 160, "test": 640}
    for data in splits.values():
        assert data.name == "av-digits" and data.modalities == ["image", "audio"]
        assert data.input_shapes == {"image": (1, 28, 28), "audio": (1, 112, 112)}
        assert torch.bincount(data.labels(), minlength=10).tolist() == [len(data) // 10] * 10
    speakers = {split: np.load(avdigits_root / f"{split}_speakers.npy") for split in ("train", "test")}
    train, valid, test = set(speakers["train"][:1760]), set(speakers["train"][1760:]), set(speakers["test"])
    assert len(train | valid | test) == 256 and len(valid) == 16 and len(test) == 64
    assert not (train & valid) and not (train & test) and not (valid & test)
    # the image pairs its audio by label; the noisy images still carry the digit (class means differ)
    image = splits["train"].features["image"].flatten(1)
    means = torch.stack([image[splits["train"].labels() == d].mean(0) for d in range(10)])
    assert torch.cdist(means, means).fill_diagonal_(1e9).min() > 0.5


@pytest.mark.slow
@needs_espeak
def test_load_avdigits_is_deterministic_and_checks_its_files(avdigits_root, tmp_path):
    # a fresh build in a fresh process gives the same files as the cached one
    again = tmp_path / "again"
    code = f"from mmgraph.data import load_avdigits; load_avdigits({str(again)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    first = json.loads((avdigits_root / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first["sha256"] == second["sha256"] and first["pool_sha256"] == second["pool_sha256"]
    name = "audio/test_data.npy"
    assert hashlib.sha256(np.load(again / name).tobytes()).hexdigest() == first["sha256"][name]
    damaged = np.load(again / name)
    damaged[0, 0, 0] ^= 1
    np.save(again / name, damaged)
    with pytest.raises(ValueError, match=r"audio/test_data\.npy: SHA-256 .* differs from the manifest"):
        load_avdigits(again)


@needs_espeak
def test_load_avdigits_rebuilds_a_cache_whose_manifest_is_truncated(avdigits_root, tmp_path, monkeypatch):
    import mmgraph.data.avdigits as avdigits

    cache = tmp_path / "cache"
    shutil.copytree(avdigits_root, cache)
    manifest = (cache / "manifest.json").read_bytes()
    (cache / "manifest.json").write_bytes(manifest[:len(manifest) // 2])
    builds = []

    def build(folder: Path, replace: bool) -> None:  # the real build (17 s) made of the cached copy
        builds.append((folder, replace))
        shutil.rmtree(folder)
        shutil.copytree(avdigits_root, folder)

    monkeypatch.setattr(avdigits, "build_avdigits", build)
    with pytest.warns(UserWarning, match=r"cache/manifest\.json is unreadable \(.*\); the cache is rebuilt"):
        splits = load_avdigits(cache)
    assert builds == [(cache, True)] and len(splits["test"]) == 640
    assert (cache / "manifest.json").read_bytes() == manifest


def test_avdigits_generator_is_never_imported_by_the_library():
    code = ("import sys, mmgraph, mmgraph.data, mmgraph.data.avdigits; "
            "print(sorted(m for m in sys.modules if 'espeak' in m))")
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_evaluate_reports_sentiment_scores_on_a_mosi_fixture(tmp_path):
    from mmgraph.metrics import sentiment_metrics
    from mmgraph.model import FusionModel
    from mmgraph.train import evaluate, predict

    path = tmp_path / "mosi_raw.pkl"
    _write_affect(path, {"vision": 6, "audio": 6, "text": 6}, {"vision": 35, "audio": 74, "text": 300})
    test = load_mosi(path)["test"]
    torch.manual_seed(0)
    model = FusionModel.from_dataset(test, "gnn", dim=8)
    metrics = evaluate(model, test, device="cpu")["sentiment"]
    expected = sentiment_metrics(test.labels(), predict(model, test, device="cpu")["sentiment"])
    assert {"mse", "mae", "r2", "acc2", "acc2_nonzero", "f1", "f1_nonzero", "acc7", "pearson"} <= set(metrics)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, nan_ok=True)
