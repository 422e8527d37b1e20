"""The HTTP service and the batch scorer run on the int8 backend and give the predictor's int8 answers."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from bento_server import running_service
from conftest import SAMPLE_TEXTS
from kazstance.predictor import Predictor
from score_data import read_rows, write
from serving.score import score_files


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    from training.export import export_model

    folder = tmp_path_factory.mktemp("int8-serving") / "model"
    shutil.copytree(tiny_model_dir, folder)
    validation = folder.parent / "validation.jsonl"  # int8 gets a temperature of its own from it
    labels = ["support", "oppose", "neutral", "oppose", "support", "neutral", "oppose", "support"]
    validation.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                                  for t, label in zip(SAMPLE_TEXTS, labels)), encoding="utf-8")
    export_model(folder, validation=validation)
    return folder


@pytest.fixture(scope="module")
def int8_server(exported_dir, bentoml_home):
    with running_service(exported_dir, bentoml_home, "tiny-int8", KAZSTANCE_BACKEND="int8") as running:
        yield running


def test_the_service_answers_with_the_int8_predictor(int8_server, exported_dir):
    r = httpx.post(f"{int8_server['url']}/predict", json={"texts": SAMPLE_TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == int8_server["tag"]
    expected = Predictor.load(exported_dir, backend="int8").predict(SAMPLE_TEXTS)
    assert [p["label"] for p in body["predictions"]] == [p.label for p in expected]
    for got, want in zip(body["predictions"], expected):
        assert got["scores"] == pytest.approx(want.scores, abs=1e-4)


def test_metadata_reports_the_backend_and_the_temperature_it_serves_with(int8_server, exported_dir):
    from kazstance.int8 import SIDECAR

    body = httpx.get(f"{int8_server['url']}/metadata", timeout=30).json()
    assert body["backend"] == "int8"
    assert body["temperature"] == pytest.approx(json.loads((exported_dir / SIDECAR).read_text())["temperature"])


def test_the_scorer_runs_on_the_int8_backend(exported_dir, tmp_path):
    out = tmp_path / "scores.jsonl"
    summary = score_files([write("jsonl", tmp_path)], out, model=str(exported_dir), backend="int8")
    assert (summary.rows_read, summary.scored, summary.errors) == (len(SAMPLE_TEXTS), len(SAMPLE_TEXTS), 0)
    expected = Predictor.load(exported_dir, backend="int8").predict(SAMPLE_TEXTS)
    rows = read_rows(out)
    assert [r["label"] for r in rows] == [p.label for p in expected]
    labels = list(expected[0].scores)
    for row, want in zip(rows, expected):
        assert {lab: row[f"score_{lab}"] for lab in labels} == pytest.approx(want.scores, abs=1e-4)


def test_the_scorer_refuses_an_unexported_model_before_reading_anything(tiny_model_dir, tmp_path):
    from serving.score import ModelLoadError

    with pytest.raises(ModelLoadError, match="kazstance export --model"):
        score_files([write("jsonl", tmp_path)], tmp_path / "scores.jsonl", model=str(tiny_model_dir), backend="int8")
