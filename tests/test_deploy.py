"""Shipping a trained model: name-matched inputs and masks, self-describing model files, prediction on raw arrays,
string labels, explanations, export and compression -- tested through the public API, the way a user works."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmgraph import FusionModel, MultiModalDataset, evaluate, fit, predict
from mmgraph.data import load_handwritten, standardization_stats, stratified_split
from mmgraph.io import CorruptFileError, IncompatibleFileError

ROOT = Path(__file__).resolve().parents[1]


def _toy(n: int = 60, seed: int = 0, labels=None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Two modalities whose sum of first features decides the class; ``b`` missing for a third of the samples."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 3)).astype(np.float32)
    y = (a[:, 0] + b[:, 0] > 0).astype(np.int64)
    present = np.ones((n, 2), dtype=bool)
    present[: n // 3, 1] = False
    return {"a": a, "b": b}, (y if labels is None else np.asarray(labels)[y]), present


def _trained(dataset: MultiModalDataset, fusion: str = "gnn", epochs: int = 5, **kwargs) -> FusionModel:
    model = FusionModel.from_dataset(dataset, fusion, dim=8, seed=0, **kwargs)
    fit(model, dataset, epochs=epochs, batch_size=16, device="cpu", progress=False)
    return model.eval()


# ---------------------------------------------------------------------------------------------------- names
def test_same_data_in_two_key_orders_gives_identical_predictions():
    features, y, present = _toy()
    forward = MultiModalDataset(features, y, mask=present)
    backward = MultiModalDataset({"b": features["b"], "a": features["a"]}, y, mask=present[:, ::-1].copy())
    model = _trained(forward)
    expected = predict(model, forward, logits=True)["label"]
    assert torch.equal(predict(model, backward, logits=True)["label"], expected)
    raw = predict(model, {"b": features["b"], "a": features["a"]}, mask={"a": present[:, 0], "b": present[:, 1]},
                  logits=True)["label"]
    assert torch.equal(raw, expected)


def test_positional_mask_with_inputs_in_another_order_is_matched_by_name_or_refused():
    features, y, present = _toy()
    model = _trained(MultiModalDataset(features, y, mask=present))
    reordered = {"b": torch.from_numpy(features["b"]), "a": torch.from_numpy(features["a"])}
    mask = torch.from_numpy(present)  # columns in the model's order a, b
    with pytest.raises(ValueError, match=r"\['a', 'b'\].*\['b', 'a'\]"):
        model(reordered, mask)
    by_name = model(reordered, {"a": mask[:, 0], "b": mask[:, 1]})["label"]
    in_order = model({"a": reordered["a"], "b": reordered["b"]}, mask)["label"]
    assert torch.equal(by_name, in_order)
    # an array mask next to a dict of arrays follows the dict's key order
    via_predict = predict(model, {"b": features["b"], "a": features["a"]}, mask=present[:, ::-1].copy(),
                          logits=True)["label"]
    assert torch.equal(via_predict, in_order)


def test_nan_placeholders_at_masked_entries_are_accepted_and_change_nothing():
    features, y, present = _toy()
    model = _trained(MultiModalDataset(features, y, mask=present))
    with_nan = {name: x.copy() for name, x in features.items()}
    with_nan["b"][~present[:, 1]] = np.nan
    clean = predict(model, features, mask=present, logits=True)["label"]
    assert torch.equal(predict(model, with_nan, mask=present, logits=True)["label"], clean)
    with pytest.raises(ValueError, match=r"features\['b'\].*present"):
        predict(model, with_nan)  # NaN where b is present


# ---------------------------------------------------------------------------------------------------- files
def test_saved_model_predicts_identical_labels_in_a_fresh_process_without_the_data(tmp_path):
    data = load_handwritten(views=["fou", "kar", "mor"])
    train_idx, _, test_idx = stratified_split(data, test_size=0.2, seed=0)
    train, test = data.subset(train_idx), data.subset(test_idx)  # raw, unstandardised features
    model = FusionModel.from_dataset(train, "gnn", dim=16, standardize=True, seed=0)
    fit(model, train, epochs=3, device="cpu", progress=False)
    expected = predict(model, test)["label"].numpy()
    path = model.save(tmp_path / "digits.mmgraph")
    np.savez(tmp_path / "raw.npz", **{name: x.numpy() for name, x in test.features.items()})
    script = (
        "import json, numpy as np\n"
        "from mmgraph import FusionModel, predict\n"
        f"model = FusionModel.load({str(path)!r})\n"
        f"raw = dict(np.load({str(tmp_path / 'raw.npz')!r}))\n"
        "raw = {name: raw[name] for name in reversed(list(raw))}  # any key order\n"
        "print(json.dumps(predict(model, raw)['label'].tolist()))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected.tolist()
    assert (expected == test.labels().numpy()).mean() > 0.5  # it learned something in 3 epochs


def test_model_file_holds_config_statistics_and_versions(tmp_path):
    features, y, present = _toy()
    train = MultiModalDataset(features, y, mask=present)
    model = FusionModel.from_dataset(train, "gnn", dim=8, standardize=True, seed=0,
                                     fusion_kwargs={"conv": "gcn", "layers": 1}, modality_dropout=0.1)
    loaded = FusionModel.load(model.save(tmp_path / "m.pt"))
    assert loaded.config() == model.config() and loaded.config()["fusion_kwargs"] == {"conv": "gcn", "layers": 1}
    stats = standardization_stats(train)
    assert torch.equal(loaded.scalers["a"].mean, stats["a"][0]) and torch.equal(loaded.scalers["b"].std, stats["b"][1])
    assert set(loaded.versions) == {"mmgraph", "torch", "safetensors"} and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("bad", [np.zeros((5, 6), np.float32), np.zeros((5, 4, 1), np.float32)])
def test_standardised_model_refuses_arrays_of_another_shape_by_name(tmp_path, bad):
    # the statistics would broadcast into an unhelpful RuntimeError (or a wrong layout) deep inside the model
    features, y, _ = _toy()
    model = FusionModel.load(FusionModel.from_dataset(MultiModalDataset(features, y), "gnn", dim=8,
                                                      standardize=True).save(tmp_path / "m.pt"))
    with pytest.raises(ValueError, match=r"inputs\['a'\]: expected shape \[B, 4\].*got \(5, "):
        predict(model, {"b": features["b"][:5], "a": bad})


def test_edge_pruning_survives_save_and_load(tmp_path):
    # a setting that changes predictions must not be lost on the way through the file
    encoders = {"a": {"name": "mlp", "in_dim": 3}, "b": {"name": "mlp", "in_dim": 5}}  # step by step
    model = FusionModel(encoders, "gnn", {"label": 2}, dim=8,
                        fusion_kwargs={"heads": 2, "layers": 3, "temporal_window": 2, "edge_pruning": 0.5}).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {"a": torch.randn(4, 9, 3, generator=gen), "b": torch.randn(4, 9, 5, generator=gen)}
    loaded = FusionModel.load(model.save(tmp_path / "pruned.pt"))
    assert loaded.fusion.gnn.edge_pruning == 0.5
    torch.testing.assert_close(loaded(inputs)["label"], model(inputs)["label"])
    model.fusion.gnn.edge_pruning = 0.0
    assert not torch.allclose(loaded(inputs)["label"], model(inputs)["label"])


def test_byte_flipped_or_truncated_model_file_is_refused_with_its_path(tmp_path):
    features, y, _ = _toy()
    path = FusionModel.from_dataset(MultiModalDataset(features, y), "gnn", dim=8).save(tmp_path / "m.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=f"{flipped}.*corrupt"):
        FusionModel.load(flipped)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=f"{truncated}.*corrupt"):
        FusionModel.load(truncated)


def _small_model(**kwargs) -> FusionModel:
    encoders = {"a": {"name": "mlp", "in_dim": 4}, "b": {"name": "mlp", "in_dim": 3}}
    stats = {"a": (torch.arange(4.0).view(1, 4), torch.full((1, 4), 2.0))}
    return FusionModel(encoders, "gnn", {"label": 2}, dim=8, input_stats=stats, fusion_kwargs={"layers": 1},
                       class_names={"label": ["no", "yes"]}, **kwargs).eval()


def test_model_file_is_safetensors_read_without_pickle(tmp_path, monkeypatch):
    from safetensors import safe_open

    from mmgraph.models.serialization import content_digest

    model = _small_model()
    path = model.save(tmp_path / "m.mmgraph")
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    assert metadata["format"] == "mmgraph.model" and metadata["format_version"] == "2"
    assert json.loads(metadata["config"]) == model.config()
    assert json.loads(metadata["class_names"]) == {"label": ["no", "yes"]}
    assert json.loads(metadata["preprocessing"]) == {"a": {"kind": "standardize", "mean": "scalers.a.mean",
                                                           "std": "scalers.a.std"}}
    assert set(json.loads(metadata["versions"])) == {"mmgraph", "torch", "safetensors"}
    assert metadata["sha256"] == content_digest(tensors, metadata)
    assert tensors.keys() == model.state_dict().keys()
    assert all(torch.equal(tensors[key], value) for key, value in model.state_dict().items())

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called on a safetensors model file")

    monkeypatch.setattr(torch, "load", refuse)
    inputs = {"a": torch.randn(5, 4), "b": torch.randn(5, 3)}
    assert torch.equal(FusionModel.load(path)(inputs)["label"], model(inputs)["label"])


def test_model_file_of_format_1_loads_and_predicts_the_same():
    # tests/fixtures/format1_gnn.* were written by mmgraph 0.1.0 (the torch envelope of mmgraph.io) with the
    # inputs and logits of the model that wrote it
    recorded = json.loads((ROOT / "tests/fixtures/format1_gnn.json").read_text())
    model = FusionModel.load(ROOT / "tests/fixtures/format1_gnn.mmgraph")
    inputs = {name: torch.tensor(values) for name, values in recorded["inputs"].items()}
    assert torch.equal(model(inputs)["label"], torch.tensor(recorded["logits"]))
    assert list(predict(model, {k: v.numpy() for k, v in inputs.items()})["label"]) == [
        ["cat", "dog", "owl"][i] for i in torch.tensor(recorded["logits"]).argmax(1).tolist()]


@pytest.mark.parametrize("seed", range(16))
def test_bit_flipped_safetensors_model_file_is_refused_or_unchanged(tmp_path, seed):
    model = _small_model()
    path = model.save(tmp_path / "m.mmgraph")
    data = bytearray(path.read_bytes())
    generator = torch.Generator().manual_seed(seed)
    # half the flips in the header (config, shapes, offsets), half in the tensor bytes
    header = int.from_bytes(data[:8], "little") + 8
    low, high = (0, header) if seed % 2 else (header, len(data))
    position = low + int(torch.randint(high - low, (1,), generator=generator))
    data[position] ^= 1 << int(torch.randint(8, (1,), generator=generator))
    path.write_bytes(bytes(data))
    try:
        loaded = FusionModel.load(path)
    except CorruptFileError as error:
        assert str(path) in str(error) and "corrupt" in str(error)
        return
    # a flip that changes nothing read (header padding) must leave the content intact
    assert loaded.config() == model.config()
    assert all(torch.equal(loaded.state_dict()[key], value) for key, value in model.state_dict().items())


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, -1])
def test_truncated_safetensors_model_file_is_refused_with_its_path(tmp_path, keep):
    path = _small_model().save(tmp_path / "m.mmgraph")
    data = path.read_bytes()
    cut = keep if isinstance(keep, int) and keep >= 0 else (int(len(data) * keep) if keep > 0 else len(data) - 1)
    path.write_bytes(data[:cut])
    with pytest.raises(CorruptFileError, match="corrupt") as info:
        FusionModel.load(path)
    assert str(path) in str(info.value)


def _rewrite_metadata(path: Path, **changes: str) -> None:
    """Rewrite a model file's metadata (without updating its checksum)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as handle:
        metadata = {**handle.metadata(), **changes}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata)


