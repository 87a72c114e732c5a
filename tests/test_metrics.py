"""mmgraph.metrics against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmgraph.metrics import classification_metrics, regression_metrics, summarize


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
    # errors 0, 1, -2 -> MSE 5/3, MAE 1 ; SS_tot of [1, 2, 3] = 2 -> R2 = 1 - 5 / 2
    metrics = regression_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1.0], [1.0], [5.0]]))
    assert metrics == pytest.approx({"mse": 5 / 3, "mae": 1.0, "r2": -1.5})
    assert math.isnan(regression_metrics([2.0, 2.0], [2.0, 1.0])["r2"])
    with pytest.raises(ValueError, match="y_true, y_pred"):
        regression_metrics([1.0, 2.0], [1.0])


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
