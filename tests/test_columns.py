"""Raw columns (issue 18): MultiModalDataset.from_columns, pad_ragged, FusionModel.prepare behind predict, and the
sentiment researcher's round trip (raw columns -> fit -> save -> a fresh process -> predict)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmgraph import FusionModel, MultiModalDataset, fit, predict
from mmgraph.data import pad_ragged
from mmgraph.data.synthetic import make_sentiment

# same thread count as this process (tests/conftest.py): results are bit-identical only at equal thread counts
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------------- from_columns
def test_from_columns_detects_each_kind_and_marks_none_missing():
    columns = {"text": ["good film", None, "bad"], "audio": [np.ones((3, 2)), np.ones((5, 2)), None],
               "image": np.zeros((3, 8, 8)), "pixels": np.zeros((3, 1, 4, 4)), "score": [1.0, 2.0, 3.0],
               "frames": np.zeros((3, 4, 2))}
    ds = MultiModalDataset.from_columns(columns, np.array([0, 1, 0]), kinds={"image": "image"})
    assert ds.kinds == {"text": "text", "audio": "sequence", "image": "image", "pixels": "image",
                        "score": "vector", "frames": "sequence"}
    assert ds.input_shapes["image"] == (1, 8, 8) and ds.input_shapes["audio"] == (5, 2)
    assert ds.input_shapes["score"] == (1,)
    named = {name: ds.mask[:, m].tolist() for m, name in enumerate(ds.modalities)}
    assert named["text"] == [True, False, True] and named["audio"] == [True, True, False]
    assert ds.step_mask["audio"].sum(1).tolist() == [3, 5, 0]
    assert ds.subset([0, 1]).kinds == ds.kinds  # kinds survive splits


def test_from_columns_accepts_a_dataframe_with_a_target_column():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"text": ["a b", None, "c"], "x": [0.5, 1.5, 2.5], "y": ["pos", "neg", "pos"]})
    ds = MultiModalDataset.from_columns(frame, "y")
    assert ds.modalities == ["text", "x"] and ds.kinds["text"] == "text"
    assert ds.class_names == {"label": ["neg", "pos"]} and ds.mask[:, 0].tolist() == [True, False, True]


@pytest.mark.parametrize("columns, kinds, message", [
    ({"a": [np.ones((3, 2)), np.ones((4, 3))]}, None, "same feature width D, got widths [2, 3]"),
    ({"a": ["text", np.ones(3)]}, None, "a string among numeric entries"),
    ({"a": [None, None]}, None, "every entry is None"),
    ({"a": np.zeros((4, 5))}, {"a": "image"}, "cannot be kind 'image'"),
    ({"a": ["x", "y"]}, {"a": "vector"}, "holds strings"),
    ({"a": [np.ones((0, 2))]}, None, "T >= 1"),
])
def test_from_columns_errors_name_the_column_and_never_dump_arrays(columns, kinds, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)) as error:
        MultiModalDataset.from_columns(columns, None, kinds=kinds)
    assert "columns['a']" in str(error.value) or "kinds['a']" in str(error.value)
    assert "array(" not in str(error.value) and len(str(error.value)) < 300


def test_pad_ragged_pads_at_the_end_with_step_and_sample_masks():
    padded, step_mask, mask = pad_ragged([np.arange(6.0).reshape(3, 2), None, np.ones(2)[:, None].repeat(2, 1)])
    assert padded.shape == (3, 3, 2) and padded.dtype == np.float32
    assert step_mask.tolist() == [[True, True, True], [False, False, False], [True, True, False]]
    assert mask.tolist() == [True, False, True]
    assert np.array_equal(padded[0], np.arange(6.0).reshape(3, 2)) and not padded[1].any()


# ---------------------------------------------------------------------------------------------------- the researcher
@pytest.fixture(scope="module")
def sentiment_model(tmp_path_factory):
    """A GNN trained for 2 epochs on 96 raw utterances (vocabulary text encoder), saved to a file."""
    columns, score = make_sentiment(96, seed=0)
    ds = MultiModalDataset.from_columns(columns, score)
    model = FusionModel.from_dataset(ds, "gnn", seed=0, text_model=None, standardize=True)
    fit(model, ds, epochs=2, batch_size=32, seed=0, progress=False)
    path = tmp_path_factory.mktemp("sentiment") / "model.mmg"
    model.save(path)
    return model, path


def test_sentiment_defaults_give_the_gnn_token_nodes_and_pooled_sequences(sentiment_model):
    model, _ = sentiment_model
    specs = model.config()["encoders"]
    assert specs["text"]["name"] == "vocab_text" and specs["text"]["nodes"] == "tokens"
    assert specs["audio"] == {"name": "conv1d", "in_dim": 8}  # pooled: what learns (factory docstring)
    assert model.config()["fusion_kwargs"]["temporal_window"] == 4
    assert model.input_kinds == {"text": "text", "audio": "sequence", "visual": "sequence"}


def test_raw_columns_predict_identically_in_a_fresh_process(sentiment_model):
    model, path = sentiment_model
    new, _ = make_sentiment(5, seed=1)
    expected = predict(model, new)["label"]
    code = ("import json, sys; from mmgraph import FusionModel, predict; from mmgraph.data.synthetic import "
            f"make_sentiment; new, _ = make_sentiment(5, seed=1); model = FusionModel.load({str(path)!r}); "
            "print(json.dumps(predict(model, new)['label'].tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=ONE_THREAD)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected.tolist()


def test_padding_never_reaches_a_prediction(sentiment_model):
    """The same utterances padded to two lengths (explicit step masks) give the predictions of the ragged lists;
    without step masks the zero frames would count as real ones (what predict did before prepare)."""
    model, _ = sentiment_model
    new, _ = make_sentiment(5, seed=1)
    ragged = predict(model, new)["label"]
    audio, steps, _ = pad_ragged(new["audio"])
    longer = np.concatenate([audio, np.zeros((5, 40, audio.shape[2]), np.float32)], axis=1)
    longer_steps = np.concatenate([steps, np.zeros((5, 40), bool)], axis=1)
    for padded, step_mask in ((audio, steps), (longer, longer_steps)):
        got = predict(model, {**new, "audio": padded}, step_mask={"audio": step_mask})["label"]
        torch.testing.assert_close(got, ragged, rtol=0, atol=1e-6)
    leaked = predict(model, {**new, "audio": longer})["label"]  # no step mask: padding read as frames
    assert (leaked - ragged).abs().max() > 1e-3


def test_prepare_reports_the_modality_and_never_dumps_arrays(sentiment_model):
    model, _ = sentiment_model
    new, _ = make_sentiment(3, seed=1)
    with pytest.raises(ValueError, match=r"missing \['visual'\].*columns\['visual'\] = \[None\] \* N"):
        model.prepare({"text": new["text"], "audio": new["audio"]})
    # ... and the way it names works: the visual stream absent from every sample
    absent = predict(model, {"text": new["text"], "audio": new["audio"], "visual": [None] * 3})["label"]
    assert absent.shape == (3,) and np.isfinite(absent).all()
    with pytest.raises(ValueError, match="kinds\\['text'\\]: 'text' given") as error:
        model.prepare({**new, "text": [np.ones(2)] * 3})
    assert "array(" not in str(error.value)
    # strings where a sequence was trained: the message says so, instead of a shape error about code points
    with pytest.raises(TypeError, match=r"columns\['audio'\]: got strings, but the model was trained on sequence "
                                        r"input for 'audio' \(shape \[B, \*, 8\]\)"):
        model.prepare({**new, "audio": ["loud", "soft", "flat"]})
    inputs, mask, step_mask = model.prepare(new)
    assert inputs["text"].dtype == torch.int64 and set(step_mask) == {"audio", "visual"}
    assert mask["visual"].tolist() == [v is not None for v in new["visual"]]


def test_a_stream_missing_from_every_sample_of_a_batch_predicts_like_a_masked_one(sentiment_model):
    """One utterance without video (or a batch where no sample has it): ``None`` entries only, nothing to learn a
    shape from; the model's own input spec gives the placeholder, and the prediction is that of the masked stream."""
    model, _ = sentiment_model
    new, _ = make_sentiment(6, seed=2)
    present = [v for v in new["visual"] if v is not None][:3]
    batch = {"text": new["text"][:3], "audio": new["audio"][:3], "visual": present}
    masked = predict(model, batch, mask={"visual": np.zeros(3, bool)})["label"]
    for none in ([None] * 3, np.array([None] * 3, dtype=object)):
        torch.testing.assert_close(predict(model, {**batch, "visual": none})["label"], masked, rtol=0, atol=1e-6)
    one = predict(model, {"text": batch["text"][:1], "audio": batch["audio"][:1], "visual": [None]})["label"]
    torch.testing.assert_close(one, masked[:1], rtol=0, atol=1e-6)
    text_only = predict(model, {"text": [None] * 3, "audio": batch["audio"], "visual": present})["label"]
    torch.testing.assert_close(text_only, predict(model, batch, mask={"text": np.zeros(3, bool)})["label"],
                               rtol=0, atol=1e-6)