def _resign(path):
    """Recompute the file's checksum, as the mmgraph that wrote its metadata would have."""
    from safetensors import safe_open

    from mmgraph.models.serialization import content_digest

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    _rewrite_metadata(path, sha256=content_digest(tensors, metadata))


def test_a_file_written_before_the_unimodal_heads_loads_without_them(tmp_path):
    model = _small_model(unimodal_weight=0)  # what such a file holds: no heads, no key in its config
    path = model.save(tmp_path / "m.mmgraph")
    config = model.config()
    del config["unimodal_weight"]
    _rewrite_metadata(path, config=json.dumps(config))
    _resign(path)
    loaded = FusionModel.load(path)
    assert loaded.unimodal_weight == 0.0 and loaded.unimodal_heads is None
    x = {"a": torch.randn(5, 4), "b": torch.randn(5, 3)}
    torch.testing.assert_close(loaded(x)["label"], model(x)["label"])
    # a file of this release keeps its heads (state dict and config agree)
    with_heads = FusionModel.load(_small_model().save(tmp_path / "heads.mmgraph"))
    assert with_heads.unimodal_weight == 1.0 and set(with_heads.unimodal_heads["label"]) == {"a", "b"}


def test_model_file_of_a_newer_format_says_upgrade(tmp_path):
    path = _small_model().save(tmp_path / "m.mmgraph")
    _rewrite_metadata(path, format_version="3")
    # the version is covered by the checksum: changed without it, the file is corrupt (a flipped bit, not a newer
    # mmgraph), and the message still names the format it claims
    with pytest.raises(CorruptFileError, match=r"m.mmgraph: corrupt file: the SHA-256 .* claims model format 3"):
        FusionModel.load(path)
    _resign(path)  # as a newer mmgraph writes it
    with pytest.raises(IncompatibleFileError, match=r"m.mmgraph: written by a newer mmgraph \(model format 3; .*"
                                                    r"upgrade mmgraph"):
        FusionModel.load(path)
    from mmgraph.io import save_file

    legacy = tmp_path / "legacy.mmgraph"
    save_file(legacy, {"format": 7, "config": {}, "state_dict": {}}, kind="model")
    with pytest.raises(IncompatibleFileError, match=r"legacy.mmgraph: written by a newer mmgraph \(model format 7"):
        FusionModel.load(legacy)


