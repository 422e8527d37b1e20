"""`kazstance evaluate`: exact numbers on a model whose predictions are known, and clear errors."""

import json
import math

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

from kazstance.cli import app
from kazstance.modeling import META_FILE
from training.data import DataError
from training.evaluate import evaluate_file


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory):
    """A TF-IDF-format model with hand-set weights: 'alpha' -> support, 'beta' -> oppose, 'gamma' -> neutral."""
    path = tmp_path_factory.mktemp("keyword_model")
    spec = {"vectorizer": {"analyzer": "word", "lowercase": True},
            "vocabulary": {"alpha": 0, "beta": 1, "gamma": 2},
            "id2label": {"0": "support", "1": "oppose", "2": "neutral"}}
    (path / "tfidf.json").write_text(json.dumps(spec))
    save_file({"idf": np.ones(3), "coef": 10.0 * np.eye(3), "intercept": np.zeros(3)}, str(path / "tfidf.safetensors"))
    (path / META_FILE).write_text(json.dumps({"temperature": 1.0, "max_length": 64}))
    return path


# (true label, text, lang): 7 of 10 right; confusion rows (true) s:[3,1,0] o:[0,2,1] n:[1,0,2].
ROWS = [("support", "alpha", "kk")] * 3 + [("support", "beta", "kk"), ("oppose", "beta", "kk"),
        ("oppose", "beta one", "ru"), ("oppose", "gamma", "ru"), ("neutral", "gamma", "ru"),
        ("neutral", "gamma two", "ru"), ("neutral", "alpha", "ru")]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_metrics_on_known_predictions_are_exact(keyword_model, tmp_path):
    data = write_jsonl(tmp_path / "eval.jsonl", [{"text": t, "label": y, "lang": lang} for y, t, lang in ROWS])
    m = evaluate_file(keyword_model, data, out_dir=tmp_path / "out")
    confidence = math.exp(10) / (math.exp(10) + 2)
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    assert m["per_class"]["support"]["precision"] == pytest.approx(0.75)
    assert m["per_class"]["oppose"]["recall"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert m["f_avg_support_oppose"] == pytest.approx((0.75 + 2 / 3) / 2)
    assert m["ece"] == pytest.approx(confidence - 0.7, abs=1e-6)
    assert m["by_lang"]["kk"]["n"] == 5 and m["by_lang"]["kk"]["accuracy"] == pytest.approx(0.8)
    assert m["by_lang"]["ru"]["n"] == 5 and m["by_lang"]["ru"]["accuracy"] == pytest.approx(0.6)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert written["macro_f1"] == pytest.approx(m["macro_f1"])
    assert (tmp_path / "out" / "report.md").read_text().count("| support |") == 1
    assert (tmp_path / "out" / "confusion_matrix.png").stat().st_size > 1000


def test_csv_and_parquet_with_renamed_columns_give_the_same_numbers(keyword_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "eval.csv"
    csv_path.write_text("statement,gold\n" + "".join(f"{t},{y}\n" for y, t, _ in ROWS), encoding="utf-8")
    pq_path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({"statement": [t for _, t, _ in ROWS], "gold": [y for y, _, _ in ROWS]}), pq_path)
    for path in (csv_path, pq_path):
        m = evaluate_file(keyword_model, path, out_dir=tmp_path / path.suffix[1:], text_field="statement", label_field="gold")
        assert m["accuracy"] == pytest.approx(0.7)


@pytest.mark.parametrize("content, message", [
    ('{"text": "alpha", "label": "support"}\n{"text": "beta", "label": "against"}\n', r"bad\.jsonl:2: label 'against'"),
    ('{"text": "alpha", "label": "support"}\n{"txt": "beta", "label": "oppose"}\n', r"bad\.jsonl:2: missing column 'text'"),
    ("", r"bad\.jsonl: the file has no rows"),
    ('{"text": "alpha", "label": "support"}\n{"text": "beta", "label": \n', r"bad\.jsonl:2: broken JSON line"),
    ('{"text": "  ", "label": "support"}\n', r"bad\.jsonl:1: empty or non-text 'text'"),
])
def test_bad_files_fail_with_file_and_row(keyword_model, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        evaluate_file(keyword_model, path, out_dir=tmp_path / "out")


def test_cli_reports_bad_file_cleanly(keyword_model, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "alpha", "label": "maybe"}])
    result = CliRunner().invoke(app, ["evaluate", "--model", str(keyword_model), "--data", str(path)])
    assert result.exit_code == 2
    assert "bad.jsonl:1" in result.output and "maybe" in result.output


def test_cli_prints_summary(keyword_model, tmp_path):
    data = write_jsonl(tmp_path / "eval.jsonl", [{"text": t, "label": y} for y, t, _ in ROWS])
    result = CliRunner().invoke(app, ["evaluate", "--model", str(keyword_model), "--data", str(data), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert '"accuracy": 0.7' in result.output


def test_clear_items_are_scored_apart_and_only_selects(keyword_model, tmp_path):
    # The 3 wrong predictions of ROWS (rows 4, 7, 10) are marked borderline: on the clear items
    # the keyword model is perfect, and --only clarity=clear gives the same numbers.
    rows = [{"text": t, "label": y, "lang": lang, "clarity": "borderline" if i in (3, 6, 9) else "clear"}
            for i, (y, t, lang) in enumerate(ROWS)]
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    m = evaluate_file(keyword_model, data, out_dir=tmp_path / "all")
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["clear"]["n"] == 7 and m["clear"]["accuracy"] == 1.0 and m["clear"]["macro_f1"] == 1.0
    only = evaluate_file(keyword_model, data, out_dir=tmp_path / "clear", only=["clarity=clear"])
    assert only["n"] == 7 and only["macro_f1"] == 1.0 and "clear" not in only
    with pytest.raises(DataError, match="no record matches"):
        evaluate_file(keyword_model, data, out_dir=tmp_path / "none", only=["clarity=unsure"])
    with pytest.raises(DataError, match="FIELD=VALUE"):
        evaluate_file(keyword_model, data, out_dir=tmp_path / "bad", only=["clarity"])
    result = CliRunner().invoke(app, ["evaluate", "--model", str(keyword_model), "--data", str(data),
                                      "--out", str(tmp_path / "cli"), "--only", "clarity=clear"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == 7
