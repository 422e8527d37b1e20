"""The document aggregation rule, case by case."""

import pytest

from kazstance.documents import aggregate, aggregate_platform, predict_document
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


def about(platform: str, p: float) -> Prediction:
    """A sentence about `platform` with probability `p` (the rest spread over two others)."""
    names = ("general", "tiktok", "telegram")
    scores = {n: (p if n == platform else (1 - p) / 2) for n in names}
    return Prediction(label="neutral", scores={"support": 0.1, "oppose": 0.1, "neutral": 0.8},
                      platform=platform, platform_scores=scores)


def test_a_document_is_about_the_one_platform_its_sentences_name():
    platform, scores = aggregate_platform([about("general", 0.9), about("tiktok", 0.8), about("general", 0.7)])
    assert platform == "tiktok"
    assert scores == pytest.approx({"general": (0.9 + 0.1 + 0.7) / 3, "tiktok": (0.05 + 0.8 + 0.15) / 3,
                                    "telegram": (0.05 + 0.1 + 0.15) / 3})


def test_a_document_naming_no_platform_or_several_is_general():
    assert aggregate_platform([about("general", 0.9), about("general", 0.6)])[0] == "general"
    assert aggregate_platform([about("tiktok", 0.8), about("telegram", 0.8)])[0] == "general"


def test_a_clear_majority_of_platform_votes_wins():
    # tiktok holds 1.6 of 2.1 votes (more than two thirds): the document is about tiktok.
    assert aggregate_platform([about("tiktok", 0.8), about("tiktok", 0.8), about("telegram", 0.5)])[0] == "tiktok"
    # 0.8 of 1.4 is not: general.
    assert aggregate_platform([about("tiktok", 0.8), about("telegram", 0.6)])[0] == "general"


def test_without_a_platform_head_there_is_no_platform():
    assert aggregate_platform([p(0.6, 0.2, 0.2)]) == (None, None)