def test_model_file_with_an_unknown_config_key_names_the_key_and_the_file(tmp_path):
    model = _small_model()
    model._config["future_option"] = True  # as a newer mmgraph that grew a constructor argument would write
    path = model.save(tmp_path / "m.mmgraph")
    with pytest.raises(IncompatibleFileError, match=r"m.mmgraph: config keys \['future_option'\] are not known "
                                                    r"to this mmgraph .*upgrade mmgraph"):
        FusionModel.load(path)


def test_model_file_whose_config_and_weights_disagree_gives_a_settings_diff(tmp_path):
    model = _small_model()
    model._config["encoders"]["a"]["in_dim"] = 6  # a writer that recorded another input width than it trained
    path = model.save(tmp_path / "m.mmgraph")
    with pytest.raises(IncompatibleFileError) as info:
        FusionModel.load(path)
    message = str(info.value)
    assert str(path) in message and "config and weights disagree" in message
    assert "encoders.a.net.0.weight: file [8, 4] float32, config builds [8, 6] float32" in message
    assert "Error(s) in loading state_dict" not in message


def test_seed_makes_initialisation_reproducible_and_models_of_built_modules_cannot_be_saved(tmp_path):
    features, y, _ = _toy()
    dataset = MultiModalDataset(features, y)
    first, second = (FusionModel.from_dataset(dataset, "gnn", dim=8, seed=3) for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    handmade = FusionModel({"a": nn.Linear(4, 8), "b": nn.Linear(3, 8)}, "gnn", {"label": 2}, dim=8)
    with pytest.raises(TypeError, match="encoders.*built modules"):
        handmade.save(tmp_path / "m.pt")


# ---------------------------------------------------------------------------------------------------- labels
def test_string_labels_round_trip_through_fit_save_load_and_predict(tmp_path):
    features, labels, present = _toy(labels=np.array(["no", "yes"]))
    train = MultiModalDataset(features, list(labels), mask=present)  # a plain list of str
    assert train.class_names == {"label": ["no", "yes"]} and train.string_labels == ["label"]
    model = _trained(train, epochs=30)
    loaded = FusionModel.load(model.save(tmp_path / "m.pt"))
    predicted = predict(loaded, features, mask=present)["label"]
    assert isinstance(predicted, np.ndarray) and set(predicted.tolist()) <= {"no", "yes"}
    assert (predicted == labels).mean() > 0.8
    # a test set holding one class only is matched to the model's classes by name, not by position
    only_yes = labels == "yes"
    test = MultiModalDataset({k: v[only_yes] for k, v in features.items()}, labels[only_yes],
                             mask=present[only_yes])
    assert test.class_names == {"label": ["yes"]}
    accuracy = evaluate(loaded, test)["label"]["accuracy"]
    assert accuracy == pytest.approx((predict(loaded, test)["label"] == "yes").mean())


def test_string_labels_follow_given_class_names_and_unknown_labels_are_named():
    features, labels, _ = _toy(labels=np.array(["cat", "ant"]))
    dataset = MultiModalDataset(features, labels, class_names={"label": ["cat", "ant"]})
    assert torch.equal(dataset.labels(), torch.from_numpy((labels == "ant").astype(np.int64)))
    with pytest.raises(ValueError, match=r"labels \['cat'\] are not in class_names"):
        MultiModalDataset(features, labels, class_names={"label": ["ant", "bee"]})


def test_standardize_statistics_ignore_nan_placeholders_of_masked_entries():
    features, y, present = _toy()
    with_nan = {name: x.copy() for name, x in features.items()}
    with_nan["b"][~present[:, 1]] = np.nan
    clean = standardization_stats(MultiModalDataset(features, y, mask=present))
    placeholders = standardization_stats(MultiModalDataset(with_nan, y, mask=present))
    assert all(torch.equal(clean[m][i], placeholders[m][i]) for m in clean for i in (0, 1))


def test_one_sample_predict_gives_the_direct_calls_outputs_with_or_without_a_mask(tmp_path):
    # predict's fast path (no .to()/.eval() walk on a model already there, no mask when nothing is masked) must not
    # change a result or skip the mask
    features, y, _ = _toy()
    built = FusionModel.from_dataset(MultiModalDataset(features, y), "gnn", dim=8, seed=0, standardize=True)
    model = FusionModel.load(built.save(tmp_path / "m.mmgraph"))
    one = {"b": features["b"][:1], "a": features["a"][:1]}
    tensors = {name: torch.from_numpy(x) for name, x in one.items()}
    with torch.no_grad():
        direct = model(tensors)["label"]
        direct_masked = model(tensors, {"b": torch.tensor([False])})["label"]
    assert torch.allclose(predict(model, one, logits=True)["label"], direct, atol=1e-6, rtol=0)
    masked = predict(model, one, logits=True, mask={"b": np.array([False])})["label"]
    assert torch.equal(masked, direct_masked) and not torch.allclose(masked, direct)
    model.train()
    assert torch.allclose(predict(model, one, logits=True)["label"], direct, atol=1e-6, rtol=0)  # eval mode
    assert model.training  # and put back
    with pytest.raises(ValueError, match=r"inputs\['a'\]: expected shape \[B, 4\]"):
        predict(model, {"a": features["a"][:1, :3], "b": one["b"]})


def test_predict_gives_probabilities_logits_and_regression_values():
    features, y, _ = _toy()
    target = features["a"][:, 1] * 2.0
    dataset = MultiModalDataset(features, {"label": y, "score": target})
    model = _trained(dataset)
    logits = predict(model, features, logits=True)
    proba = predict(model, features, proba=True)
    assert logits["label"].shape == (60, 2) and logits["score"].shape == (60, 1)
    assert torch.allclose(proba["label"], logits["label"].softmax(-1)) and torch.equal(proba["score"],
                                                                                       logits["score"][:, 0])
    assert torch.equal(predict(model, features)["label"], logits["label"].argmax(-1))
    with pytest.raises(ValueError, match="logits, proba"):
        predict(model, features, logits=True, proba=True)


def test_float_targets_with_integral_values_warn_and_become_regression():
    features, y, _ = _toy()
    with pytest.warns(UserWarning, match="treated as regression.*classification"):
        dataset = MultiModalDataset(features, y.astype(np.float32))
    assert dataset.tasks == {"label": 0}
    assert MultiModalDataset(features, y.astype(np.float32), task_types={"label": "classification"}).tasks == {
        "label": 2}


def test_dataset_without_targets_predicts_but_cannot_build_or_evaluate_a_model():
    features, y, _ = _toy()
    unlabelled = MultiModalDataset(features, None)
    assert unlabelled.tasks == {} and unlabelled[torch.arange(3)].targets == {}
    model = _trained(MultiModalDataset(features, y))
    assert torch.equal(predict(model, unlabelled)["label"], predict(model, features)["label"])
    with pytest.raises(ValueError, match="no targets"):
        FusionModel.from_dataset(unlabelled, "gnn")
    with pytest.raises(ValueError, match=r"no targets for the model's tasks \['label'\].*\{'label': labels\}"):
        evaluate(model, unlabelled)


# ---------------------------------------------------------------------------------------------------- errors
def test_errors_without_guidance_now_say_what_to_do():
    features, y, _ = _toy()
    dataset = MultiModalDataset(features, y)
    model = _trained(dataset, epochs=1)
    with pytest.raises(ValueError, match=r"tasks \['label'\]; the dataset has tasks \['intent'\]"):
        evaluate(model, MultiModalDataset(features, {"intent": y}))
    batch = dataset[torch.arange(5)]
    assert torch.equal(predict(model, batch.inputs)["label"], predict(model, dataset)["label"][:5])
    with pytest.raises(TypeError, match=r"predict\(model, batch.inputs, mask=batch.named_mask\)"):
        predict(model, batch)
    tensors = torch.utils.data.TensorDataset(torch.from_numpy(features["a"]), torch.from_numpy(y))
    with pytest.raises(TypeError, match=r"MultiModalDataset\(\{modality: X"):
        fit(model, tensors, epochs=1)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        predict(model, {"a": features["a"]})


# ---------------------------------------------------------------------------------------------------- explain
def test_explain_names_modalities_and_plot_explanation_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from mmgraph.viz import plot_explanation

    features, y, present = _toy()
    model = _trained(MultiModalDataset(features, y, mask=present))
    inputs = {name: torch.from_numpy(x[:4]) for name, x in features.items()}
    explanation = model.explain(inputs, {"b": torch.from_numpy(present[:4, 1])})
    assert explanation["node_modality"] == ["a", "b"] and list(explanation["modality_weights"]) == ["a", "b"]
    assert torch.equal(explanation["modality_weights"]["b"], torch.zeros(4))  # b is missing in these samples
    assert torch.allclose(explanation["modality_weights"]["a"], torch.ones(4))
    figure = plot_explanation(model.explain(inputs), sample=1)
    figure.savefig(tmp_path / "explain.png")
    assert (tmp_path / "explain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = [text.get_text().split("\n")[0] for text in figure.axes[0].texts]
    assert sorted(texts) == ["a", "b"]
    # the default concat readout gives each modality its own slot: the title says how to read the node sizes
    assert explanation["readout_kind"] == "concat"
    assert "weight within its modality's readout slot" in figure.axes[0].get_title()
    other = plot_explanation({**explanation, "readout_kind": "attention"}, sample=1)
    assert "node size = readout weight," in other.axes[0].get_title()
    with pytest.raises(ValueError, match="sample"):
        plot_explanation(explanation, sample=4)
    with pytest.raises(TypeError, match="'gnn' fusion"):
        _trained(MultiModalDataset(features, y), fusion="concat", epochs=1).explain(inputs)


def test_explain_takes_raw_arrays_like_predict_and_messages_never_dump_an_array():
    """docs/deploy.md's explain snippet with numpy (issue 18): the same explanation as tensors, and forward on an
    ndarray names its type, dtype and shape, not its values."""
    features, y, present = _toy()
    model = _trained(MultiModalDataset(features, y, mask=present), epochs=1)
    arrays = {name: x[:4] for name, x in features.items()}
    tensors = {name: torch.from_numpy(x) for name, x in arrays.items()}
    from_arrays = model.explain(arrays, {"b": present[:4, 1]})
    from_tensors = model.explain(tensors, {"b": torch.from_numpy(present[:4, 1])})
    for name in ("a", "b"):
        assert torch.equal(from_arrays["modality_weights"][name], from_tensors["modality_weights"][name])
    with pytest.raises(TypeError) as error:
        model(arrays)
    message = str(error.value)
    assert "ndarray of dtype float32 and shape (4, " in message and "torch.as_tensor" in message
    assert "[[" not in message and len(message) < 200, message


# ---------------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def exported():
    features, y, present = _toy(n=80)
    model = _trained(MultiModalDataset(features, y), epochs=3, standardize=True)
    inputs = {name: torch.from_numpy(x[:16]) for name, x in features.items()}
    return model, inputs


@pytest.mark.dynamo
def test_torch_export_matches_eager_with_a_dynamic_batch(exported):
    model, inputs = exported
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (inputs,), dynamic_shapes=({"a": {0: batch}, "b": {0: batch}},))
    smaller = {name: x[:5] for name, x in inputs.items()}
    for data in (inputs, smaller):
        assert torch.allclose(program.module()(data)["label"], model(data)["label"], atol=1e-5, rtol=0)


@pytest.mark.dynamo
def test_onnx_runtime_matches_eager_with_outputs_named_by_task_and_class_names_in_the_metadata(exported, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="optional extra 'export' (onnx, onnxscript, onnxruntime)")
    pytest.importorskip("onnxscript")
    from mmgraph.models import export_onnx

    model, inputs = exported
    model.class_names = {"label": ["low", "high"]}  # as a model trained on named classes carries them
    path = export_onnx(model, tmp_path / "model.onnx", {"b": inputs["b"], "a": inputs["a"]})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_inputs()] == ["inputs_a", "inputs_b"]
    assert [node.name for node in session.get_outputs()] == ["label"]  # was "linear_11"
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["mmgraph.class_names"]) == {"label": ["low", "high"]}
    assert json.loads(metadata["mmgraph.tasks"]) == {"label": 2}
    assert json.loads(metadata["mmgraph.modalities"]) == ["a", "b"]
    for data in (inputs, {name: x[:5] for name, x in inputs.items()}):
        (logits,) = session.run(["label"], {f"inputs_{m}": data[m].numpy() for m in ("a", "b")})
        assert np.allclose(logits, model(data)["label"].detach().numpy(), atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning",
                            "ignore:torch.quantize_per_tensor:UserWarning")
