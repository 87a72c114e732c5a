"""fit / evaluate / predict, checkpoints and resume, and the ``python -m mmgraph.train`` CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmgraph.io as io_module
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


def _model(tasks=None, fusion="concat", seed: int = 0, **kwargs) -> FusionModel:
    torch.manual_seed(seed)
    encoders = {"a": nn.Sequential(nn.Linear(5, DIM), nn.ReLU()), "b": nn.Sequential(nn.Linear(3, DIM), nn.ReLU())}
    return FusionModel(encoders, fusion, tasks or {"label": 2}, dim=DIM, head_hidden=DIM, **kwargs)


def _fit(model, train, val=None, **options) -> FitResult:
    # the settings these tests were written for (no regularisation, no early stopping unless asked), not
    # TrainConfig's defaults: the tests check the loop's mechanics
    options = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "progress": False, "device": "cpu", "weight_decay": 0.0,
               "label_smoothing": 0.0, "patience": None, **options}
    return fit(model, train, val, **options)


def test_fit_trains_each_modalitys_unimodal_head_on_that_modality_alone():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (320,), generator=gen)
    a, b = torch.randn(320, 5, generator=gen), torch.randn(320, 3, generator=gen)
    a[:, 0] += 3.0 * (2 * y - 1)  # each modality alone predicts the label (b less well: Bayes ~0.98)
    b[:, 1] += 2.0 * (2 * y - 1)
    model = _model(fusion="gnn")
    assert model.unimodal_heads is not None  # on by default
    _fit(model, MultiModalDataset({"a": a, "b": b}, {"label": y}), epochs=8)
    with torch.no_grad():
        for name, x in (("a", a), ("b", b)):
            logits = model.unimodal_heads["label"][name](model.encoders[name](x))
            # without the loss the heads stay at their init (a session run: accuracy 0.33 / 0.82, CE 0.96 / 0.59)
            assert (logits.argmax(-1) == y).float().mean() > 0.95, name
            assert F.cross_entropy(logits, y) < 0.2, name


@pytest.mark.parametrize("optimizer, lr, batch_size", [("adam", 1e-2, 32), ("sgd", 3e-2, 8)])
def test_fit_improves_validation_accuracy_over_the_untrained_model(xor, optimizer, lr, batch_size):
    train, val = xor
    # the optimisers' mechanics, without the unimodal heads: on this XOR, which no modality predicts alone, they slow
    # SGD down (a session run: 0.53 after 25 epochs, 0.90 after 40; 0.80 / 0.94 without them; Adam 0.95 either
    # way; docs/training.md)
    model = _model(unimodal_weight=0 if optimizer == "sgd" else 1.0)
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
    # the best score; among equal scores the lowest validation loss, then the earliest epoch
    assert result.best_epoch == max(range(1, result.epochs_run + 1),
                                    key=lambda e: (result.history[e - 1]["score"], -result.history[e - 1]["val_loss"],
                                                   -e))
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

    monkeypatch.setattr(io_module.torch, "save", save_then_crash)
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

    monkeypatch.setattr(io_module.os, "replace", replace_fails)
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


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------- issue 12: fit
def test_batches_of_one_sample_train():
    train = _xor_dataset(12, seed=6)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    result = _fit(model, train, epochs=1, batch_size=1)
    assert result.history[0]["train_loss"] > 0
    assert all(not torch.equal(p, q) for p, q in zip(before, model.parameters()))


def test_label_smoothing_and_class_weight_shape_the_training_loss():
    """With lr ~ 0 the one-batch epoch loss is the loss of the initial model, computed here by hand."""
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(60, 5, generator=gen), torch.randn(60, 3, generator=gen)
    train = MultiModalDataset({"a": a, "b": b}, {"label": (torch.arange(60) % 6 == 0).long()})  # 10 vs 50
    logits = _model(unimodal_weight=0)(train[torch.arange(60)].inputs)["label"].detach()
    target = train.labels()
    counts = torch.bincount(target).float()
    for options, expected in [
        ({"label_smoothing": 0.2}, torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.2)),
        ({"class_weight": "balanced"}, torch.nn.functional.cross_entropy(logits, target, weight=60 / (2 * counts))),
        ({"class_weight": {"label": [1.0, 3.0]}},
         torch.nn.functional.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]))),
    ]:
        result = _fit(_model(unimodal_weight=0), train, epochs=1, batch_size=60, lr=1e-12, **options)
        assert result.history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-5), options
    plain = torch.nn.functional.cross_entropy(logits, target).item()
    assert _fit(_model(unimodal_weight=0), train, epochs=1, batch_size=60, lr=1e-12).history[0]["train_loss"] == \
        pytest.approx(plain)
    # the default model adds its unimodal heads' loss: zero at initialisation, so log 2 per modality (the same
    # draws: the heads are built last), times unimodal_weight, class weights applied per sample
    assert _fit(_model(), train, epochs=1, batch_size=60, lr=1e-12).history[0]["train_loss"] == \
        pytest.approx(plain + math.log(2), rel=1e-5)
    weights = torch.tensor([1.0, 3.0])
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weights) \
        + 0.5 * weights[target].mean() * math.log(2)
    result = _fit(_model(unimodal_weight=0.5), train, epochs=1, batch_size=60, lr=1e-12,
                  class_weight={"label": [1.0, 3.0]})
    assert result.history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_cosine_and_plateau_schedulers_set_the_learning_rate(xor):
    train, val = xor
    result = _fit(_model(), train, val, epochs=4, lr=1e-2, scheduler="cosine")
    assert [h["lr"] for h in result.history] == pytest.approx(
        [1e-2 * (1 + torch.cos(torch.tensor(torch.pi * e / 4)).item()) / 2 for e in range(4)])
    # lr ~ 0: the score never improves, so after patience // 2 = 2 epochs without improvement the rate halves
    result = _fit(_model(), train, val, epochs=5, lr=1e-7, scheduler="plateau", patience=4)
    assert len({h["score"] for h in result.history}) == 1
    assert [h["lr"] for h in result.history] == pytest.approx([1e-7] * 4 + [5e-8])


def test_monitor_one_task_metric():
    train, val = _xor_dataset(200, seed=2, regression=True), _xor_dataset(100, seed=3, regression=True)
    result = _fit(_model({"label": 2, "level": 0}), train, val, epochs=2, monitor="label/macro_f1")
    assert [h["score"] for h in result.history] == [h["val_label_macro_f1"] for h in result.history]
    result = _fit(_model({"label": 2, "level": 0}), train, val, epochs=2, monitor="level/mse")
    assert [h["score"] for h in result.history] == [-h["val_level_mse"] for h in result.history]
    with pytest.raises(ValueError, match=r"monitor: unknown task 'intent' in 'intent/accuracy'"):
        _fit(_model({"label": 2, "level": 0}), train, val, monitor="intent/accuracy")
    with pytest.raises(ValueError, match=r"monitor: regression task 'level' has metrics \['level/mse'\]"):
        _fit(_model({"label": 2, "level": 0}), train, val, monitor="level/accuracy")


def test_accuracy_ties_are_broken_by_the_lower_validation_loss():
    """On separable data validation accuracy saturates at 100 % early while the loss keeps falling: the best
    epoch is the saturated epoch with the lowest validation loss, not the first one to reach 100 %."""
    gen = torch.Generator().manual_seed(8)
    a, b = torch.randn(300, 5, generator=gen), torch.randn(300, 3, generator=gen)
    a[:, 0] += a[:, 0].sign()  # a margin around the decision boundary
    data = MultiModalDataset({"a": a, "b": b}, {"label": (a[:, 0] > 0).long()})
    train, val = data.subset(torch.arange(200)), data.subset(torch.arange(200, 300))
    model = _model()
    result = _fit(model, train, val, epochs=12, lr=1e-2)
    scores = [h["score"] for h in result.history]
    tied = [e for e in range(1, 13) if scores[e - 1] == max(scores)]
    assert len(tied) >= 2, scores  # the test needs a tie
    expected = min(tied, key=lambda e: result.history[e - 1]["val_loss"])
    assert result.best_epoch == expected != tied[0]
    assert evaluate(model, val, device="cpu")["label"]["accuracy"] == max(scores)


def test_log_dir_gets_a_per_epoch_csv_and_tensorboard_events(xor, tmp_path):
    import csv

    train, val = xor
    result = _fit(_model(), train, val, epochs=3, log_dir=tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx([h["val_loss"] for h in result.history])
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the optional `log` extra")
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("targets, message", [
    (torch.tensor([0, 1, 2] * 10), r"train: task 'label' has class ids \[2\] outside \[0, 2\); the model's head for "
                                   r"'label' has 2 classes"),
    (torch.zeros(30, dtype=torch.long), r"train: task 'label' has a single class \(\[0\]\) in these 30 samples"),
])
def test_targets_the_model_cannot_learn_are_refused_naming_the_task(targets, message):
    data = MultiModalDataset({"a": torch.randn(30, 5), "b": torch.randn(30, 3)}, {"label": targets})
    with pytest.raises(ValueError, match=message):
        _fit(_model(), data)


# ---------------------------------------------------------------------------------------------- issue 12: resume
def _interrupted(xor, path, **options):
    train, val = xor
    _fit(_model(), train, val, epochs=2, checkpoint=path, **options)
    return train, val


def test_resume_with_other_settings_raises_naming_each_of_them(xor, tmp_path):
    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"was trained with other settings: lr 0\.01 \(checkpoint\) != 0\.001 \(now\)"
                                         r", batch_size 32 \(checkpoint\) != 16 \(now\); pass override=\('lr', "
                                         r"'batch_size'\)"):
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True, lr=1e-3, batch_size=16)
    with pytest.raises(ValueError, match=r"seed 0 \(checkpoint\) != 1 \(now\)"):
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True, seed=1)
    with pytest.raises(ValueError, match=r"train_data '320 samples, sha256 [0-9a-f]{16} \(mask, targets, 64 rows\)' "
                                         r"\(checkpoint\) != '319 samples"):
        _fit(_model(), train.subset(torch.arange(319)), val, epochs=4, checkpoint=path, resume=True)
    assert path.read_bytes() == before


def test_resume_with_an_override_trains_with_the_new_value_and_records_it(xor, tmp_path):
    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    result = _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True, lr=1e-3, override=("lr",))
    assert [h["lr"] for h in result.history] == [1e-2, 1e-2, 1e-3, 1e-3]
    state = load_checkpoint(path)
    assert state["config"]["lr"] == 1e-3
    assert all(group["lr"] == 1e-3 for group in state["optimizer"]["param_groups"])
    assert state["overrides"] == [{"epoch": 2, "lr": [1e-2, 1e-3]}]
    with pytest.raises(ValueError, match=r"override: unknown settings \['learning_rate'\]"):
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True, override=("learning_rate",))


def test_resume_with_another_model_names_the_model_settings_not_torch_s_state_dict_error(xor, tmp_path):
    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    with pytest.raises(ValueError, match=r"was trained with other settings: architecture 'FusionModel, \d+ tensors, "
                                         r"sha256 [0-9a-f]{16}' \(checkpoint\) != 'FusionModel, .*architecture shapes "
                                         r"the model's parameters and cannot be overridden"):
        _fit(_model(fusion="late"), train, val, epochs=4, checkpoint=path, resume=True, override=("architecture",))
    dropped = _model()
    dropped.modality_dropout = 0.5  # a setting that changes training, not the parameters: may be overridden
    with pytest.raises(ValueError, match=r"modality_dropout 0\.0 \(checkpoint\) != 0\.5 \(now\); pass "
                                         r"override=\('modality_dropout',\)"):
        _fit(dropped, train, val, epochs=4, checkpoint=path, resume=True)
    _fit(dropped, train, val, epochs=3, checkpoint=path, resume=True, override=("modality_dropout",))
    assert load_checkpoint(path)["overrides"] == [{"epoch": 2, "modality_dropout": [0.0, 0.5]}]


@pytest.mark.parametrize("override", [(), ("optimizer",)])
def test_resume_adam_with_sgd_is_a_clear_error(xor, tmp_path, override):
    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    with pytest.raises(ValueError, match=r"holds 'adam' optimizer state, which optimizer='sgd' cannot continue"):
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True, optimizer="sgd", override=override)


@pytest.mark.parametrize("damage", ["bit_flip", "truncated", "random_bytes"])
def test_resume_from_a_damaged_checkpoint_names_the_file(xor, tmp_path, damage):
    from mmgraph.io import CorruptFileError

    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    data = bytearray(path.read_bytes())
    if damage == "bit_flip":
        data[len(data) // 2] ^= 0x10
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data = bytearray(torch.randint(0, 256, (len(data),), generator=torch.Generator().manual_seed(0)).byte()
                         .numpy().tobytes())
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"corrupt|truncated") as error:
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True)
    assert str(path) in str(error.value)


def test_resume_from_a_checkpoint_of_another_format_is_refused(xor, tmp_path):
    path = tmp_path / "checkpoint.pt"
    train, val = _interrupted(xor, path)
    state = load_checkpoint(path)
    train_module.save_checkpoint(path, {**state, "format": 1})
    with pytest.raises(ValueError, match=r"is a format-1 checkpoint of another mmgraph version"):
        _fit(_model(), train, val, epochs=4, checkpoint=path, resume=True)


# ---------------------------------------------------------------------------------------------------- TrainConfig
def test_every_entry_point_reads_its_training_defaults_from_train_config():
    import dataclasses
    import inspect

    from mmgraph.cli.train import _parser
    from mmgraph.sklearn import MultiModalClassifier
    from mmgraph.training import TrainConfig

    defaults = TrainConfig()
    signature = inspect.signature(fit).parameters
    for field in dataclasses.fields(TrainConfig):
        assert signature[field.name].default == getattr(defaults, field.name), field.name
    args = _parser().parse_args(["--dataset", "handwritten"])
    for name in ("optimizer", "lr", "weight_decay", "epochs", "patience", "batch_size", "scheduler",
                 "label_smoothing"):
        assert getattr(args, name) == getattr(defaults, name), name
    estimator = MultiModalClassifier().get_params()
    assert (estimator["lr"], estimator["weight_decay"], estimator["batch_size"], estimator["max_epochs"],
            estimator["patience"]) == (defaults.lr, defaults.weight_decay, defaults.batch_size, defaults.epochs,
                                       defaults.patience)
    assert (defaults.weight_decay, defaults.label_smoothing) == (1e-3, 0.1)  # the tuned budget (tune_budget.py)


def test_config_object_trains_like_the_same_keywords_and_refuses_a_second_value(xor):
    from mmgraph.training import TrainConfig

    train, val = xor
    by_keywords, by_config = _model(), _model()
    first = fit(by_keywords, train, val, epochs=3, lr=1e-2, weight_decay=0.0, device="cpu", progress=False)
    second = fit(by_config, train, val, config=TrainConfig(epochs=3, lr=1e-2, weight_decay=0.0), device="cpu",
                 progress=False)
    assert all(torch.equal(p, q) for p, q in zip(by_keywords.parameters(), by_config.parameters()))
    assert first.history == [{**h, "time_s": f["time_s"]} for h, f in zip(second.history, first.history)]
    assert second.config == TrainConfig(epochs=3, lr=1e-2, weight_decay=0.0)
    with pytest.raises(ValueError, match=r"config: \['lr'\] given both as keywords and through config="):
        fit(_model(), train, val, lr=0.1, config=TrainConfig(epochs=1))
    with pytest.raises(ValueError, match=r"weight_decay: expected a non-negative number, got -1"):
        TrainConfig(weight_decay=-1)


# ---------------------------------------------------------------------------------------------------- callbacks
def test_a_custom_logger_and_callback_see_every_epoch_of_fit(xor, tmp_path):
    from mmgraph.training import Callback, Logger, TrainConfig

    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, model, config):
            self.events.append(("start", type(model).__name__, config.epochs))

        def on_epoch_end(self, epoch, metrics):
            self.events.append(("epoch", epoch, dict(metrics)))

        def on_fit_end(self, result):
            self.events.append(("end", result.epochs_run))

    class MemoryLogger:  # duck-typed: no base class needed
        def __init__(self):
            self.params, self.steps = None, []

        def log_hyperparams(self, config):
            self.params = config.to_dict()

        def log_metrics(self, metrics, step):
            self.steps.append((step, dict(metrics)))

    train, val = xor
    callback, memory = Recorder(), MemoryLogger()
    assert isinstance(memory, Logger) and isinstance(callback, Callback)
    result = _fit(_model(), train, val, epochs=3, callbacks=[callback], loggers=[memory], log_dir=tmp_path)
    assert memory.params == {**TrainConfig().to_dict(), "epochs": 3, "batch_size": 32, "lr": 1e-2,
                             "weight_decay": 0.0, "label_smoothing": 0.0, "patience": None}
    assert [step for step, _ in memory.steps] == [1, 2, 3]
    assert [metrics for _, metrics in memory.steps] == result.history
    expected_keys = {"epoch", "train_loss", "lr", "val_loss", "val_label_accuracy", "val_label_macro_recall",
                     "val_label_macro_f1", "val_accuracy", "score", "time_s"}
    assert all(set(metrics) == expected_keys for _, metrics in memory.steps)
    assert callback.events[0] == ("start", "FusionModel", 3) and callback.events[-1] == ("end", 3)
    assert [(e[1], e[2]) for e in callback.events[1:-1]] == [(h["epoch"], h) for h in result.history]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == ",".join(["epoch", "train_loss", "lr", "val_loss", "val_label_accuracy", "val_label_macro_recall",
                               "val_label_macro_f1", "val_accuracy", "score", "time_s"])
    with pytest.raises(TypeError, match=r"callbacks\[0\]: expected an object with on_fit_start / on_epoch_end"):
        _fit(_model(), train, val, callbacks=[object()])


# ---------------------------------------------------------------------------------------------------- metrics
def test_fit_monitors_the_macro_f1_that_evaluate_reports_with_an_absent_class():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 5, generator=gen), torch.randn(200, 3, generator=gen)
    labels = torch.arange(200) % 4
    train = MultiModalDataset({"a": a[:120], "b": b[:120]}, labels[:120])
    keep = labels[120:] != 3  # class 3 is absent from validation
    val = MultiModalDataset({"a": a[120:][keep], "b": b[120:][keep]}, labels[120:][keep], task_types={"label": 4})
    model = _model({"label": 4})
    with torch.no_grad():  # class 3 is never predicted either: the two conventions for absent classes differ
        model.heads["label"][-1].bias[3] = -100.0
    result = _fit(model, train, val, epochs=1, lr=1e-9, monitor="macro_f1", restore_best=False)
    reported = evaluate(model, val, device="cpu")["label"]
    assert 3 not in predict(model, val, device="cpu")["label"].tolist()
    assert reported["macro_f1"] < 0.75  # an absent class counts as 0: at most 3 of 4 classes
    assert result.history[-1]["val_label_macro_f1"] == pytest.approx(reported["macro_f1"], abs=1e-12)
    assert result.history[-1]["val_label_macro_recall"] == pytest.approx(reported["macro_recall"], abs=1e-12)
    assert result.best_score == pytest.approx(reported["macro_f1"], abs=1e-12)


def test_fit_monitors_the_mse_that_evaluate_reports(xor):
    train, val = _xor_dataset(320, 0, regression=True), _xor_dataset(160, 1, regression=True)
    model = _model({"label": 2, "level": 0})
    result = _fit(model, train, val, epochs=2, monitor="level/mse", restore_best=False)
    assert result.history[-1]["val_level_mse"] == pytest.approx(evaluate(model, val, device="cpu")["level"]["mse"],
                                                                 rel=1e-12)


# ---------------------------------------------------------------------------------------------------- data
class _CountingDataset(MultiModalDataset):
    """Records how many rows every gather reads."""

    gathered: list

    def __getitem__(self, index):
        batch = super().__getitem__(index)
        type(self).gathered.append(len(batch))
        return batch


def test_fit_never_gathers_the_whole_data_set(xor):
    train, val = xor
    _CountingDataset.gathered = []
    counted = _CountingDataset(train.features, train.targets)
    _fit(_model(), counted, val, epochs=2, batch_size=32)
    assert _CountingDataset.gathered and max(_CountingDataset.gathered) <= 64 < len(counted)


def test_training_through_dataloader_workers_gives_the_same_parameters(xor):
    train, val = xor
    in_process, workers = _model(), _model()
    first = _fit(in_process, train, val, epochs=3, seed=5)
    second = _fit(workers, train, val, epochs=3, seed=5, num_workers=2)
    assert all(torch.equal(p, q) for p, q in zip(in_process.parameters(), workers.parameters()))
    assert [h["score"] for h in first.history] == [h["score"] for h in second.history]


@pytest.mark.parametrize("save", ["savez", "savez_compressed"])
def test_training_on_a_memory_mapped_npz_gives_the_same_parameters(xor, tmp_path, save):
    import numpy as np

    train, val = xor
    arrays = {name: x.numpy() for name, x in train.features.items()}
    getattr(np, save)(tmp_path / "train.npz", **arrays, label=train.targets["label"].numpy(),
                      b_mask=np.ones(len(train), dtype=bool))
    mapped = MultiModalDataset.from_npz(tmp_path / "train.npz", mmap=True)
    source = tmp_path / ("train.npz" if save == "savez" else ".train.npz.mmap/a.npy")
    assert _mapped_file(mapped.features["a"]) == str(source)  # the tensor's memory is the file, not a copy
    in_memory, on_disk = _model(), _model()
    _fit(in_memory, train, val, epochs=2, seed=2)
    _fit(on_disk, mapped, val, epochs=2, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(in_memory.parameters(), on_disk.parameters()))
    if save == "savez_compressed":
        assert sorted(p.name for p in (tmp_path / ".train.npz.mmap").glob("*.npy")) == ["a.npy", "b.npy",
                                                                                        "b_mask.npy", "label.npy"]


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory map holds ``tensor``'s data (from /proc/self/maps), or None."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) == 6 else None
    return None


def test_predict_takes_a_test_time_mask_on_a_dataset_and_refuses_an_emptied_sample(xor):
    from mmgraph.data import drop_modalities

    _, val = xor
    model = _model()
    only_a = torch.zeros(len(val), 2, dtype=torch.bool)
    only_a[:, 0] = True
    expected = model.eval()({"a": val.features["a"], "b": val.features["b"]}, only_a)["label"].argmax(-1)
    assert torch.equal(predict(model, val, mask=only_a, device="cpu")["label"], expected)
    assert torch.equal(predict(model, val, mask={"b": torch.zeros(len(val), dtype=torch.bool)},
                               device="cpu")["label"], expected)
    partial = MultiModalDataset(val.features, val.targets, mask={"a": torch.arange(len(val)) % 2 == 0})
    with pytest.raises(ValueError, match=r"mask: with the dataset's own mask, 80 samples have every modality masked "
                                         r"\(first: \[1, 3, 5, 7, 9\]\)"):
        predict(model, partial, mask={"b": torch.zeros(len(val), dtype=torch.bool)}, device="cpu")
    dropped = drop_modalities(partial.mask, 0.5, exact=True, generator=torch.Generator().manual_seed(0))
    assert predict(model, partial, mask=dropped, device="cpu")["label"].shape == (len(val),)


def test_predict_on_a_dataset_reuses_its_checked_tensors_and_rebuilds_another_order(xor, monkeypatch):
    import mmgraph.data.dataset as dataset_module

    _, val = xor
    model = _model()
    calls = []
    check = dataset_module._check_features
    monkeypatch.setattr(dataset_module, "_check_features", lambda *args: calls.append(1) or check(*args))
    expected = predict(model, val, device="cpu", logits=True)["label"]
    no_b = {"b": torch.zeros(len(val), dtype=torch.bool)}
    masked = predict(model, val, mask=no_b, device="cpu", logits=True)["label"]
    assert calls == []  # the data set's own tensors in its own order: checked once, when it was built
    reordered = MultiModalDataset({"b": val.features["b"], "a": val.features["a"]}, val.targets)
    calls.clear()
    assert torch.equal(predict(model, reordered, device="cpu", logits=True)["label"], expected)
    assert torch.equal(predict(model, reordered, mask=no_b, device="cpu", logits=True)["label"], masked)
    assert len(calls) == 2  # another order: prepared into the model's order, a new data set each time
    assert not torch.equal(masked, expected)  # the test-time mask did act


def test_cli_metrics_json_names_the_classes_and_records_the_test_indices(tmp_path):
    import numpy as np

    from mmgraph.data import stratified_split

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(120, 4)).astype(np.float32), rng.normal(size=(120, 3)).astype(np.float32)
    label = np.array(["cat", "dog", "eel"])[(a[:, 0] > 0).astype(int) + (b[:, 0] > 0.5).astype(int)]
    np.savez(tmp_path / "pets.npz", a=a, b=b, label=label)
    report = main(["--data", str(tmp_path / "pets.npz"), "--fusion", "concat", "--dim", "8", "--epochs", "2",
                   "--out", str(tmp_path / "run"), "--quiet"])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["label"]["class_names"] == ["cat", "dog", "eel"]
    assert list(written["test"]["label"])[-2:] == ["confusion_matrix", "class_names"]
    expected = stratified_split(MultiModalDataset({"a": a, "b": b}, label), test_size=0.2, val_size=0.2, seed=0)[2]
    assert written["test_indices"] == expected.tolist() == report["test_indices"]
    assert sum(map(sum, written["test"]["label"]["confusion_matrix"])) == len(expected)
