"""Metrics: hand-computed cases."""

import numpy as np
import pytest

from training.metrics import compute_metrics, expected_calibration_error

LABELS = ("support", "oppose", "neutral")


def test_perfectly_confident_correct_predictions():
    probs = np.eye(3)
    m = compute_metrics(["support", "oppose", "neutral"], probs, LABELS)
    assert (m["accuracy"], m["macro_f1"], m["f_avg_support_oppose"], m["ece"]) == (1.0, 1.0, 1.0, 0.0)
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


def test_ece_is_gap_between_confidence_and_accuracy_per_bin():
    # Two bins: confidence 0.9 (1 of 2 right) and 0.6 (2 of 2 right).
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.2, 0.2], [0.6, 0.2, 0.2]])
    y = np.array([0, 1, 0, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))


def test_class_never_predicted_has_zero_precision_not_an_error():
    probs = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    m = compute_metrics(["support", "neutral"], probs, LABELS)
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
