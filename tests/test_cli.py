"""The ``python -m mmgraph.train`` CLI on a user's .npz: GNN options, resume after a kill, refusing to overwrite an
earlier run, output checks before training, one-line errors for bad values, rank-0-only output under torchrun."""

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from _processes import run_group
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
    (["--gnn-dropout", "1"], "argument --gnn-dropout: expected a number >= 0 and < 1, got '1'"),
    (["--fusion", "concat", "--gnn-dropout", "0"], "--gnn-dropout: GNN options need --fusion gnn"),
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_torchrun_two_processes_write_and_print_once(tmp_path):
    # --standalone: torchrun binds a free port itself (a port probed here and released could be taken meanwhile,
    # e.g. by the other torchrun test on the next xdist worker)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "mmgraph.train",
               "--dataset", "synthetic-interaction", "--samples", "300", "--fusion", "concat", "--dim", "16",
               "--epochs", "2", "--out", str(tmp_path / "run"), "--quiet"]
    completed = run_group(command, ENV, timeout=120)
    # torchrun's failure summary fills the end of stderr: the failing rank's own message is at its start
    assert completed.returncode == 0, (completed.stdout[-1500:] + completed.stderr[:3000] + "\n...\n"
                                       + completed.stderr[-1500:])
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


# ------------------------------------------------------------------------------------- issue 22: CLI faults
_HELD_RUN = """
import sys
import mmgraph.cli.train as cli
fit = cli.fit
def held_fit(*args, **kwargs):  # the run holds --out; it trains once the test says so
    print("training", flush=True)
    sys.stdin.readline()
    return fit(*args, **kwargs)
cli.fit = held_fit
cli.main(sys.argv[1:])
"""


