"""mmgraph.compare and the mmgraph command on a user's own data: tiny data sets, 1-2 epochs."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgraph import FusionModel, MultiModalDataset, compare
from mmgraph.data import available_datasets, drop_modalities, load_dataset, register_dataset
from mmgraph.evaluation import robustness, runner
from mmgraph.evaluation.methods import resolve_method
from mmgraph.evaluation.protocol import Budget, make_protocol, splits
from mmgraph.evaluation.report import to_json
from mmgraph.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _regression_arrays(n: int = 80, seed: int = 0) -> dict[str, np.ndarray]:
    """A user-like regression set: three modalities, ``c`` missing for 20 % of the samples (NaN there)."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(n, 6)), rng.normal(size=(n, 4)), rng.normal(size=(n, 5))
    score = np.clip(1.5 * a[:, 0] - b[:, 1] + 0.5 * c[:, 2] + 0.2 * rng.normal(size=n), -3, 3)
    c_mask = np.ones(n, dtype=bool)
    c_mask[rng.permutation(n)[: n // 5]] = False
    c[~c_mask] = np.nan
    return {"a": a.astype(np.float32), "b": b.astype(np.float32), "c": c.astype(np.float32), "c_mask": c_mask,
            "label": score.astype(np.float32)}


def _classification_dataset(n: int = 80, seed: int = 0) -> MultiModalDataset:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 5)).astype(np.float32) + labels[:, None]
    y = rng.normal(size=(n, 3)).astype(np.float32) - labels[:, None]
    return MultiModalDataset({"x": x, "y": y}, labels, name="mine")


