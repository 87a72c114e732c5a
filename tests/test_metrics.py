"""mmgraph.metrics against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmgraph.metrics import (classification_metrics, confusion_metrics, regression_from_sums, regression_metrics,
                             mean_std, regression_sums, summarize)


def test_classification_metrics_match_a_hand_computed_example():
    # true  0 0 1 1 2 2 ; pred 0 1 1 1 2 0
    # recall: 1/2, 2/2, 1/2 -> 2/3 ; precision: 1/2, 2/3, 1/1 ; F1: 1/2, 4/5, 2/3 -> (0.5 + 0.8 + 2/3) / 3
    metrics = classification_metrics(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 1, 1, 2, 0]), 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["macro_recall"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert all(isinstance(metrics[k], float) for k in ("accuracy", "macro_recall", "macro_f1"))


def test_logits_are_argmaxed_and_absent_classes_count_as_zero():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    metrics = classification_metrics(np.array([0, 1, 0]), logits, num_classes=4)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # recall 1/2, 1, 0, 0 over the 4 labels (classes 2 and 3 never occur: zero_division=0)
    assert metrics["macro_recall"] == pytest.approx(1.5 / 4)
    assert len(metrics["confusion_matrix"]) == 4


@pytest.mark.parametrize("y_true, y_pred, num_classes, match", [
    ([0, 1], [0, 1, 1], 2, "y_pred_or_logits: expected class ids of shape"),
    ([0, 1], torch.zeros(2, 3), 2, r"scores \[N, 2\]"),
    ([0, 2], [0, 1], 2, r"y_true: class ids must be integers in \[0, 2\)"),
    ([0, 1], [0, -1], 2, "y_pred_or_logits: class ids"),
    ([], [], 2, "N >= 1"),
    ([0, 1], [0, 1], 0, "num_classes"),
])
def test_classification_metrics_reject_bad_inputs(y_true, y_pred, num_classes, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(y_true, y_pred, num_classes)


def test_regression_metrics_match_a_hand_computed_example():
    # errors 0, 1, -2 -> MSE 5/3, MAE 1 ; SS_tot of [1, 2, 3] = 2 -> R2 = 1 - 5 / 2 ; deviations (-1, 0, 1) and
    # (-4/3, -4/3, 8/3) -> r = 4 / sqrt(2 * 96/9) = sqrt(3) / 2
    metrics = regression_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1.0], [1.0], [5.0]]))
    assert metrics == pytest.approx({"mse": 5 / 3, "mae": 1.0, "r2": -1.5, "pearson": 3 ** 0.5 / 2})
    assert math.isnan(regression_metrics([2.0, 2.0], [2.0, 1.0])["r2"])
    with pytest.raises(ValueError, match="y_true, y_pred"):
        regression_metrics([1.0, 2.0], [1.0])


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn warns about the absent class
def test_one_implementation_agrees_with_scikit_learn_on_an_absent_class_and_on_random_data():
    from sklearn.metrics import f1_score, mean_absolute_error, mean_squared_error, r2_score, recall_score

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 3, 500), rng.integers(0, 3, 500)  # class 3 of 4: never true nor predicted
    metrics = classification_metrics(truth, predicted, 4)
    labels = list(range(4))
    assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, labels=labels, average="macro",
                                                         zero_division=0), abs=1e-12)
    assert metrics["macro_recall"] == pytest.approx(recall_score(truth, predicted, labels=labels, average="macro",
                                                                 zero_division=0), abs=1e-12)
    assert confusion_metrics(metrics["confusion_matrix"]) == {k: metrics[k] for k in ("accuracy", "macro_recall",
                                                                                     "macro_f1")}
    # the 0.617 vs 0.822 of issue 19: 3 of 4 classes present; the absent class counts as 0 (not left out)
    confusion = torch.tensor([[5, 1, 0, 0], [1, 4, 1, 0], [0, 2, 3, 0], [0, 0, 0, 0]])
    present_mean = (2 * 5 / 12 + 2 * 4 / 13 + 2 * 3 / 9) / 3
    assert confusion_metrics(confusion)["macro_f1"] == pytest.approx(present_mean * 3 / 4, abs=1e-12)
    y, p = rng.normal(size=300) * 3 + 10, rng.normal(size=300)
    assert regression_metrics(y, p) == pytest.approx({"mse": mean_squared_error(y, p), "mae": mean_absolute_error(y, p),
                                                      "r2": r2_score(y, p), "pearson": np.corrcoef(y, p)[0, 1]},
                                                     rel=1e-9)
    halves = regression_sums(torch.tensor(y[:100]), torch.tensor(p[:100])) + regression_sums(torch.tensor(y[100:]),
                                                                                              torch.tensor(p[100:]))
    assert regression_from_sums(halves) == pytest.approx({k: v for k, v in regression_metrics(y, p).items()
                                                          if k != "pearson"}, rel=1e-12)
    with pytest.raises(ValueError, match=r"confusion: expected a square count matrix \[C, C\], got shape \(2, 3\)"):
        confusion_metrics(torch.zeros(2, 3))


def test_summarize_gives_mean_and_sample_std_of_scalar_metrics():
    runs = [{"accuracy": 0.5, "macro_f1": 0.4, "confusion_matrix": [[1]]},
            {"accuracy": 0.7, "macro_f1": 0.6, "confusion_matrix": [[2]]}]
    summary = summarize(runs)
    assert set(summary) == {"accuracy", "macro_f1"}
    assert summary["accuracy"] == pytest.approx((0.6, math.sqrt(0.02)))
    assert summarize(runs[:1])["macro_f1"] == (0.4, 0.0)
    with pytest.raises(ValueError, match=r"runs\[1\]\['accuracy'\]"):
        summarize([{"accuracy": 0.5}, {"f1": 0.3}])
    with pytest.raises(ValueError, match="runs"):
        summarize([])


def test_mean_std_gives_the_mean_and_sample_std_of_one_list():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    assert mean_std((3,)) == (3.0, 0.0)
    assert mean_std(np.array([0.5, 0.7])) == mean_std(torch.tensor([0.5, 0.7], dtype=torch.float64)) == \
        mean_std([0.5, 0.7])
    with pytest.raises(ValueError, match="values: expected at least one number"):
        mean_std([])
    for bad, where in (("12", "values"), (None, "values"), ({"a": 1.0}, "values"), ([1.0, "2"], r"values\[1\]"),
                       ([True], r"values\[0\]")):
        with pytest.raises(TypeError, match=where):
            mean_std(bad)


# ---------------------------------------------------------------------------------------------------- sentiment
def test_sentiment_metrics_match_a_hand_computed_example():
    from mmgraph.metrics import binary_sentiment, sentiment_metrics

    truth = np.array([-2.6, -0.4, 0.0, 0.0, 1.2, 2.8])
    predicted = np.array([-1.8, 0.3, 0.0, -0.6, 1.6, 3.9])
    metrics = sentiment_metrics(truth, torch.tensor(predicted).unsqueeze(1))
    # >= 0: truth 0 0 1 1 1 1, pred 0 1 1 0 1 1 -> 4/6
    assert metrics["acc2"] == pytest.approx(4 / 6)
    # non-zero truth only (-2.6, -0.4, 1.2, 2.8): > 0 truth 0 0 1 1, pred 0 1 1 1 -> 3/4
    assert metrics["acc2_nonzero"] == pytest.approx(3 / 4)
    # weighted F1 of the non-zero variant: class 0 (support 2) P 1 R 1/2 F 2/3; class 1 (support 2) P 2/3 R 1 F 4/5
    assert metrics["f1_nonzero"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # 7 classes: rounded truth -3 -0 0 0 1 3, rounded clipped pred -2 0 0 -1 2 3 -> 3/6
    assert metrics["acc7"] == pytest.approx(3 / 6)
    assert metrics["mae"] == pytest.approx(np.abs(truth - predicted).mean())
    assert metrics["pearson"] == pytest.approx(np.corrcoef(truth, predicted)[0, 1])
    assert binary_sentiment(truth).tolist() == [0, 0, 1, 1, 1, 1]
    assert binary_sentiment(truth, nonzero=True).tolist() == [0, 0, 0, 0, 1, 1]


def test_sentiment_metrics_reject_bad_shapes_and_non_finite_scores():
    from mmgraph.metrics import sentiment_metrics

    with pytest.raises(ValueError, match="y_true, y_pred"):
        sentiment_metrics(np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        sentiment_metrics(np.array([0.5, -np.inf]), np.zeros(2))


# ---------------------------------------------------------------------------------------------------- robustness
def test_relative_and_effective_robustness_are_trapezoid_areas():
    from mmgraph.metrics import corruption_levels, effective_robustness, relative_robustness

    levels = corruption_levels()
    assert len(levels) == 11 and levels[0] == 0.0 and levels[-1] == 1.0
    flat = [0.8] * 11
    falling = [0.9 - 0.05 * k for k in range(11)]  # 0.9 -> 0.4, a straight line
    assert relative_robustness(levels, flat) == pytest.approx(0.8)
    assert relative_robustness(levels, falling) == pytest.approx((0.9 + 0.4) / 2)
    # the reference loses 0.5 over [0, 1]; shifted to 0.8 at level 0 it falls to 0.3; the flat curve is above it
    # by 0.5 l at level l -> area 0.25; the reference against itself is 0
    assert effective_robustness(levels, flat, falling) == pytest.approx(0.25)
    assert effective_robustness(levels, falling, falling) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="accuracies"):
        relative_robustness(levels, flat[:5])
    with pytest.raises(ValueError, match="levels"):
        relative_robustness([0.5, 0.1], [1.0, 1.0])


def test_corrupt_adds_noise_to_features_and_masks_sequence_steps():
    from mmgraph.metrics import corrupt

    x = torch.zeros(2000, 4)
    assert corrupt(x, 0.0) is x
    noisy = corrupt(x, 0.5, seed=3)
    assert noisy.std().item() == pytest.approx(0.5, rel=0.05)
    assert torch.equal(noisy, corrupt(x, 0.5, seed=3)) and not torch.equal(noisy, corrupt(x, 0.5, seed=4))
    frames = torch.ones(500, 20, 3)
    masked = corrupt(frames, 0.3, sequence=True, seed=0)
    zeroed = (masked == 0).all(-1)  # whole steps are zeroed, never single features
    assert ((masked == 0) == zeroed.unsqueeze(-1)).all()
    assert zeroed.float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert (corrupt(frames, 1.0, sequence=True) == 0).all()
    with pytest.raises(ValueError, match="level"):
        corrupt(x, 1.5)
    with pytest.raises(ValueError, match="frames"):
        corrupt(x, 0.5, sequence=True)