def test_an_image_stream_missing_from_every_sample_gets_a_placeholder_of_the_trained_size():
    rng = np.random.default_rng(0)
    images, vectors = rng.normal(size=(40, 1, 12, 12)).astype(np.float32), rng.normal(size=(40, 5))
    ds = MultiModalDataset.from_columns({"image": images, "tab": vectors}, np.arange(40) % 2)
    model = FusionModel.from_dataset(ds, "concat", dim=8, seed=0)
    assert model.config()["encoders"]["image"]["name"] == "spatial_cnn"
    expected = predict(model, {"image": images[:2], "tab": vectors[:2]}, mask={"image": np.zeros(2, bool)},
                       logits=True)["label"]
    got = predict(model, {"image": [None, None], "tab": vectors[:2]}, logits=True)["label"]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_explain_and_evaluate_take_raw_columns(sentiment_model):
    from mmgraph import evaluate

    model, _ = sentiment_model
    new, score = make_sentiment(4, seed=2)
    explanation = model.explain(new)
    assert explanation["node_modality"].count("audio") == 1 and explanation["node_modality"].count("text") > 1
    metrics = evaluate(model, MultiModalDataset.from_columns(new, score))["label"]
    assert np.isfinite(metrics["mae"])


def test_make_sentiment_is_reproducible_and_in_range():
    columns, score = make_sentiment(200, seed=3)
    again, score_again = make_sentiment(200, seed=3)
    assert columns["text"] == again["text"] and np.array_equal(score, score_again)
    lengths = [len(a) for a in columns["audio"]]
    missing = sum(v is None for v in columns["visual"]) / 200
    assert 20 <= min(lengths) and max(lengths) <= 120 and 0.1 < missing < 0.3
    assert score.min() >= -3.5 and score.max() <= 3.5 and score.std() > 1.0