def _strict_json(text: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------- missing modalities
def test_robustness_masks_come_from_drop_modalities_and_never_empty_a_sample(tmp_path, monkeypatch):
    _write_mosi_with_missing_streams(tmp_path / "mosi_raw.pkl")
    data = load_dataset("mosi", data_dir=tmp_path)
    assert (data.mask.sum(1) == 1).sum() >= 10 and (data.mask.sum(1) == 3).sum() >= 5
    calls = []

    def spy(present, rate, exact=False, generator=None):
        calls.append((rate, exact))
        return drop_modalities(present, rate, exact, generator)

    monkeypatch.setattr(robustness, "drop_modalities", spy)
    scored = []

    def score(part: MultiModalDataset) -> float:  # the "score" of a mask: its position among the scored ones
        scored.append(part.mask)
        return float(len(scored))

    rates = (0.0, 0.4, 0.6, 1.0)
    exact, bernoulli = robustness.drop_curves(data, rates, seed=2, score=score)
    assert sorted(calls) == sorted((rate, flag) for rate in rates for flag in (True, False))
    assert scored and all(mask.any(1).all() and not (mask & ~data.mask).any() for mask in scored)
    for rate in rates:  # the curves score exactly drop_modalities' masks, seeded with 1000 + seed
        for curve, flag in ((exact, True), (bernoulli, False)):
            mask = drop_modalities(data.mask, rate, flag, torch.Generator().manual_seed(1002))
            assert curve[str(rate)] == next(i + 1 for i, m in enumerate(scored) if torch.equal(m, mask))
    assert exact["0.0"] == bernoulli["0.0"] == 1.0  # p = 0 scores the data as they are, once
    full = torch.ones(40, 6, dtype=torch.bool)  # fully present data: the published rule, round(p * M) per sample
    assert (drop_modalities(full, 0.4, True, torch.Generator().manual_seed(0)).sum(1) == 4).all()


def _write_mosi_with_missing_streams(path: Path) -> None:
    """A MOSI-layout pickle (MultiBench's affect layout, zero left padding) where many samples lack one or two
    of the three streams (an all-zero sequence)."""
    from test_loaders import _affect_split

    rng = np.random.default_rng(3)
    steps, dims = {"vision": 4, "audio": 4, "text": 4}, {"vision": 3, "audio": 4, "text": 5}
    content = {}
    for split, n in (("train", 30), ("valid", 10), ("test", 24)):
        present = rng.random((n, 3)) < 0.45
        present[np.arange(n), rng.integers(0, 3, size=n)] = True  # at least one stream per sample
        lengths = {m: np.where(present[:, k], rng.integers(1, 5, size=n), 0) for k, m in enumerate(steps)}
        content[split] = _affect_split(rng, n, steps, dims, lengths)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def test_mosi_layout_with_missing_streams_runs_through_the_robustness_sweeps(tmp_path):
    # before: the test-time drop mask and-ed with the data's own mask left samples with no modality
    # -> ValueError: mask: ... samples have every modality masked out
    _write_mosi_with_missing_streams(tmp_path / "mosi_raw.pkl")
    data = load_dataset("mosi", data_dir=tmp_path)
    assert (data.mask.sum(1) == 1).sum() >= 10  # many samples have a single stream
    result = compare("mosi", methods=["late"], seeds=[0], epochs=1, data_dir=tmp_path, progress=False)
    (run,) = result.runs
    assert set(run["robustness"]) == {"0.0", "0.2", "0.4", "0.5", "0.6", "0.8"}
    assert {"acc2", "acc7", "f1", "mae", "corr"} <= set(run["test"]["sentiment"])  # the task named sentiment
    assert "| method | Acc-2 | Acc-7 | F1 | MAE | Corr |" in result.to_markdown()


# ---------------------------------------------------------------------------------------------- training settings
def test_the_comparison_trains_with_budget_train_a_trainconfig_passed_to_fit(monkeypatch):
    assert isinstance(Budget().train, TrainConfig)
    defaults = TrainConfig()
    for name, epochs, patience in (("quick", 25, 6), ("full", 100, 15)):  # the protocol sets epochs, patience only
        assert make_protocol(name).budget.train == TrainConfig(epochs=epochs, patience=patience)
        assert make_protocol(name).budget.train.weight_decay == defaults.weight_decay
    seen = []
    real_fit = runner.fit

    def spy(model, train, val=None, **kwargs):
        seen.append(kwargs)
        return real_fit(model, train, val, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    data = _classification_dataset(n=40)
    train_config = TrainConfig(epochs=1, patience=None, lr=3e-4, batch_size=16, label_smoothing=0.0,
                               optimizer="adamw")
    _, info = runner.train_once(data, data, resolve_method("concat"), Budget(train_config), {"weight_decay": 0.0},
                                seed=7, device=torch.device("cpu"), modality_dropout=0.0)
    (kwargs,) = seen
    assert set(kwargs) == {"config", "device", "progress"}  # every setting through config=
    assert kwargs["config"] == replace(train_config, seed=7, weight_decay=0.0)
    assert info["epochs_run"] == 1 and [h["epoch"] for h in info["history"]] == [1]  # gnn_ablations.py --curves


@pytest.mark.parametrize("name, fusion", [("gnn-temporal", "gnn"), ("gnn-frames-no-temporal", "gnn"),
                                          ("cnn-frames", "cnn"), ("seq2seq-frames", "seq2seq")])
def test_frame_methods_read_the_spectrogram_as_cnn_frames_beside_the_repeated_image(name, fusion):
    """The frame methods (the GNN and its controls) share one encoder set: the spectrogram as the temporal nodes of
    a SpectrogramCNNFramesEncoder, the image's embedding repeated at every frame; the other methods get one
    embedding per modality."""
    from mmgraph.encoders import RepeatSteps, SpectrogramCNNFramesEncoder
    from mmgraph.evaluation.methods import AUDIO_FRAMES, default_methods

    data = MultiModalDataset({"image": torch.rand(4, 1, 28, 28), "audio": torch.rand(4, 1, 112, 112)},
                             {"label": torch.arange(4)})
    method = resolve_method(name)
    assert method.frames and method.fusion == fusion and name in default_methods(data)
    torch.manual_seed(0)
    encoders = runner.audio_visual_encoders(data, method.frames, 8, 0.0)
    assert isinstance(encoders["audio"], SpectrogramCNNFramesEncoder) and isinstance(encoders["image"], RepeatSteps)
    batch = data[torch.arange(4)].inputs
    assert encoders["audio"].frames == AUDIO_FRAMES == 14  # the documented figure is the encoder's
    assert encoders["audio"](batch["audio"]).shape == encoders["image"](batch["image"]).shape == (4, AUDIO_FRAMES, 8)
    assert runner.audio_visual_encoders(data, False, 8, 0.0)["audio"](batch["audio"]).shape == (4, 8)
    with pytest.raises(ValueError, match=f"{name!r} needs image \\+ spectrogram data"):
        runner.train_once(_classification_dataset(n=8), _classification_dataset(n=8), method,
                          Budget(TrainConfig(epochs=1)), {}, seed=0, device=torch.device("cpu"), modality_dropout=0.0)


def test_image_and_spectrogram_data_get_the_cnn_epochs_of_the_budget_everything_else_its_own():
    budget = Budget(TrainConfig(epochs=60, patience=10), image_audio=(5, 3))
    av = MultiModalDataset({"image": torch.zeros(4, 1, 8, 8), "audio": torch.zeros(4, 1, 8, 8)},
                           {"label": torch.tensor([0, 1, 0, 1])})
    assert (runner.budget_for(av, budget).train.epochs, runner.budget_for(av, budget).train.patience) == (5, 3)
    assert runner.budget_for(_classification_dataset(n=8), budget) is budget


# ---------------------------------------------------------------------------------------------- the Python API
def test_compare_on_a_multimodal_dataset_returns_the_ranked_table_and_strict_json(tmp_path):
    result = compare(_classification_dataset(), methods=["gnn", "concat"], seeds=[0], epochs=2, out=tmp_path,
                     plots=False, progress=False)
    table = result.table()
    assert [row["method"] for row in table] in (["gnn", "concat"], ["concat", "gnn"])
    assert table[0]["accuracy"] >= table[1]["accuracy"] and all(0 <= r["accuracy"] <= 1 for r in table)
    markdown = result.to_markdown()
    assert "## mine" in markdown and "| method | accuracy | macro F1 | macro recall |" in markdown
    assert markdown.index(f"| {table[0]['method']} |") < markdown.index(f"| {table[1]['method']} |")
    report = _strict_json((tmp_path / "compare_fusion.json").read_text())
    # the epochs each method trained (early stopping may end it before the budget's 2), in the table and the JSON
    assert "| train s | epochs | infer samples/s |" in markdown
    concat = next(r for r in report["runs"] if r["method"] == "concat")
    assert report["summary"]["mine"]["0.0"]["concat"]["epochs_run"]["mean"] == concat["epochs_run"] in (1, 2)
    concat_row = next(line for line in markdown.splitlines() if line.startswith("| concat |"))
    assert concat_row.split(" | ")[-2] == str(concat["epochs_run"])
    assert report["meta"]["datasets"] == ["mine"] and len(report["runs"]) == 3  # + the GNN with modality dropout
    # a user's data are split by the library: validation carved from the training part, nothing from test
    train, val, test = splits(_classification_dataset(), seed=0)[0]
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 80 and len(test) == 16
    assert len(val) == 13 and not set(val.tolist()) & set(test.tolist())


def test_update_merges_into_a_report_of_mmgraph_0_1(tmp_path):
    """Runs written by 0.1 have no ``score`` and keep confusion matrices in ``test``: an update merges into them
    (it crashed after all its training: ``KeyError: 'score'``, then ``fmean`` over the matrices)."""
    base = _classification_dataset()
    data = MultiModalDataset(base.features, {"label": base.targets["label"], "other": 1 - base.targets["label"]},
                             name="mine")
    compare(data, methods=["concat"], seeds=[0], epochs=1, out=tmp_path, plots=False, progress=False)
    path = tmp_path / "compare_fusion.json"
    report = json.loads(path.read_text())
    for run in report["runs"]:
        del run["score"]
        for task in run["test"].values():
            task["confusion_matrix"] = [[1, 0], [0, 1]]
    path.write_text(json.dumps(report))
    result = compare(data, methods=["sum"], seeds=[0], epochs=1, out=tmp_path, plots=False, progress=False,
                     update=True)
    assert {row["method"] for row in result.table()} == {"concat", "sum"}
    rows = result.summary["mine"]["0.0"]
    assert rows["concat"]["score"]["mean"] == rows["concat"]["accuracy"]["mean"]
    assert set(rows["concat"]["per_task"]["label"]) == {"accuracy", "macro_f1", "macro_recall"}


def test_regression_splits_are_random_and_classification_splits_stratified():
    arrays = _regression_arrays()
    regression = MultiModalDataset({k: arrays[k] for k in "abc"}, arrays["label"], mask={"c": arrays["c_mask"]})
    train, val, test = splits(regression, seed=0)[0]
    assert len(test) == 16 and len(val) == 13 and len(train) == 51
    labels = torch.tensor([0] * 60 + [1] * 20)
    data = MultiModalDataset({"x": torch.randn(80, 2)}, labels)
    _, _, test = splits(data, seed=0)[0]
    assert labels[test].sum() == 4  # 20 % of each class


def test_json_is_strictly_valid_null_never_nan():
    text = to_json({"r": float("nan"), "curve": [1.0, float("inf")], "nested": {"x": -float("inf"), "n": 2}})
    assert _strict_json(text) == {"r": None, "curve": [1.0, None], "nested": {"x": None, "n": 2}}
    assert "NaN" not in text and "Infinity" not in text


def test_a_registered_custom_loader_works_by_name():
    register_dataset("tests-two-views", lambda: _classification_dataset(60, seed=1), overwrite=True)
    assert "tests-two-views" in available_datasets()
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tests-two-views", lambda: None)
    result = compare("tests-two-views", methods=["concat", "unimodal:x"], seeds=[0], epochs=1, progress=False)
    assert {row["method"] for row in result.table()} == {"concat", "unimodal:x"}
    assert result.meta["datasets"] == ["tests-two-views"]
    with pytest.raises(ValueError, match="unknown data set 'nope'"):
        compare("nope")
    with pytest.raises(ValueError, match="unknown method 'transformer-xl'"):
        compare("tests-two-views", methods=["transformer-xl"])


# ---------------------------------------------------------------------------------------------- the mmgraph command
def test_mmgraph_compare_on_a_user_regression_npz_prints_mae_corr_r2_and_sentiment_scores(tmp_path, capsys):
    from mmgraph.cli import main

    path = tmp_path / "user.npz"
    np.savez(path, **_regression_arrays())
    assert main(["compare", "--data", str(path), "--methods", "gnn", "concat", "tfn", "late", "--epochs", "2",
                 "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "| method | MAE | Corr | R² | Δ vs best |" in printed and "ranked by test R²" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "±" in line]
    assert {row.split(" | ")[0][2:] for row in rows[:4]} == {"gnn", "concat", "tfn", "late"}
    report = _strict_json((tmp_path / "out" / "compare_fusion.json").read_text())
    r2 = [report["summary"]["user"]["0.0"][m]["r2"]["mean"] for m in ("gnn", "concat", "tfn", "late")]
    ranked = [row.split(" | ")[0][2:] for row in rows[:4]]
    assert [report["summary"]["user"]["0.0"][m]["r2"]["mean"] for m in ranked] == sorted(r2, reverse=True)

    assert main(["compare", "--data", str(path), "--methods", "concat", "--epochs", "1", "--sentiment",
                 "label"]) == 0
    assert "| method | Acc-2 | Acc-7 | F1 | MAE | Corr | Δ vs best |" in capsys.readouterr().out


@pytest.mark.parametrize("flags, words", [
    (["--data", "missing.npz"], "no such file"),
    (["--dataset", "imagenet"], "unknown data set"),
    (["--dataset", "handwritten", "--methods", "transformer-xl"], "unknown method"),
    (["--dataset", "handwritten", "--sentiment", "label"], "not regression targets"),
])
def test_mmgraph_compare_bad_input_is_a_one_line_usage_error(flags, words, capsys):
    from mmgraph.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    *usage, last = error.strip().splitlines()  # the usage, then one error line
    assert usage[0].startswith("usage: mmgraph compare") and last.startswith("mmgraph compare: error: ")
    assert words in last


def test_mmgraph_predict_writes_one_column_per_task_with_class_names(tmp_path):
    from mmgraph.cli import main
    from mmgraph.models import FusionModel
    from mmgraph.training import fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)).astype(np.float32), rng.normal(size=(60, 3)).astype(np.float32)
    kind = np.where(x[:, 0] > 0, "cat", "dog")
    data = MultiModalDataset({"x": x, "y": y}, {"kind": kind, "size": y[:, 0] * 2})
    model = FusionModel.from_dataset(data, "concat", dim=8)
    fit(model, data, epochs=1, device="cpu", progress=False)
    model.save(tmp_path / "model.mmgraph")
    np.savez(tmp_path / "new.npz", x=x[:5], y=y[:5], y_mask=np.array([True, False, True, True, True]),
             kind=kind[:5])
    main(["predict", str(tmp_path / "model.mmgraph"), "--data", str(tmp_path / "new.npz"), "--out",
          str(tmp_path / "predictions.csv"), "--proba"])
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["kind", "size", "kind:cat", "kind:dog"] and len(rows) == 6
    assert {row[0] for row in rows[1:]} <= {"cat", "dog"}
    for row in rows[1:]:
        assert math.isfinite(float(row[1])) and float(row[2]) + float(row[3]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "model.mmgraph"), "--data", str(tmp_path / "none.npz"), "--out", "p.csv"])
    assert exit_info.value.code == 2
    damaged = tmp_path / "damaged.npz"  # the reader of `train --data`: a damaged file is one line, not a traceback
    damaged.write_bytes((tmp_path / "new.npz").read_bytes()[:200])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tmp_path / "model.mmgraph"), "--data", str(damaged), "--out", "p.csv"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_python_m_mmgraph_lists_the_subcommands_and_train_still_works_under_it(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "mmgraph", "--help"], capture_output=True, text=True,
                               cwd=tmp_path, timeout=120)
    assert completed.returncode == 0 and all(c in completed.stdout for c in ("train", "compare", "predict"))
    completed = subprocess.run([sys.executable, "-m", "mmgraph", "train", "--dataset", "synthetic-interaction",
                                "--samples", "100", "--epochs", "1", "--fusion", "concat", "--quiet", "--out",
                                str(tmp_path / "run")], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dataset"] == "synthetic-interaction"


def test_each_subcommand_names_itself_in_help_and_errors(capsys):
    from mmgraph.cli import main as cli_main

    for command in ("train", "compare", "predict"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        assert capsys.readouterr().out.startswith(f"usage: mmgraph {command} ")
    with pytest.raises(SystemExit):
        cli_main(["train", "--epochs", "0"])
    assert "mmgraph train: error: argument --epochs" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                    reason="av-digits needs the optional espeakng-loader package (mmgraph[data])")
def test_the_training_command_loads_every_registered_data_set_av_digits_included():
    from mmgraph.cli import train as train_cli

    parser = train_cli._parser()
    assert parser.parse_args(["--dataset", "av-digits"]).dataset == "av-digits"
    data = train_cli.load_dataset("av-digits")  # the registry's (published parts concatenated)
    assert data.modalities == ["image", "audio"] and len(data) == 2560
    register_dataset("tests-for-train", lambda: _classification_dataset(40), overwrite=True)
    assert train_cli._parser().parse_args(["--dataset", "tests-for-train"]).dataset == "tests-for-train"


@pytest.mark.parametrize("size", [28, 84, 112])
def test_the_comparison_s_image_and_spectrogram_encoders_take_from_dataset_s_stem(size):
    """One stem rule (mmgraph.encoders.cnn.default_stem) for the comparison's CNNs and the model factory's."""
    from mmgraph.encoders.cnn import default_stem

    data = MultiModalDataset({"image": torch.rand(2, 1, 28, 28), "audio": torch.rand(2, 1, size, size)},
                             {"label": torch.arange(2)})
    specs = FusionModel.from_dataset(data, "concat").config()["encoders"]
    for name, encoder in runner.audio_visual_encoders(data, False, 8, 0.0).items():
        assert encoder.stem == specs[name]["stem"] == default_stem(*data.input_shapes[name][1:])
    assert [default_stem(s, s) for s in (27, 55, 56, 111, 112, 224)] == [1, 1, 2, 2, 4, 8]
    with pytest.raises(ValueError, match="height"):
        default_stem(0, 28)
