"""Specification of `kazstance score`: options, every input kind at once, summary and exit codes."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from score_data import ALL_KINDS, TEXTS, read_rows, write

runner = CliRunner()


def score(*args: str):
    # One torch thread: see score_data.tiny_predictor.
    return runner.invoke(app, ["score", *map(str, args), "--no-progress", "--threads", "1"])


def summary_counts(output: str) -> dict[str, float]:
    line = next(line for line in output.splitlines() if line.startswith("files:"))
    return {k.strip(): float(v) for k, v in re.findall(r"([a-z/ ]+): ([\d.]+)", line)}


def test_help_lists_every_option():
    result = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    for option in ("--output", "--model", "--text-field", "--id-field", "--unit", "--batch-size", "--keep-text",
                   "--resume", "--engine", "--ray-address", "--backend", "--threads"):
        assert option in result.output


def test_every_input_kind_at_once_with_bad_input_scores_and_summarises(tmp_path, tiny_model_dir):
    inputs = [write(kind, tmp_path / "in", name=f"k{i}") for i, kind in enumerate(ALL_KINDS)]
    (tmp_path / "in" / "broken.jsonl").write_bytes(b'{"text": "\xff"}\n{"text": ""}\n')
    out = tmp_path / "scores.parquet"
    result = score(tmp_path / "in", "--output", out, "--model", tiny_model_dir, "--keep-text", "--batch-size", 4)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    good = [r for r in rows if r["error"] is None]
    assert [r["text"] for r in good] == TEXTS * len(inputs)
    assert len(rows) == len(good) + 2
    counts = summary_counts(result.stdout)
    assert counts["files"] == len(inputs) + 1
    assert (counts["rows read"], counts["scored"], counts["errors"]) == (len(rows), len(good), 2)
    assert counts["rows/s"] > 0


def test_units_and_fields_are_options(tmp_path, tiny_model_dir):
    path = tmp_path / "posts.csv"
    path.write_text('uid,body\n1,"Бұғаттау керек. Бәрі VPN қолданады."\n', encoding="utf-8")
    out = tmp_path / "s.jsonl"
    result = score(path, "-o", out, "--model", tiny_model_dir, "--unit", "sentence", "--text-field", "body",
                   "--id-field", "uid")
    assert result.exit_code == 0, result.output
    assert [(r["id"], r["sentence"]) for r in read_rows(out)] == [("1", 1), ("1", 2)]
    assert "text" not in read_rows(out)[0]  # text is only copied with --keep-text


def test_exit_code_is_1_when_nothing_could_be_read(tmp_path, tiny_model_dir):
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    out = tmp_path / "scores.csv"
    result = score(tmp_path / "a.pdf", tmp_path / "missing.jsonl", "-o", out, "--model", tiny_model_dir)
    assert result.exit_code == 1
    assert "nothing could be read" in result.output
    assert len(read_rows(out)) == 2  # the error rows still say why


def test_exit_code_is_0_when_records_were_read_even_if_none_scored(tmp_path, tiny_model_dir):
    path = tmp_path / "empty.jsonl"
    path.write_text('{"text": ""}\n')
    assert score(path, "-o", tmp_path / "o.jsonl", "--model", tiny_model_dir).exit_code == 0


def test_exit_code_is_2_when_the_model_cannot_load(tmp_path, bentoml_home):
    result = score(write("jsonl", tmp_path), "-o", tmp_path / "o.parquet", "--model", tmp_path / "no-such-model")
    assert result.exit_code == 2
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("bad", [["--unit", "paragraph"], ["--engine", "spark"], ["-o", "scores.xlsx"]])
def test_exit_code_is_2_on_a_bad_option(tmp_path, tiny_model_dir, bad):
    args = [write("jsonl", tmp_path), "-o", tmp_path / "o.jsonl", "--model", tiny_model_dir]
    result = score(*args, *bad)
    assert result.exit_code == 2, result.output


def test_resume_with_other_options_is_refused(tmp_path, tiny_model_dir):
    from serving.writers import PartWriter, work_dir

    path, out = write("jsonl", tmp_path), tmp_path / "o.jsonl"
    PartWriter(out, pa.schema([]), {"an": "older run"}).commit(pa.table({"error": []}), {})
    assert work_dir(out).exists()
    result = score(path, "-o", out, "--model", tiny_model_dir, "--resume")
    assert result.exit_code == 2 and "rerun without --resume" in result.output


def test_each_row_names_the_platform_and_a_document_takes_the_platform_rule(tmp_path, tiny_model_dir):
    from conftest import TINY_PLATFORMS
    from kazstance.documents import aggregate_platform
    from kazstance.predictor import Predictor
    from kazstance.text import split_sentences

    doc = "TikTok-ты бұғаттау керек. Telegram да жабылсын. Интернет керек."
    path = tmp_path / "posts.jsonl"
    path.write_text(json.dumps({"id": "d1", "text": doc}, ensure_ascii=False) + "\n", encoding="utf-8")
    for unit in ("sentence", "document"):
        out = tmp_path / f"{unit}.jsonl"
        assert score(path, "-o", out, "--model", tiny_model_dir, "--unit", unit).exit_code == 0
        rows = read_rows(out)
        assert all(r["platform"] in TINY_PLATFORMS and 0 < r["platform_score"] <= 1 for r in rows)
    predictions = Predictor.from_dir(tiny_model_dir).predict(split_sentences(doc))
    platform, scores = aggregate_platform(predictions)
    assert [r["platform"] for r in read_rows(tmp_path / "sentence.jsonl")] == [p.platform for p in predictions]
    assert read_rows(tmp_path / "document.jsonl")[0]["platform"] == platform
    assert read_rows(tmp_path / "document.jsonl")[0]["platform_score"] == pytest.approx(scores[platform], abs=1e-6)
    clash = score(path, "-o", tmp_path / "x.jsonl", "--model", tiny_model_dir, "--keep-field", "platform")
    assert clash.exit_code == 2 and "platform" in clash.output