def test_cli_npz_with_text_and_step_masks(tmp_path):
    from mmgraph.cli.train import load_npz

    columns, score = make_sentiment(20, seed=0)
    audio, audio_steps, _ = pad_ragged(columns["audio"])
    path = tmp_path / "mine.npz"
    np.savez(path, text=np.array(columns["text"]), audio=audio, audio_step_mask=audio_steps, label=score)
    ds = load_npz(path)
    assert ds.kinds == {"text": "text", "audio": "sequence"}
    assert torch.equal(ds.step_mask["audio"], torch.from_numpy(audio_steps))
    np.savez(path, text=np.array(columns["text"]), audio=audio, audio_step_mask=audio_steps[:, :3], label=score)
    with pytest.raises(ValueError, match=r"step_mask\['audio'\]: expected a BoolTensor of shape \(20, \d+\)"):
        load_npz(path)


def test_cli_npz_reads_uint8_images_as_numbers_and_token_ids_as_ids(tmp_path):
    from mmgraph.cli.train import load_npz

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 1, 8, 8), dtype=np.uint8)  # as images are stored: uint8 [N, C, H, W]
    tokens = rng.integers(1, 50, (12, 5), dtype=np.int64)
    path = tmp_path / "mine.npz"
    np.savez(path, image=images, words=tokens, label=np.array(["cat", "dog"] * 6))
    ds = load_npz(path)
    assert ds.features["image"].dtype == torch.float32 and ds.input_shapes["image"] == (1, 8, 8)
    assert torch.equal(ds.features["image"], torch.from_numpy(images).float())
    assert ds.features["words"].dtype == torch.int64  # [N, L] integers stay token ids
    model = FusionModel.from_dataset(ds, "gnn", dim=8)  # a default encoder for each (it was an error for uint8)
    assert model.config()["encoders"]["image"]["name"] in ("cnn", "spatial_cnn")


def test_scikit_learn_estimator_takes_raw_columns():
    from mmgraph.sklearn import MultiModalRegressor

    columns, score = make_sentiment(48, seed=0)
    estimator = MultiModalRegressor(fusion="concat", max_epochs=2, random_state=0,
                                    fusion_kwargs=None).set_params(validation_fraction=0)
    estimator.fit({**columns, "text": [None if i % 5 == 0 else t for i, t in enumerate(columns["text"])]}, score)
    assert estimator.model_.input_kinds["audio"] == "sequence"
    new, _ = make_sentiment(3, seed=1)
    expected = predict(estimator.model_, new)["label"].numpy()
    np.testing.assert_array_equal(estimator.predict(new), expected)
    with pytest.raises(ValueError, match="fit saw raw columns"):
        estimator.predict({"text": np.zeros((3, 2)), "audio": np.zeros((3, 2)), "visual": np.zeros((3, 2))})


