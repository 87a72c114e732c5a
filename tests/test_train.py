"""fit / evaluate / predict, checkpoints and resume, and the ``python -m mmgraph.train`` CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import mmgraph.train as train_module
from mmgraph.data import MultiModalDataset
from mmgraph.model import FusionModel
from mmgraph.train import FitResult, evaluate, fit, load_checkpoint, main, predict

DIM = 16


def _xor_dataset(n: int, seed: int, regression: bool = False) -> MultiModalDataset:
    """Label = XOR of one sign per modality: neither modality alone beats chance."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 5, generator=gen), torch.randn(n, 3, generator=gen)
    targets = {"label": ((a[:, 0] > 0) ^ (b[:, 0] > 0)).long()}
    if regression:
        targets["level"] = a[:, 1] + b[:, 1]
    return MultiModalDataset({"a": a, "b": b}, targets)


@pytest.fixture(scope="module")
def xor():
    return _xor_dataset(320, seed=0), _xor_dataset(160, seed=1)


def _model(tasks=None, fusion="concat", seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    encoders = {"a": nn.Sequential(nn.Linear(5, DIM), nn.ReLU()), "b": nn.Sequential(nn.Linear(3, DIM), nn.ReLU())}
    return FusionModel(encoders, fusion, tasks or {"label": 2}, dim=DIM, head_hidden=DIM)


def _fit(model, train, val=None, **options) -> FitResult:
    options = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "progress": False, "device": "cpu", **options}
    return fit(model, train, val, **options)


@pytest.mark.parametrize("optimizer, lr, batch_size", [("adam", 1e-2, 32), ("sgd", 3e-2, 8)])
def test_fit_improves_validation_accuracy_over_the_untrained_model(xor, optimizer, lr, batch_size):
    train, val = xor
    model = _model()
    before = evaluate(model, val, device="cpu")["label"]["accuracy"]
    result = _fit(model, train, val, optimizer=optimizer, lr=lr, batch_size=batch_size, epochs=25)
    after = evaluate(model, val, device="cpu")["label"]["accuracy"]
    assert after > max(before, 0.5) + 0.2, (optimizer, before, after)
    assert len(result.history) == result.epochs_run == 25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_best_weights_are_restored_and_early_stopping_stops(xor):
    train, val = xor
    model = _model()
    result = _fit(model, train, val, epochs=40, patience=3, lr=3e-2)
    assert result.best_epoch == max(range(1, result.epochs_run + 1),
                                    key=lambda e: (result.history[e - 1]["score"], -e))
    assert result.epochs_run == 40 or result.epochs_run - result.best_epoch == 3
    assert evaluate(model, val, device="cpu")["label"]["accuracy"] == pytest.approx(result.best_score)


def test_same_seed_gives_the_same_parameters(xor):
    train, _ = xor
    first, second = _model(), _model()
    _fit(first, train, epochs=2, seed=3)
    _fit(second, train, epochs=2, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), second.parameters()))


def test_checkpoint_holds_only_tensors_and_plain_config(xor, tmp_path):
    train, val = xor
    path = tmp_path / "run" / "checkpoint.pt"
    _fit(_model(), train, val, epochs=2, checkpoint=path)
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and len(state["history"]) == 2 and state["config"]["optimizer"] == "adam"
    assert {"model", "optimizer", "best_state", "best_score", "rng"} <= set(state)
    fresh = _model(seed=1)
    fresh.load_state_dict(state["best_state"])
    assert not list(path.parent.glob("*.tmp*"))