def test_a_second_run_into_a_busy_out_is_refused_naming_the_lock_and_the_process(tmp_path, capsys):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    argv = ["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "2", "--out", str(out), "--quiet"]
    first = subprocess.Popen([sys.executable, "-c", _HELD_RUN, *argv], env=ENV, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline() == "training\n", first.stderr.read()[-3000:]
        for extra in (["--seed", "1"], ["--seed", "1", "--overwrite"], ["--seed", "1", "--resume"]):
            with pytest.raises(SystemExit) as exit_info:
                main(argv + extra)
            assert exit_info.value.code == 2
            error = capsys.readouterr().err.strip().splitlines()[-1]
            assert f"--out: {str(out)!r} is in use by another run (process {first.pid}" in error, error
            assert str(out / "run.lock") in error
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
        first.wait()
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 0  # the first run's, whole
    assert load_checkpoint(out / "checkpoint.pt")["config"]["seed"] == 0
    assert len((out / "metrics.csv").read_text().splitlines()) == 3
    assert not (out / "run.lock").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    out.mkdir()
    (out / "run.lock").write_text("4194303 gone-host\n")  # what a killed run leaves: nobody holds the lock
    main(["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "1", "--out", str(out), "--quiet"])
    assert (out / "metrics.json").exists() and not (out / "run.lock").exists()


@pytest.mark.parametrize("where, message", [
    ("folder", "is a directory; give a file path"),
    ("missing/model.mmgraph", "the folder {tmp}/missing does not exist"),
    ("run/metrics.json", "is one of the run's own files"),
    ("readonly/model.mmgraph", "cannot write to {tmp}/readonly"),
])
def test_save_model_path_is_checked_before_training(tmp_path, capsys, where, message):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    (tmp_path / "folder").mkdir()
    (tmp_path / "readonly").mkdir(mode=0o500)
    target = tmp_path / where
    if where.startswith("readonly") and os.access(tmp_path / "readonly", os.W_OK):  # root writes anywhere ...
        if not Path("/proc/self").is_dir():
            pytest.skip("running as root without /proc: no folder here is unwritable")
        target, message = Path("/proc/model.mmgraph"), "cannot write to /proc"  # ... except into /proc
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "50", "--out", str(out),
              "--quiet", "--save-model", str(target)])
    assert exit_info.value.code == 2 and time.perf_counter() - started < 5
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m mmgraph.train: error: --save-model: ") and message.format(tmp=tmp_path) in error
    assert not (out / "checkpoint.pt").exists()


def test_a_model_that_cannot_be_saved_after_training_keeps_the_run_files(tmp_path, capsys, monkeypatch):
    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"

    def disk_full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(FusionModel, "save", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(data), "--fusion", "concat", "--dim", "16", "--epochs", "1", "--out", str(out), "--quiet",
              "--save-model", str(tmp_path / "model.mmgraph")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--save-model: could not write" in error and "No space left on device" in error
    assert "metrics.json" in error and json.loads((out / "metrics.json").read_text())["epochs_run"] == 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One epoch of a standardised GNN run; resume attempts with other settings must leave it as it is."""
    folder = tmp_path_factory.mktemp("resume")
    data = _npz(folder / "mine.npz")
    options = {"--data": str(data), "--fusion": "gnn", "--conv": "gcn", "--layers": "1", "--dim": "16",
               "--modality-dropout": "0.2", "--epochs": "1", "--out": str(folder / "run")}
    main([*(item for pair in options.items() for item in pair), "--quiet"])
    return folder, options


@pytest.mark.parametrize("changes, message", [
    ({"--modality-dropout": "0.5", "--epochs": "2"}, "modality_dropout 0.2 (checkpoint) != 0.5 (now)"),
    ({"--dim": "32"}, "dim 16 (checkpoint) != 32 (now)"),
    ({"--unimodal-weight": "0"}, "unimodal_weight 1.0 (checkpoint) != 0.0 (now)"),
    ({"--fusion": "concat", "--conv": None, "--layers": None}, "fusion 'gnn' (checkpoint) != 'concat' (now)"),
    ({"--layers": "2", "--heads": "2"}, "fusion_kwargs['layers'] 1 (checkpoint) != 2 (now), "
                                        "fusion_kwargs['heads'] <not set> (checkpoint) != 2 (now)"),
    ({"--no-standardize": ""}, "standardized ['a', 'b'] (checkpoint) != [] (now)"),
    ({"--data": "other.npz"}, "train_data '153 samples, sha256 "),
])
def test_resume_refuses_every_changed_setting_by_name(trained_run, capsys, changes, message):
    folder, options = trained_run
    if changes.get("--data"):
        changes = {"--data": str(_npz(folder / changes["--data"], seed=1))}
    before = (folder / "run" / "checkpoint.pt").read_bytes()
    argv = {**options, **changes}
    with pytest.raises(SystemExit) as exit_info:
        main([*(item for flag, value in argv.items() if value is not None for item in (flag, value) if item),
              "--resume", "--quiet"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was trained with other settings" in error and message in error, error
    assert "Error(s) in loading state_dict" not in error
    assert (folder / "run" / "checkpoint.pt").read_bytes() == before


def test_resume_may_extend_the_epochs(trained_run, tmp_path):
    folder, options = trained_run
    shutil.copytree(folder / "run", tmp_path / "run")
    argv = {**options, "--epochs": "2", "--out": str(tmp_path / "run")}
    report = main([*(item for pair in argv.items() for item in pair), "--resume", "--quiet"])
    assert report["epochs_run"] == 2 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2


@pytest.mark.parametrize("damage", ["truncated", "bit_flip"])
def test_a_damaged_npz_is_a_one_line_error_naming_the_file(tmp_path, capsys, damage):
    path = _npz(tmp_path / "mine.npz")
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0x04  # inside the first array's data: its CRC no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"python -m mmgraph.train: error: --data: {str(path)!r} is not a readable .npz file"), error


def test_a_full_disk_during_a_checkpoint_save_names_the_path_and_keeps_the_previous_checkpoint(
        tmp_path, capsys, monkeypatch):
    import mmgraph.io

    data, out = _npz(tmp_path / "mine.npz"), tmp_path / "run"
    argv = ["--data", str(data), "--fusion", "concat", "--dim", "16", "--out", str(out), "--quiet"]
    main(argv + ["--epochs", "1"])

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mmgraph.io, "open", lambda path, mode="r": FullDisk(path, mode.replace("b", "")),
                        raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(argv + ["--epochs", "2", "--resume"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"cannot write the checkpoint {out / 'checkpoint.pt'}" in error and "No space left on device" in error
    assert "the previous checkpoint (epoch 1) is intact" in error and "--resume" in error, error
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1 and list(out.glob("*.tmp*")) == []
    monkeypatch.undo()
    assert main(argv + ["--epochs", "2", "--resume"])["epochs_run"] == 2


def test_cli_readout_and_positional_choices_are_the_gnn_s():
    from mmgraph.cli.train import _POSITIONALS, _READOUTS
    from mmgraph.gnn import READOUTS
    from mmgraph.gnn.position import POSITIONALS

    assert _READOUTS == READOUTS and _POSITIONALS == POSITIONALS


def test_cli_positional_reaches_the_gnn_and_none_turns_positions_off(tmp_path):
    common = ["--dataset", "synthetic-temporal", "--samples", "120", "--fusion", "gnn", "--dim", "16", "--epochs",
              "1", "--quiet"]
    for flag, expected in (("none", None), ("learned", "learned")):
        main(common + ["--positional", flag, "--out", str(tmp_path / flag), "--save-model", str(tmp_path / flag / "m")])
        model = FusionModel.load(tmp_path / flag / "m")
        assert model.config()["fusion_kwargs"]["positional"] == expected
        assert (model.fusion.gnn.positional is None) == (expected is None)
    with pytest.raises(SystemExit):
        main(common + ["--fusion", "concat", "--positional", "learned", "--out", str(tmp_path / "c")])


def test_cli_gnn_dropout_reaches_the_gnn(tmp_path):
    main(["--dataset", "synthetic-interaction", "--samples", "120", "--fusion", "gnn", "--dim", "16", "--epochs", "1",
          "--quiet", "--gnn-dropout", "0.3", "--out", str(tmp_path / "r"), "--save-model", str(tmp_path / "m")])
    model = FusionModel.load(tmp_path / "m")
    assert model.config()["fusion_kwargs"]["dropout"] == 0.3
    assert all(layer.dropout == 0.3 for layer in model.fusion.gnn.layers)
