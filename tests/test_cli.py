"""The ``python -m mmgraph.train`` CLI on a user's .npz: GNN options, resume after a kill, refusing to overwrite an
earlier run, output checks before training, one-line errors for bad values, rank-0-only output under torchrun."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgraph.model import FusionModel
from mmgraph.train import load_checkpoint, load_npz, main

ROOT = Path(__file__).parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _npz(path: Path, n: int = 240, seed: int = 0, level: bool = False, **extra) -> Path:
    """Two modalities; ``label`` = XOR of one sign from each, ``level`` a regression target; ``b`` missing in ~10 %."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32)
    arrays = {"a": a, "b": b, "label": ((a[:, 0] > 0) ^ (b[:, 0] > 0)).astype(np.int64),
              "b_mask": rng.random(n) > 0.1, **extra}
    if level:
        arrays["level"] = (a[:, 1] + b[:, 1]).astype(np.float32)
    np.savez(path, **arrays)
    return path


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmgraph.train", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_load_npz_matches_arrays_masks_and_targets_by_name(tmp_path):
    path = _npz(tmp_path / "mine.npz", level=True)
    arrays = np.load(path)
    dataset = load_npz(path, targets=("label", "level"))
    assert dataset.modalities == ["a", "b"] and dataset.tasks == {"label": 2, "level": 0}
    assert torch.equal(dataset.mask[:, dataset.modalities.index("b")], torch.as_tensor(arrays["b_mask"]))
    assert dataset.mask[:, dataset.modalities.index("a")].all()
    assert torch.equal(dataset.targets["label"], torch.as_tensor(arrays["label"]))


def test_cli_trains_on_a_user_npz_with_gnn_options(tmp_path, capsys):
    data = _npz(tmp_path / "mine.npz", level=True)
    out = tmp_path / "run"
    report = main(["--data", str(data), "--targets", "label", "level", "--fusion", "gnn", "--conv", "gcn",
                   "--layers", "1", "--relations", "star", "--readout", "mean", "--label-smoothing", "0.1",
                   "--no-standardize", "--dim", "16", "--epochs", "2", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert printed.startswith("mine / gnn: test label accuracy ") and " level mse " in printed
    assert {"accuracy", "macro_f1"} <= set(report["test"]["label"]) and "r2" in report["test"]["level"]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["config"]["label_smoothing"] == 0.1 and state["epoch"] == 2
    keys = list(state["model"])
    assert any("to_centre" in k for k in keys)  # star relations
    assert not any(".layers.1." in k or "gate_nn" in k for k in keys)  # one layer, mean readout
    assert len((out / "metrics.csv").read_text().splitlines()) == 3  # header + one row per epoch
    assert json.loads((out / "metrics.json").read_text())["test"] == report["test"]


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: expected an int >= 1, got '0'"),
    (["--lr", "-1"], "argument --lr: expected a number > 0, got '-1'"),
    (["--label-smoothing", "1"], "argument --label-smoothing: expected a number >= 0 and < 1, got '1'"),
    (["--heads", "3", "--dim", "16"], "hidden: must be divisible by heads"),
    (["--relations", "ring"], "relations"),
    (["--fusion", "concat", "--conv", "gcn"], "--conv: GNN options need --fusion gnn"),
    (["--edge-pruning", "1"], "argument --edge-pruning: expected a number >= 0 and < 1, got '1'"),
    (["--edge-pruning", "0.5", "--conv", "gcn"], "edge_pruning: ranks edges by attention"),
    (["--targets", "intent"], r"has no target arrays ['intent'] (--targets)"),
    (["--fusion", "nope"], "nope"),
])
def test_bad_values_give_a_one_line_usage_error(tmp_path, capsys, argv, message):
    data = _npz(tmp_path / "mine.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m mmgraph.train: error: ") and message in err[-1], err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("extra, message", [
    ({"c_mask": np.ones(240, dtype=bool)}, "--data: mask arrays ['c_mask'] name no modality"),
    ({"a_mask": np.ones(240, dtype=np.int64)}, "--data: a_mask: expected a boolean array of shape (240,)"),
    ({"score": np.zeros(240, dtype=np.float32)}, "--data: 'score' is one value per sample"),
])
def test_bad_npz_arrays_are_refused(tmp_path, capsys, extra, message):
    data = _npz(tmp_path / "mine.npz", **extra)
    with pytest.raises(SystemExit):
        main(["--data", str(data), "--out", str(tmp_path / "run"), "--quiet"])
    assert message in capsys.readouterr().err


