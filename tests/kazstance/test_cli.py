"""The `kazstance` command line: every job has a subcommand; predict prints labels and scores."""

import json

from typer.testing import CliRunner

from kazstance.cli import app

runner = CliRunner()


def test_every_job_has_a_subcommand():
    out = runner.invoke(app, ["--help"]).output
    for command in ("base-model", "data", "train", "evaluate", "predict", "score", "serve"):
        assert command in out
    assert "check" in runner.invoke(app, ["data", "--help"]).output


def test_predict_json_output(tiny_model_dir):
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--json", "TikTok-ты жабу керек", "Запрет не нужен"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [p["text"] for p in body["predictions"]] == ["TikTok-ты жабу керек", "Запрет не нужен"]
    assert all(set(p["scores"]) == {"support", "oppose", "neutral"} for p in body["predictions"])


def test_predict_plain_output_has_one_line_per_text(tiny_model_dir):
    result = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "бір", "екі"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] in {"support", "oppose", "neutral"}


def test_predict_with_missing_model_fails_cleanly(tmp_path):
    result = runner.invoke(app, ["predict", "--model", str(tmp_path), "text"])
    assert result.exit_code == 2
    assert "not a kazstance model folder" in result.output


def test_train_with_bad_config_names_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("run_name: x\nmodel:\n  kind: bert\n")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2
    assert "model.kind" in result.output