def test_resume_ends_with_exactly_the_uninterrupted_parameters(xor, tmp_path):
    train, val = xor
    options = {"restore_best": False, "seed": 5, "task_weights": {"label": 1.0}}
    uninterrupted = _model()
    _fit(uninterrupted, train, val, epochs=4, checkpoint=tmp_path / "full.pt", **options)

    path = tmp_path / "interrupted.pt"
    _fit(_model(), train, val, epochs=2, checkpoint=path, **options)  # "killed" after epoch 2
    resumed = _model(seed=9)  # a fresh process: different initial weights, all replaced by the checkpoint
    result = _fit(resumed, train, val, epochs=4, checkpoint=path, resume=True, **options)

    assert result.epochs_run == 4 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    for (name, p), q in zip(uninterrupted.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    full = load_checkpoint(tmp_path / "full.pt")
    assert [h["score"] for h in result.history] == [h["score"] for h in full["history"]]


def test_interrupted_save_leaves_the_previous_checkpoint_intact(xor, tmp_path, monkeypatch):
    train, val = xor
    path = tmp_path / "checkpoint.pt"
    real_save = torch.save
    calls = []

    def save_then_crash(obj, handle, *args, **kwargs):
        calls.append(isinstance(obj, dict) and "mmgraph_file" in obj)  # the file's envelope, not its payload
        if sum(calls) == 3:  # epoch 3: a partial temporary file, then the process "dies"
            handle.write(b"\x80\x02partial")
            raise KeyboardInterrupt("killed while saving")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(train_module.torch, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), train, val, epochs=5, checkpoint=path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 2
    _model().load_state_dict(state["model"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_save_failure_after_the_temporary_file_is_written_keeps_the_old_file(xor, tmp_path, monkeypatch):
    train, _ = xor
    path = tmp_path / "checkpoint.pt"
    _fit(_model(), train, epochs=1, checkpoint=path)
    before = path.read_bytes()

    def replace_fails(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(train_module.os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        _fit(_model(), train, epochs=1, checkpoint=path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_multi_task_with_regression_and_aux_loss(xor):
    gen_train, gen_val = _xor_dataset(200, seed=2, regression=True), _xor_dataset(100, seed=3, regression=True)
    model = _model({"label": 2, "level": 0}, fusion="seq2seq")
    result = _fit(model, gen_train, gen_val, epochs=3, task_weights={"level": 0.5}, aux_weight=0.1,
                  grad_clip=1.0)
    assert {"val_label_accuracy", "val_level_mse", "val_loss", "score"} <= set(result.history[-1])
    metrics = evaluate(model, gen_val, device="cpu")
    assert {"accuracy", "macro_recall", "macro_f1", "confusion_matrix"} <= set(metrics["label"])
    assert {"mse", "mae", "r2"} <= set(metrics["level"])
    predictions = predict(model, gen_val, device="cpu")
    assert predictions["label"].shape == (100,) and predictions["label"].dtype == torch.long
    assert predictions["level"].shape == (100,) and predictions["level"].is_floating_point()


def test_regression_only_monitors_negative_mse():
    train, val = _xor_dataset(120, seed=4, regression=True), _xor_dataset(60, seed=5, regression=True)
    model = _model({"level": 0})
    result = _fit(model, train, val, epochs=2)
    assert result.history[-1]["score"] == pytest.approx(-result.history[-1]["val_level_mse"])


@pytest.mark.parametrize("options, error, message", [
    ({"optimizer": "rmsprop"}, ValueError, r"optimizer: expected one of \['adam', 'adamw', 'sgd'\], got 'rmsprop'"),
    ({"epochs": 0}, ValueError, "epochs: expected an int >= 1, got 0"),
    ({"lr": -1.0}, ValueError, "lr: expected a positive number"),
    ({"monitor": "auc"}, ValueError, "monitor: expected one of"),
    ({"amp": True}, ValueError, "amp: mixed precision is supported on CUDA only"),
    ({"resume": True}, ValueError, "resume: True needs a checkpoint path"),
    ({"task_weights": {"other": 1.0}}, ValueError, r"task_weights: unknown tasks \['other'\]"),
])
def test_bad_fit_arguments_raise_clearly(xor, options, error, message):
    train, _ = xor
    with pytest.raises(error, match=message):
        _fit(_model(), train, **options)


def test_model_tasks_must_have_targets(xor):
    train, _ = xor
    with pytest.raises(ValueError, match=r"train: no targets for the model's tasks \['other'\]"):
        _fit(_model({"other": 3}), train)


def test_cli_trains_end_to_end_and_writes_metrics(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "mmgraph.train", "--dataset", "synthetic-interaction", "--fusion", "concat",
               "--epochs", "2", "--samples", "300", "--dim", "16", "--out", str(tmp_path), "--quiet"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "test" in completed.stdout and "accuracy" in completed.stdout
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["dataset"] == "synthetic-interaction" and report["epochs_run"] == 2
    assert all({"accuracy", "macro_f1", "macro_recall"} <= set(m) for m in report["test"].values())
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2


def test_cli_rejects_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "mnist"])
    assert exit_info.value.code == 2
    assert "--dataset: invalid choice: 'mnist'" in capsys.readouterr().err


def test_load_dataset_rejects_an_unknown_name():
    with pytest.raises(ValueError, match=r"dataset: expected one of \['handwritten'"):
        train_module.load_dataset("mnist")


def test_fit_raises_when_the_loss_becomes_nan(xor):
    train, val = xor
    model = _model()
    with torch.no_grad():
        for parameter in model.heads.parameters():  # finite features, NaN logits
            parameter.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        _fit(model, train, val, epochs=2, batch_size=len(train))  # one step per epoch: the epoch check fires
