"""The shared predictor: input order, calibration, labels from the model, bad input."""

import numpy as np
import pytest

from kazstance.modeling import ModelNotFound
from kazstance.predictor import Predictor, length_batches, softmax

TEXTS = ["қысқа", "Бұл сәл ұзынырақ сөйлем, TikTok туралы.", "Орташа сөйлем бар.", "x" * 300, "TikTok"]


def test_length_batches_cover_every_index_once_and_group_similar_lengths():
    lengths = [5, 100, 7, 90, 6, 95]
    batches = length_batches(lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert batches == [[0, 4, 2], [3, 5, 1]]


def test_length_batches_sort_only_inside_a_window():
    batches = length_batches([9, 8, 1, 2], batch_size=1, window=2)
    assert batches == [[1], [0], [2], [3]]


class CostBackend:
    """Says each text costs its number of words, records the batches it is given, and scores a
    text by its own length (so a misplaced row shows)."""

    labels = ("a", "b")

    def __init__(self):
        self.batches: list[list[str]] = []

    def lengths(self, texts):
        return [len(t.split()) for t in texts]

    def logits(self, texts):
        self.batches.append(list(texts))
        return np.array([[len(t), 0.0] for t in texts], dtype=np.float32)


def test_batches_group_texts_by_the_backends_cost_not_by_characters():
    texts = ["a b c d", "xxxxxxxxxxxxxxxxxxxx", "e f g h", "yyyyyyyyyyyyyyyyyyyy"]  # long-in-chars texts are 1 word
    backend = CostBackend()
    logits = Predictor(backend=backend, name="cost:test", batch_size=2).logits(texts)
    assert sorted(map(sorted, backend.batches)) == [["a b c d", "e f g h"], sorted(texts[1::2])]
    assert logits[:, 0].tolist() == [len(t) for t in texts]  # input order restored


def test_transformer_backends_count_tokens_after_truncation(tiny_model_dir):
    backend = Predictor.from_dir(tiny_model_dir).backend
    backend.max_length = 8
    short = "TikTok"
    assert backend.lengths([short, "x " * 300]) == [len(backend.tokenizer(short)["input_ids"]), 8]


def test_predictions_come_back_in_input_order(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir, batch_size=2)
    one_by_one = np.vstack([predictor.predict_proba([t]) for t in TEXTS])
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), one_by_one, atol=1e-5)


def test_labels_come_from_the_model_config(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    assert predictor.labels == ("support", "oppose", "neutral")
    prediction = predictor.predict(["TikTok"])[0]
    assert list(prediction.scores) == list(predictor.labels)
    assert prediction.label == max(prediction.scores, key=prediction.scores.get)
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-4)


def test_temperature_scales_logits(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    logits = predictor.logits(TEXTS)
    predictor.temperature = 2.0
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), softmax(logits / 2.0), atol=1e-6)


def test_empty_text_is_rejected_with_its_index(tiny_model_dir):
    with pytest.raises(ValueError, match="text 1 is empty"):
        Predictor.from_dir(tiny_model_dir).predict(["ok", " \u200b "])


def test_unknown_model_gives_a_clear_error(tmp_path, bentoml_home):
    with pytest.raises(ModelNotFound, match="kazstance train"):
        Predictor.load("kazstance:doesnotexist")
    with pytest.raises(ModelNotFound, match="not a kazstance model folder"):
        Predictor.load(tmp_path)


LONG = " ".join(f"TikTok-ты бұғаттау туралы {i}-сөйлем, балалар мен ата-аналар пікірі." for i in range(12))