def test_segment_mean_uses_only_real_steps_and_each_samples_own_duration():
    from mmgraph.encoders import available_encoders, segment_mean

    assert {"pretrained_text", "vocab_text", "spatial_cnn", "spectrogram_frames", "conv1d"} <= set(available_encoders())
    states = torch.arange(1.0, 7.0).view(1, 6, 1)  # 6 real steps: 1..6
    assert segment_mean(states, None, 3).flatten().tolist() == [1.5, 3.5, 5.5]
    padded = torch.cat([states, torch.full((1, 4, 1), 99.0)], dim=1)  # 4 padded steps holding garbage
    steps = torch.arange(10).unsqueeze(0) < 6
    assert torch.equal(segment_mean(padded, steps, 3), segment_mean(states, None, 3))
    short = segment_mean(torch.tensor([[[2.0], [4.0]]]), None, 4)  # fewer steps than segments: each still real
    assert short.flatten().tolist() == [2.0, 2.0, 4.0, 4.0]
    assert segment_mean(padded, torch.zeros(1, 10, dtype=torch.bool), 3).abs().sum() == 0  # no real step: zeros


def test_sentiment_is_a_registered_data_set():
    from mmgraph.data.registry import available_datasets, load_dataset

    assert "sentiment" in available_datasets()
    ds = load_dataset("sentiment", seed=1, samples=30)
    assert len(ds) == 30 and ds.kinds == {"text": "text", "audio": "sequence", "visual": "sequence"}
    assert ds.tasks == {"label": 0} and ds.name == "sentiment"


def test_segment_nodes_are_temporal_nodes_that_ignore_padding():
    """sequence_nodes="segments": each ragged sequence becomes 8 temporal nodes of the GNN (explain shows them), and
    the same utterances padded to two lengths still predict the same."""
    columns, score = make_sentiment(40, seed=0)
    ds = MultiModalDataset.from_columns(columns, score)
    model = FusionModel.from_dataset(ds, "gnn", seed=0, text_model=None, sequence_nodes="segments")
    assert model.config()["encoders"]["audio"]["segments"] == 8
    fit(model, ds, epochs=1, batch_size=20, seed=0, progress=False)
    new, _ = make_sentiment(3, seed=1)
    assert model.explain(new)["node_modality"].count("audio") == 8
    audio, steps, _ = pad_ragged(new["audio"])
    longer = np.concatenate([audio, np.zeros((3, 30, audio.shape[2]), np.float32)], axis=1)
    longer_steps = np.concatenate([steps, np.zeros((3, 30), bool)], axis=1)
    got = predict(model, {**new, "audio": longer}, step_mask={"audio": longer_steps})["label"]
    torch.testing.assert_close(got, predict(model, new)["label"], rtol=0, atol=1e-6)


def test_the_comparison_runs_on_raw_text_data():
    """mmgraph.compare on the 'sentiment' data set: text (code points) gets no corruption curve instead of a
    TypeError from the protocol's Gaussian noise."""
    import mmgraph
    from mmgraph.data.registry import load_dataset

    result = mmgraph.compare(load_dataset("sentiment", samples=60), methods=["concat"], epochs=1, plots=False,
                             progress=False)
    run = result.runs[0]
    assert set(run["corruption"]) == {"audio", "visual"} and np.isfinite(result.table()[0]["score"])


def test_mmgraph_predict_reads_text_and_step_masks_from_the_npz(sentiment_model, tmp_path):
    """`mmgraph predict` on an .npz with a unicode text array and padded sequences + <modality>_step_mask arrays
    gives the predictions of the raw columns (the step masks were ignored before: padding read as frames)."""
    from mmgraph.cli.predict import main

    model, path = sentiment_model
    new, _ = make_sentiment(4, seed=1)
    audio, audio_steps, _ = pad_ragged(new["audio"])
    audio = np.concatenate([audio, np.zeros((4, 20, audio.shape[2]), np.float32)], axis=1)
    audio_steps = np.concatenate([audio_steps, np.zeros((4, 20), bool)], axis=1)
    visual, visual_steps, visual_present = pad_ragged(new["visual"])
    np.savez(tmp_path / "new.npz", text=np.array(new["text"]), audio=audio, audio_step_mask=audio_steps,
             visual=visual, visual_step_mask=visual_steps, visual_mask=visual_present)
    csv = main([str(path), "--data", str(tmp_path / "new.npz"), "--out", str(tmp_path / "p.csv")])
    values = [float(line) for line in csv.read_text().splitlines()[1:]]
    np.testing.assert_allclose(values, predict(model, new)["label"].numpy(), rtol=1e-5, atol=1e-6)
