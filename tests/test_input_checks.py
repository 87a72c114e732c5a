"""Issue 22: what ``FusionModel`` and ``predict`` accept at their boundary. An array of the wrong rank is refused
naming the modality and both shapes, whatever the rank and whether or not the model standardises; 0 samples give
empty predictions; float64 and integer features of a float modality are cast to the model's dtype (ints are not
token ids there); a token modality refuses floats."""

import re

import numpy as np
import pytest
import torch

from mmgraph import FusionModel, predict
from mmgraph.data import MultiModalDataset


def _data(n: int = 60, tokens: bool = False) -> MultiModalDataset:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 5)).astype(np.float32)
    features = {"a": a, "b": b}
    if tokens:
        features["t"] = rng.integers(0, 12, size=(n, 4))
    return MultiModalDataset(features, {"label": (a[:, 0] > 0).astype(np.int64), "level": a[:, 1] + b[:, 1]},
                             task_types={"level": "regression"})


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "standardized"])
def model(request) -> FusionModel:
    return FusionModel.from_dataset(_data(), "gnn", dim=8, standardize=request.param, seed=0).eval()


@pytest.mark.parametrize("shape", [(60, 2, 8), (60, 8, 1), (60, 1, 2, 8)])
def test_an_array_of_the_wrong_rank_is_refused_naming_the_modality_and_both_shapes(model, tmp_path, shape):
    inputs = {"a": np.zeros(shape, np.float32), "b": np.zeros((60, 5), np.float32)}
    message = f"inputs['a']: expected shape [B, 8] (the shape the model was trained on), got {tuple(shape)}"
    with pytest.raises(ValueError, match=re.escape(message)):
        predict(model, inputs)
    model.save(tmp_path / "model.mmgraph")  # the file carries the trained shapes
    with pytest.raises(ValueError, match=r"inputs\['a'\]: expected shape \[B, 8\]"):
        predict(FusionModel.load(tmp_path / "model.mmgraph"), inputs)


def test_frames_without_their_time_axis_are_refused():
    rng = np.random.default_rng(0)
    data = MultiModalDataset({"a": rng.normal(size=(30, 6, 4)).astype(np.float32),
                              "b": rng.normal(size=(30, 6, 3)).astype(np.float32)}, {"label": np.arange(30) % 2})
    model = FusionModel.from_dataset(data, "gnn", dim=8, seed=0)
    with pytest.raises(ValueError, match=r"inputs\['b'\]: expected shape \[B, \*, 3\] .* got \(30, 3\)"):
        predict(model, {"a": data.features["a"], "b": np.zeros((30, 3), np.float32)})


def test_predict_with_zero_samples_returns_empty_outputs(model):
    empty = {"a": np.zeros((0, 8), np.float32), "b": np.zeros((0, 5), np.float32)}
    labels = predict(model, empty)
    assert labels["label"].shape == (0,) and labels["label"].dtype == torch.long and labels["level"].shape == (0,)
    assert predict(model, empty, logits=True)["label"].shape == (0, 2)
    assert predict(model, empty, proba=True)["label"].shape == (0, 2)
    with pytest.raises(ValueError, match=r"inputs\['a'\]: expected shape \[B, 8\]"):  # still checked
        predict(model, {"a": np.zeros((0, 2, 8), np.float32), "b": np.zeros((0, 5), np.float32)})


def test_predict_with_zero_samples_gives_string_labels_as_an_empty_string_array():
    rng = np.random.default_rng(0)
    data = MultiModalDataset({"a": rng.normal(size=(30, 3)).astype(np.float32)},
                             {"label": np.where(np.arange(30) % 2, "yes", "no")})
    model = FusionModel.from_dataset(data, "concat", dim=8, seed=0)
    out = predict(model, {"a": np.zeros((0, 3), np.float32)})["label"]
    assert isinstance(out, np.ndarray) and out.shape == (0,) and out.dtype.kind == "U"


def test_float64_inputs_are_cast_to_the_model_dtype(model):
    data = _data()
    inputs = {name: data.features[name][:7] for name in ("a", "b")}
    expected = model(inputs)
    got = model({name: x.double() for name, x in inputs.items()})
    for task in expected:
        assert got[task].dtype == torch.float32
        torch.testing.assert_close(got[task], expected[task])


def test_integer_features_of_a_vector_modality_are_features_not_token_ids(model):
    rng = np.random.default_rng(1)
    counts = rng.integers(-3, 4, size=(20, 8))  # negative values too: no "token ids must be >= 0"
    b = rng.normal(size=(20, 5)).astype(np.float32)
    expected = predict(model, {"a": counts.astype(np.float32), "b": b}, logits=True)
    got = predict(model, {"a": counts, "b": b}, logits=True)
    for task in expected:
        torch.testing.assert_close(got[task], expected[task])
    direct = model({"a": torch.as_tensor(counts), "b": torch.as_tensor(b)})
    torch.testing.assert_close(direct["label"], expected["label"])


def test_a_token_modality_refuses_float_features_naming_it():
    model = FusionModel.from_dataset(_data(tokens=True), "concat", dim=8, seed=0)
    assert model.input_spec["t"] == {"dtype": "int", "shape": [None]}
    assert model.input_spec["a"] == {"dtype": "float", "shape": [8]}
    inputs = {"a": np.zeros((5, 8), np.float32), "b": np.zeros((5, 5), np.float32), "t": np.ones((5, 4), np.float32)}
    with pytest.raises(TypeError, match=r"inputs\['t'\]: expected integer token ids \[B, \*\], got float32"):
        predict(model, inputs)
    with pytest.raises(TypeError, match=r"inputs\['t'\]: expected integer token ids"):
        model({name: torch.as_tensor(x) for name, x in inputs.items()})
