"""Specification of the scoring engine and its Python API (`serving.score.score_files`).

Most tests use a keyword-driven fake backend inside the real `Predictor`, so the expected labels
are known and the label order differs from the default one (nothing may hard-code it).
"""

from __future__ import annotations

import numpy as np
import pytest

from kazstance.documents import predict_document
from kazstance.predictor import Predictor
from score_data import TEXTS, read_rows, tiny_predictor, write
from serving.score import score_files

LABELS = ("neutral", "oppose", "support")  # not the order a fresh model uses, on purpose


class KeywordBackend:
    """'керек' (needed) reads as support, 'VPN' as oppose, anything else neutral; 💥 breaks the model."""

    labels = LABELS

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    def logits(self, texts: list[str]) -> np.ndarray:
        if any("💥" in t for t in texts):
            raise RuntimeError("model exploded")
        rows = []
        for t in texts:
            hot = 2 if "керек" in t else 1 if "VPN" in t else 0
            rows.append([4.0 if i == hot else 0.0 for i in range(3)])
        return np.array(rows, dtype=np.float32)


@pytest.fixture
def keyword_predictor() -> Predictor:
    return Predictor(backend=KeywordBackend(), name="keyword:test", batch_size=4)


def test_every_record_gets_a_row_with_its_label_scores_and_model(tmp_path, keyword_predictor):
    out = tmp_path / "scores.parquet"
    summary = score_files([write("jsonl", tmp_path)], out, predictor=keyword_predictor, keep_text=True)
    rows = read_rows(out)
    assert [r["text"] for r in rows] == TEXTS
    assert list(rows[0]) == ["source", "record", "id", "text", "label", "score_neutral", "score_oppose",
                             "score_support", "tokens", "windows", "model", "error"]
    expected = keyword_predictor.predict(TEXTS)
    assert [r["label"] for r in rows] == [p.label for p in expected]
    assert [{lab: r[f"score_{lab}"] for lab in LABELS} for r in rows] == [p.scores for p in expected]
    assert {r["model"] for r in rows} == {"keyword:test"} and {r["error"] for r in rows} == {None}
    assert (summary.rows_read, summary.scored, summary.errors, summary.files) == (len(TEXTS), len(TEXTS), 0, 1)


def test_rows_out_equal_rows_read_whatever_is_wrong_with_them(tmp_path, keyword_predictor):
    write("zip", tmp_path / "in", name="good")
    (tmp_path / "in" / "bad.jsonl").write_bytes(b'{"text": "VPN \xff"}\n{oops\n{"id": 3}\n{"text": ""}\n{"text": "\xf0\x9f\x92\xa5"}\n'
                                                b'{"text": "Ok VPN"}\n')
    (tmp_path / "in" / "notes.docx").write_bytes(b"binary")
    out = tmp_path / "scores.jsonl"
    summary = score_files([tmp_path / "in", tmp_path / "missing.csv"], out, predictor=keyword_predictor)
    rows = read_rows(out)
    assert len(rows) == summary.rows_written == summary.rows_read == len(TEXTS) + 6 + 1 + 1
    assert summary.scored + summary.errors == summary.rows_written
    errors = [r["error"] for r in rows if r["error"]]
    assert [e.split(":")[0] for e in errors] == ["invalid UTF-8 at byte 14", "malformed JSON", "missing text field 'text'",
                                                 "empty text", "scoring failed", "unsupported file type", "no such file"]
    assert summary.errors == len(errors) and summary.unreadable == 2
    # one failing text does not take its chunk down with it
    assert [r["label"] for r in rows if r["source"].endswith("bad.jsonl") and not r["error"]] == ["oppose"]


def test_sentence_unit_gives_one_row_per_sentence(tmp_path, keyword_predictor):
    path = tmp_path / "posts.jsonl"
    path.write_text('{"id": "p1", "text": "Бұғаттау керек. Бәрі VPN қолданады! Министр үнсіз."}\n{"id": "p2", "text": ""}\n',
                    encoding="utf-8")
    out = tmp_path / "s.jsonl"
    summary = score_files([path], out, unit="sentence", keep_text=True, predictor=keyword_predictor)
    rows = read_rows(out)
    assert [(r["id"], r["sentence"], r["text"], r["label"]) for r in rows] == [
        ("p1", 1, "Бұғаттау керек.", "support"), ("p1", 2, "Бәрі VPN қолданады!", "oppose"),
        ("p1", 3, "Министр үнсіз.", "neutral"), ("p2", None, None, None)]
    assert (summary.rows_read, summary.rows_written, summary.scored, summary.errors) == (2, 4, 3, 1)