def test_int8_dynamic_quantisation_and_magnitude_pruning_keep_the_outputs_close(exported):
    import copy

    from torch.nn.utils import prune

    model, inputs = exported
    eager = model(inputs)["label"]
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in quantized.modules())
    assert (quantized(inputs)["label"] - eager).abs().max() < 0.1
    pruned = copy.deepcopy(model)
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    for linear in linears:
        prune.l1_unstructured(linear, "weight", amount=0.5)
        prune.remove(linear, "weight")
    zeros = sum(int((m.weight == 0).sum()) for m in linears) / sum(m.weight.numel() for m in linears)
    assert zeros == pytest.approx(0.5, abs=0.02)
    assert not torch.equal(pruned(inputs)["label"], eager)  # the pruned weights are the ones the model uses


def test_int8_model_saves_loads_and_predicts_with_int8_weights_in_the_file(exported, tmp_path):
    from safetensors import safe_open

    from mmgraph.models import Int8Linear, quantize_int8

    model, inputs = exported
    quantized = quantize_int8(model)
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert any(isinstance(m, nn.Linear) for m in model.modules())  # a copy: the float model is untouched
    eager = model(inputs)["label"]
    assert 0 < (quantized(inputs)["label"] - eager).abs().max() < 0.05
    path = quantized.save(tmp_path / "int8.mmgraph")
    with safe_open(str(path), "pt") as handle:
        layers = json.loads(handle.metadata()["quantization"])["int8_weight_per_channel"]
        assert layers and all(handle.get_tensor(f"{layer}.weight").dtype == torch.int8 for layer in layers)
    loaded = FusionModel.load(path)
    assert sorted(name for name, m in loaded.named_modules() if isinstance(m, Int8Linear)) == sorted(layers)
    assert torch.equal(loaded(inputs)["label"], quantized(inputs)["label"])
    assert np.array_equal(predict(loaded, inputs)["label"], predict(quantized, inputs)["label"])