def test_a_rerun_into_the_same_out_neither_overwrites_nor_trains(tmp_path, capsys):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    argv = ["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "1", "--out", str(out), "--quiet"]
    main(argv)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds the checkpoint of an earlier run" in error and "--resume" in error and "--overwrite" in error
    assert (out / "checkpoint.pt").read_bytes() == before
    main(argv + ["--overwrite", "--seed", "1"])  # asked for: a new run replaces it
    assert load_checkpoint(out / "checkpoint.pt")["config"]["seed"] == 1


def test_an_out_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "occupied"
    out.write_text("not a folder")
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "50", "--out", str(out),
              "--quiet"])
    assert exit_info.value.code == 2 and time.perf_counter() - started < 5
    assert "--out: " in capsys.readouterr().err and out.read_text() == "not a folder"


def test_resume_continues_a_killed_run_to_the_uninterrupted_result(tmp_path):
    data = _npz(tmp_path / "mine.npz", n=1000)
    epochs = 15
    argv = ["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", str(epochs), "--patience", "100",
            "--threads", "1", "--quiet"]
    full = _run(argv + ["--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "mmgraph.train", *argv, "--out", str(out)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert killed_at < epochs and not (out / "metrics.json").exists()

    resumed = _run(argv + ["--out", str(out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert got["epoch"] == expected["epoch"] == epochs
    for name, value in expected["model"].items():
        assert torch.equal(value, got["model"][name]), name
    report = json.loads((out / "metrics.json").read_text())
    assert report["test"] == json.loads((tmp_path / "full" / "metrics.json").read_text())["test"]
    assert len((out / "metrics.csv").read_text().splitlines()) == epochs + 1


def test_torchrun_two_processes_write_and_print_once(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "mmgraph.train",
               "--dataset", "synthetic-interaction", "--samples", "300", "--fusion", "concat", "--dim", "16",
               "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet"]
    completed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summaries = [line for line in completed.stdout.splitlines() if "synthetic-interaction / concat: test" in line]
    assert len(summaries) == 1, completed.stdout
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["epochs_run"] == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["config"]["world_size"] == 2


@pytest.mark.skipif(not hasattr(FusionModel, "save"), reason="--save-model needs FusionModel.save/load (issue 11)")
def test_save_model_writes_the_trained_model(tmp_path):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    main(["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "2", "--out", str(out), "--quiet",
          "--save-model", str(tmp_path / "model.pt")])
    loaded = FusionModel.load(tmp_path / "model.pt")
    best = load_checkpoint(out / "checkpoint.pt")["best_state"]
    assert all(torch.equal(value, best[name]) for name, value in loaded.state_dict().items())


def test_saved_model_predicts_raw_arrays_in_a_fresh_process_like_the_cli_scored_it(tmp_path):
    # features far from z-scores: a model that expected standardised inputs would be silently wrong on raw arrays
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 3))
    label = np.where(a[:, 0] + b[:, 0] > 0, "pos", "neg")
    raw = {"a": a * 40.0 + 200.0, "b": b * 0.01 - 5.0}
    np.savez(tmp_path / "mine.npz", **raw, label=label)
    report = main(["--data", str(tmp_path / "mine.npz"), "--fusion", "concat", "--dim", "16", "--epochs", "15",
                   "--out", str(tmp_path / "run"), "--quiet", "--save-model", str(tmp_path / "model.mmgraph")])
    assert report["test"]["label"]["accuracy"] >= 0.85
    script = ("import numpy as np, sys; from mmgraph import FusionModel, predict; "
              "d = np.load(sys.argv[1]); m = FusionModel.load(sys.argv[2]); "
              "p = predict(m, {'b': d['b'], 'a': d['a']})['label']; print((p == d['label']).mean())")
    completed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "mine.npz"),
                                str(tmp_path / "model.mmgraph")], env=ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    # the whole file, raw, keys in another order, string labels back: scored like the CLI scored its test part
    assert float(completed.stdout) >= report["test"]["label"]["accuracy"] - 0.1
