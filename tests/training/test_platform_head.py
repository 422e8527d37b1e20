"""The platform head's second stage: fitted on the finished stance model, leaving its stance exactly as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SAMPLE_TEXTS, make_untrained_classifier
from kazstance.predictor import Predictor
from training.platform_head import add_platform_head

PLATFORMS = ["tiktok", "general", "general", "tiktok", "general", "general", "tiktok", "telegram"]


@pytest.fixture
def stance_only(tmp_path):
    return make_untrained_classifier(tmp_path, platforms=())


def test_the_stance_is_unchanged_after_the_head_is_added(stance_only):
    before = Predictor.from_dir(stance_only).backend.logits(SAMPLE_TEXTS)
    names = add_platform_head(stance_only, SAMPLE_TEXTS * 3, PLATFORMS * 3, max_length=64, C=100.0)
    after = Predictor.from_dir(stance_only)
    assert names == ("general", "telegram", "tiktok") == after.platforms
    # The same weights; only the matrix product's summation order may differ with the wider layer.
    assert np.abs(after.backend.logits(SAMPLE_TEXTS)[:, :3] - before).max() < 1e-6
    config = json.loads((stance_only / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(6)] == [
        "support", "oppose", "neutral", "platform:general", "platform:telegram", "platform:tiktok"]


def test_the_head_gives_the_fitted_regressions_probabilities(stance_only):
    """The wiring: the model's platform softmax is the logistic regression's predict_proba on the
    pooled representation it was fitted on."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from training.platform_head import pooled_features

    model = AutoModelForSequenceClassification.from_pretrained(stance_only).eval()
    features = pooled_features(model, AutoTokenizer.from_pretrained(stance_only), SAMPLE_TEXTS * 3, 64)
    expected = LogisticRegression(C=100.0, max_iter=5000, random_state=0).fit(features, PLATFORMS * 3)
    add_platform_head(stance_only, SAMPLE_TEXTS * 3, PLATFORMS * 3, max_length=64, C=100.0)
    predictions = Predictor.from_dir(stance_only).predict(SAMPLE_TEXTS)
    for prediction, row in zip(predictions, expected.predict_proba(features[:len(SAMPLE_TEXTS)])):
        assert [prediction.platform_scores[name] for name in expected.classes_] == pytest.approx(row, abs=1e-4)


def test_two_platforms_make_a_two_way_softmax(stance_only):
    platforms = ["tiktok" if i % 2 else "general" for i in range(len(SAMPLE_TEXTS))]
    assert add_platform_head(stance_only, SAMPLE_TEXTS * 3, platforms * 3, max_length=64, C=100.0) == ("general", "tiktok")
    prediction = Predictor.from_dir(stance_only).predict(["TikTok"])[0]
    assert set(prediction.platform_scores) == {"general", "tiktok"}
    assert sum(prediction.platform_scores.values()) == pytest.approx(1, abs=1e-5)


def test_one_platform_is_not_enough(stance_only):
    with pytest.raises(ValueError, match="at least two platforms"):
        add_platform_head(stance_only, SAMPLE_TEXTS, ["general"] * len(SAMPLE_TEXTS), max_length=64)