@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning",
                            "ignore:torch.quantize_per_tensor:UserWarning")
def test_model_quantised_by_torch_ao_quantize_dynamic_saves_and_loads(exported, tmp_path):
    # .save() used to crash: AttributeError: 'torch.dtype' object has no attribute 'detach'
    import copy

    model, inputs = exported
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    loaded = FusionModel.load(dynamic.save(tmp_path / "dynamic.mmgraph"))
    layers = [(name, m) for name, m in dynamic.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert layers
    for name, module in layers:  # the same int8 weights, as weight-only int8 layers
        weight = module.weight()
        assert torch.equal(loaded.get_submodule(name).weight, weight.int_repr())
        assert torch.allclose(loaded.get_submodule(name).dequantized(), weight.dequantize())
    # float activations instead of dynamically quantised ones: close to both the int8 and the float model
    assert (loaded(inputs)["label"] - dynamic(inputs)["label"]).abs().max() < 0.05
    assert (loaded(inputs)["label"] - model(inputs)["label"]).abs().max() < 0.05


def test_cli_explain_writes_one_png_per_test_sample(tmp_path):
    from mmgraph.train import main

    report = main(["--dataset", "synthetic-interaction", "--fusion", "gnn", "--epochs", "1", "--samples", "200",
                   "--dim", "8", "--out", str(tmp_path), "--quiet", "--explain", "3"])
    paths = [Path(path) for path in report["explanations"]]
    assert [path.name for path in paths] == ["explain_0.png", "explain_1.png", "explain_2.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in paths)
    with pytest.raises(SystemExit):
        main(["--dataset", "synthetic-interaction", "--fusion", "concat", "--explain", "2"])