def test_document_unit_uses_the_http_services_rule(tmp_path, keyword_predictor):
    docs = ["Бұғаттау керек. Шектеу керек. Бәрі VPN қолданады.",  # support outweighs oppose
            "Бұғаттау керек. Бәрі VPN қолданады.",                 # balanced: neutral
            "Министр үнсіз. Депутат сөйледі."]                     # no evidence: neutral
    for i, doc in enumerate(docs):
        (tmp_path / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    out = tmp_path / "d.parquet"
    score_files([tmp_path], out, unit="document", keep_text=True, predictor=keyword_predictor)
    rows = read_rows(out)
    for row, doc in zip(rows, docs):
        expected = predict_document(keyword_predictor, doc)
        assert row["label"] == expected.label
        assert {lab: row[f"score_{lab}"] for lab in LABELS} == expected.scores
        assert row["sentences"] == len(expected.sentences)
        assert row["evidence"] == ("\n".join(expected.sentences[i][0] for i in expected.evidence) or None)
    assert [r["label"] for r in rows] == ["support", "neutral", "neutral"]


def test_the_real_predictor_scores_match_predict_and_sum_to_one(tmp_path, tiny_model_dir):
    predictor = tiny_predictor(tiny_model_dir)
    out = tmp_path / "scores.parquet"
    score_files([write("csv.bz2", tmp_path)], out, predictor=predictor)
    rows = read_rows(out)
    expected = predictor.predict(TEXTS)
    assert [r["label"] for r in rows] == [p.label for p in expected]
    for row, p in zip(rows, expected):
        assert [row[f"score_{lab}"] for lab in predictor.labels] == pytest.approx(list(p.scores.values()), abs=2e-6)
        assert sum(row[f"score_{lab}"] for lab in predictor.labels) == pytest.approx(1, abs=1e-5)


def test_score_files_loads_a_model_by_reference_like_the_cli(tmp_path, tiny_model_dir):
    out = tmp_path / "scores.csv"
    summary = score_files([write("txt", tmp_path)], out, model=str(tiny_model_dir), batch_size=3, threads=1)
    assert summary.scored == len(TEXTS) and summary.output == out
    assert {r["model"] for r in read_rows(out)} == {tiny_model_dir.name}


def test_every_output_format_holds_the_same_rows(tmp_path, keyword_predictor):
    inputs = [write("tar.gz", tmp_path / "in")]
    tables = {}
    for suffix in ("parquet", "jsonl", "csv"):
        score_files(inputs, tmp_path / f"out.{suffix}", predictor=keyword_predictor, keep_text=True)
        tables[suffix] = read_rows(tmp_path / f"out.{suffix}")
    assert tables["parquet"] == tables["jsonl"]
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in tables["jsonl"]]
    assert tables["csv"] == as_text


def test_a_text_over_the_models_window_is_scored_whole_in_windows(tmp_path, tiny_model_dir):
    predictor = Predictor.from_dir(tiny_model_dir)
    long = " ".join(["TikTok-ты бұғаттау керек, балаларға зияны көп."] * 40)  # over 200 tokens; the window is 64
    source = tmp_path / "posts.jsonl"
    source.write_text(f'{{"id": "long", "text": "{long}"}}\n{{"id": "short", "text": "TikTok"}}\n', encoding="utf-8")
    score_files([source], tmp_path / "out.jsonl", predictor=predictor)
    rows = {r["id"]: r for r in read_rows(tmp_path / "out.jsonl")}
    expected = predictor.predict([long])[0]
    assert rows["long"]["windows"] == expected.windows > 1 and rows["long"]["tokens"] == expected.tokens
    assert rows["long"]["label"] == expected.label and rows["short"]["windows"] == 1


def test_kept_fields_are_carried_from_every_format_into_the_output(tmp_path, keyword_predictor):
    import datetime as dt
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "j1", "text": "VPN", "date": "2024-03-01",
                                                  "meta": {"outlet": "kaz.inform.kz"}, "n": 7}) + "\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("id,text,date,n\nc1,керек,01.03.2024,8\n", encoding="utf-8")
    pq.write_table(pa.table({"id": ["p1"], "text": ["TikTok"], "date": [dt.date(2024, 3, 1)], "n": [9]}), tmp_path / "c.parquet")
    (tmp_path / "d.jsonl").write_text("{broken\n", encoding="utf-8")
    out = tmp_path / "scores.parquet"
    score_files(sorted(tmp_path.glob("[abcd].*")), out, predictor=keyword_predictor,
                keep_fields=["date", "meta.outlet", "n"])
    rows = read_rows(out)
    assert list(rows[0])[:6] == ["source", "record", "id", "date", "meta.outlet", "n"]
    assert [(r["id"], r["date"], r["meta.outlet"], r["n"]) for r in rows] == [
        ("j1", "2024-03-01", "kaz.inform.kz", "7"), ("c1", "01.03.2024", None, "8"), ("p1", "2024-03-01", None, "9"),
        (None, None, None, None)]  # the error row keeps its place
    assert rows[3]["error"].startswith("malformed JSON")


@pytest.mark.parametrize("name", ["label", "score_support", "text", "error", "windows"])
def test_a_kept_field_may_not_shadow_an_output_column(tmp_path, keyword_predictor, name):
    with pytest.raises(ValueError, match="already"):
        score_files([write("jsonl", tmp_path)], tmp_path / "out.jsonl", predictor=keyword_predictor, keep_fields=[name])