def test_a_text_over_the_window_is_read_in_overlapping_windows_covering_every_token(tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    predictor.backend.max_length = 24
    windows = predictor.windows([LONG, "қысқа"])
    pieces = [p for p, owner in zip(windows.pieces, windows.owner) if owner == 0]
    assert len(pieces) > 3 and windows.owner.count(1) == 1
    assert LONG.startswith(pieces[0]) and LONG.endswith(pieces[-1])
    spans = windows.spans[: len(pieces)]
    assert [LONG[a:b] for a, b in spans] == pieces
    assert all(a1 < b0 for (_, b0), (a1, _) in zip(spans, spans[1:])) and spans == sorted(spans)  # they overlap
    tokenizer = predictor.backend.tokenizer
    assert all(len(tokenizer(p)["input_ids"]) <= 24 for p in pieces)  # nothing is cut off by truncation
    assert windows.tokens[0] == len(tokenizer(LONG, add_special_tokens=False)["input_ids"])


def test_a_long_text_is_predicted_by_the_document_rule_over_its_windows(tiny_model_dir):
    from kazstance.documents import aggregate

    predictor = Predictor.from_dir(tiny_model_dir)
    predictor.backend.max_length = 24
    prediction, short = predictor.predict([LONG, "қысқа"])
    pieces = predictor.windows([LONG]).pieces
    label, scores, _ = aggregate(predictor.predict(pieces), predictor.labels)
    assert (prediction.label, prediction.windows) == (label, len(pieces))
    assert prediction.scores == pytest.approx(scores, abs=1e-5)
    assert short.windows == 1 and short.tokens == len(predictor.backend.tokenizer("қысқа", add_special_tokens=False)["input_ids"])


def test_a_long_text_takes_the_document_rule_for_its_platform_too(tiny_model_dir):
    from kazstance.documents import aggregate_platform

    predictor = Predictor.from_dir(tiny_model_dir)
    predictor.backend.max_length = 24
    prediction = predictor.predict([LONG])[0]
    platform, scores = aggregate_platform(predictor.predict(predictor.windows([LONG]).pieces))
    assert prediction.platform == platform and prediction.platform_scores == pytest.approx(scores, abs=1e-5)


def test_stance_and_platform_are_separate_softmaxes_and_the_temperature_is_the_stances(tiny_model_dir):
    from kazstance.predictor import softmax

    predictor = Predictor.from_dir(tiny_model_dir)
    texts = ["TikTok-ты жабу керек", "Telegram"]
    full = predictor.backend.logits(texts)  # all outputs: 3 stance, then the platforms
    assert full.shape == (2, 3 + len(predictor.platforms))
    predictor.temperature = 2.5
    for prediction, row in zip(predictor.predict(texts), full):
        assert list(prediction.scores.values()) == pytest.approx(softmax(row[:3] / 2.5), abs=1e-5)
        assert list(prediction.platform_scores.values()) == pytest.approx(softmax(row[3:]), abs=1e-5)
    assert predictor.logits(texts) == pytest.approx(full[:, :3], abs=1e-5)


def test_a_model_without_a_platform_head_names_no_platform(tmp_path):
    from conftest import make_untrained_classifier

    predictor = Predictor.from_dir(make_untrained_classifier(tmp_path, platforms=()))
    prediction = predictor.predict(["TikTok"])[0]
    assert predictor.platforms == () and prediction.platform is None and prediction.platform_scores is None


def test_predict_each_isolates_a_text_that_cannot_be_predicted(tiny_model_dir):
    from kazstance.predictor import EmptyText

    good, bad, also_good = Predictor.from_dir(tiny_model_dir).predict_each(["ok", "\u200b\u00ad", "TikTok"])
    assert isinstance(bad, EmptyText) and "text 1 is empty" in str(bad)  # its own index, not the retry's
    assert good.label and also_good.label


def test_unpaired_surrogates_are_replaced_before_the_tokenizer(tiny_model_dir):
    prediction = Predictor.from_dir(tiny_model_dir).predict(["TikTok \udcd0 бұғаттау"])[0]
    assert prediction.label in ("support", "oppose", "neutral")


def test_count_windows_agrees_with_the_windows_read(tiny_model_dir):
    from kazstance.predictor import count_windows

    predictor = Predictor.from_dir(tiny_model_dir)
    texts = [LONG, "қысқа", LONG[:300]]
    expected = len(predictor.windows(texts).pieces)
    assert count_windows(predictor.backend.tokenizer, predictor.backend.max_length, texts) == expected > 3
