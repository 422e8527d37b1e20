"""Word-level occlusion explanations (kazstance/explain.py) and `kazstance predict --explain`.

Most tests put a keyword-driven backend inside the real `Predictor`: its logits depend only on
which keywords a text holds, so the right attributions are known in advance.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from kazstance.explain import explain, groups, top_words, words
from kazstance.predictor import EmptyText, Predictor

LABELS = ("neutral", "oppose", "support")  # not a fresh model's order, on purpose


class KeywordBackend:
    """'керек' (needed) reads as support, 'VPN' as oppose, anything else neutral; records every
    call so tests can count what the model was asked to read."""

    labels = LABELS

    def __init__(self):
        self.calls: list[list[str]] = []

    def lengths(self, texts):
        return [len(t) for t in texts]

    def logits(self, texts):
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            hot = 2 if "керек" in t else 1 if "VPN" in t else 0
            rows.append([4.0 if i == hot else 0.0 for i in range(3)])
        return np.array(rows, dtype=np.float32)

    @property
    def texts_read(self) -> int:
        return sum(map(len, self.calls))


@pytest.fixture
def backend() -> KeywordBackend:
    return KeywordBackend()


@pytest.fixture
def predictor(backend) -> Predictor:
    return Predictor(backend=backend, name="keyword:test", batch_size=1024)


def by_word(explanation) -> dict[str, float]:
    return {w["word"]: w["attribution"] for w in explanation.words}


def test_words_are_whole_words_whose_spans_index_the_text(tiny_model_dir):
    text = "TikTok-ты бұғаттау керек, «ата-аналар» қарсы емес! Запрет не нужен."
    (e,) = explain(Predictor.from_dir(tiny_model_dir), [text])
    assert [w["word"] for w in e.words] == ["TikTok-ты", "бұғаттау", "керек", "ата-аналар", "қарсы", "емес",
                                            "Запрет", "не", "нужен"]  # not subword pieces, no punctuation
    assert e.text == text and all(text[w["start"]:w["end"]] == w["word"] for w in e.words)
    assert e.method == "occlusion" and e.label in e.scores and e.occlusions == len(e.words)
    assert e.scores == Predictor.from_dir(tiny_model_dir).predict([text])[0].scores


def test_spans_index_the_cleaned_text_when_the_input_is_not_clean(predictor):
    (e,) = explain(predictor, ["  Бұғаттау\u200b   керек \n"])
    assert e.text == "Бұғаттау керек"
    assert [(w["word"], e.text[w["start"]:w["end"]]) for w in e.words] == [("Бұғаттау", "Бұғаттау"), ("керек", "керек")]


def test_the_keyword_that_drives_the_label_gets_the_top_attribution(predictor):
    (e,) = explain(predictor, ["Менің ойымша бұл платформаны жабу керек, балалар үшін."])
    assert e.label == "support"
    attributions = by_word(e)
    assert max(attributions, key=attributions.get) == "керек"
    p = e.scores["support"]
    # without 'керек' the text reads neutral: support falls to the neutral row's support probability
    assert attributions["керек"] == pytest.approx(p - (1 - p) / 2, abs=1e-5)
    assert all(a == 0 for w, a in attributions.items() if w != "керек")
    assert [e.words[j]["word"] for j in top_words(e, 1)] == ["керек"]


def test_a_word_against_the_prediction_gets_a_negative_attribution(predictor):
    # 'керек' wins over 'VPN'; removing 'керек' makes it oppose, removing 'VPN' changes nothing
    (e,) = explain(predictor, ["VPN бар, бірақ жабу керек"])
    assert e.label == "support" and by_word(e)["керек"] > 0 and by_word(e)["VPN"] == 0
    (e,) = explain(predictor, ["Бәрі VPN қолданады"])
    assert e.label == "oppose" and by_word(e)["VPN"] > 0


def test_a_long_text_is_occluded_in_groups_within_the_bound(predictor, backend):
    filler = [f"сөз{i}" for i in range(100)]
    text = " ".join(filler[:57] + ["керек"] + filler[57:])
    (e,) = explain(predictor, [text], max_occlusions=10)
    assert backend.texts_read == 10 + 1  # the original and one variant per group
    assert e.occlusions == 10 and len(e.words) == 101  # still every word, each with its group's number
    hot = {w["word"] for w in e.words if w["attribution"] > 0}
    assert "керек" in hot and 5 <= len(hot) <= 15  # 'керек' and the rest of its group
    sizes = [len(g) for g in groups(101, 10)]
    assert sum(sizes) == 101 and max(sizes) - min(sizes) <= 1


def test_a_short_text_is_occluded_word_by_word(predictor, backend):
    (e,) = explain(predictor, ["бір екі үш керек"], max_occlusions=10)
    assert backend.texts_read == 4 + 1 and e.occlusions == 4


def test_several_texts_are_explained_in_one_model_call(predictor, backend):
    texts = ["Жабу керек.", "Бәрі VPN арқылы кіреді.", "Министр бұл мәселені айтты."]
    explanations = explain(predictor, texts)
    assert len(backend.calls) == 1  # originals and all variants batched together
    assert backend.texts_read == sum(1 + len(words(t)) for t in texts)
    assert [e.label for e in explanations] == ["support", "oppose", "neutral"]  # input order kept


def test_edge_cases_one_word_no_words_and_empty_text(predictor):
    one, none = explain(predictor, ["керек", "!!! ???"])
    # nothing is left without the only word: it is compared with the uninformed (uniform) prior
    assert by_word(one)["керек"] == pytest.approx(one.scores["support"] - 1 / 3, abs=1e-5)
    assert none.words == [] and none.occlusions == 0 and none.label == "neutral"
    with pytest.raises(EmptyText, match="text 1 is empty"):
        explain(predictor, ["керек", " \u200b "])


def test_deleting_the_top_word_flips_the_label_more_often_than_a_random_word(predictor):
    """A mini faithfulness check: the words the explanation points at are the ones the model uses."""
    rng = random.Random(13)
    fillers = "бұл мәселе бойынша депутаттар мен ата-аналар пікірі әртүрлі болды".split()
    texts = []
    for i in range(30):
        ws = rng.sample(fillers, 6)
        ws.insert(rng.randrange(7), ["керек", "VPN"][i % 2])
        texts.append(" ".join(ws))
    explanations = explain(predictor, texts)

    def cut(e, j):
        return e.text[:e.words[j]["start"]] + e.text[e.words[j]["end"]:]

    top = [cut(e, top_words(e, 1)[0]) for e in explanations]
    rand = [cut(e, rng.randrange(len(e.words))) for e in explanations]
    flipped_top = np.mean([p.label != e.label for p, e in zip(predictor.predict(top), explanations)])
    flipped_random = np.mean([p.label != e.label for p, e in zip(predictor.predict(rand), explanations)])
    assert flipped_top == 1.0 and flipped_random < 0.5


runner = CliRunner()


def test_cli_explain_json_adds_an_explanation_to_each_prediction(tiny_model_dir):
    texts = ["TikTok-ты жабу керек", "Запрет не нужен"]
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--json", "--explain", *texts])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["predictions"]
    assert [r["text"] for r in rows] == texts
    for text, row in zip(texts, rows):
        assert set(row) == {"text", "label", "scores", "platform", "platform_scores", "tokens", "windows", "explanation"}
        assert row["explanation"]["method"] == "occlusion" and row["explanation"]["text"] == text
        assert [w["word"] for w in row["explanation"]["words"]] == text.split()
        assert all(set(w) == {"word", "start", "end", "attribution"} for w in row["explanation"]["words"])
    plain = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--json", *texts])
    assert all("explanation" not in r for r in json.loads(plain.stdout)["predictions"])


def test_cli_explain_prints_each_word_with_its_attribution(tiny_model_dir):
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--explain", "TikTok-ты жабу керек"])
    assert result.exit_code == 0, result.output
    label_line, words_line = result.stdout.strip().splitlines()
    assert label_line.split()[0] in {"support", "oppose", "neutral"}
    assert words_line.strip().startswith("TikTok-ты(") and words_line.count("(") == 3
