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


def test_platform_metrics_are_per_platform_f1_and_their_macro_mean():
    from training.metrics import platform_metrics

    gold = ["tiktok", "tiktok", "general", "general", "telegram"]
    pred = ["tiktok", "general", "general", "telegram", "telegram"]
    m = platform_metrics(gold, pred)
    # tiktok P 1/1 R 1/2 -> F1 2/3; general P 1/2 R 1/2 -> 1/2; telegram P 1/2 R 1/1 -> 2/3
    assert m["per_platform"]["tiktok"]["f1"] == pytest.approx(2 / 3)
    assert m["per_platform"]["general"]["f1"] == pytest.approx(1 / 2)
    assert m["per_platform"]["telegram"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["n"] == 5


def test_evaluation_scores_the_platform_head_on_the_records_platforms(tiny_model_dir):
    from kazstance.predictor import Predictor
    from training.evaluate import evaluate_records
    from training.metrics import platform_metrics

    predictor = Predictor.from_dir(tiny_model_dir)
    records = [{"text": t, "label": "neutral", "platform": p}
               for t, p in [("TikTok жабылсын", "tiktok"), ("Telegram", "telegram"), ("Интернет", "general")]]
    metrics, _ = evaluate_records(predictor, records)
    predicted = [p.platform for p in predictor.predict([r["text"] for r in records])]
    assert metrics["platform"] == platform_metrics([r["platform"] for r in records], predicted)
