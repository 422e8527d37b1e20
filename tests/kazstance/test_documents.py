"""The document aggregation rule, case by case."""

import pytest

from kazstance.documents import aggregate, predict_document
from kazstance.predictor import Prediction

LABELS = ("support", "oppose", "neutral")


def p(support: float, oppose: float, neutral: float) -> Prediction:
    scores = {"support": support, "oppose": oppose, "neutral": neutral}
    return Prediction(label=max(scores, key=scores.get), scores=scores)


def test_no_stance_sentence_means_neutral_without_evidence():
    label, _, evidence = aggregate([p(0.1, 0.1, 0.8), p(0.2, 0.1, 0.7)], LABELS)
    assert (label, evidence) == ("neutral", [])


def test_clear_majority_wins_and_evidence_is_its_sentences_most_confident_first():
    preds = [p(0.6, 0.2, 0.2), p(0.1, 0.1, 0.8), p(0.9, 0.05, 0.05), p(0.2, 0.5, 0.3)]
    label, _, evidence = aggregate(preds, LABELS)
    assert label == "support"
    assert evidence == [2, 0]


def test_balanced_weighing_is_neutral_and_keeps_both_sides_as_evidence():
    preds = [p(0.8, 0.1, 0.1), p(0.1, 0.75, 0.15)]
    label, _, evidence = aggregate(preds, LABELS)
    assert label == "neutral"
    assert sorted(evidence) == [0, 1]


def test_scores_are_mean_sentence_probabilities():
    _, scores, _ = aggregate([p(0.6, 0.2, 0.2), p(0.2, 0.2, 0.6)], LABELS)
    assert scores == pytest.approx({"support": 0.4, "oppose": 0.2, "neutral": 0.4})


def test_empty_document_is_rejected(tiny_model_dir):
    from kazstance.predictor import Predictor

    with pytest.raises(ValueError):
        predict_document(Predictor.from_dir(tiny_model_dir), "  \n ")


def test_predict_document_returns_each_sentence(tiny_model_dir):
    from kazstance.predictor import Predictor

    doc = predict_document(Predictor.from_dir(tiny_model_dir), "Бірінші сөйлем. «Екі. Үш», – деді ол.\nСоңғы")
    assert [s for s, _ in doc.sentences] == ["Бірінші сөйлем.", "«Екі. Үш», – деді ол.", "Соңғы"]
    assert doc.label in LABELS
