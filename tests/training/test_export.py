"""`kazstance export`: a folder gets the int8 artefact beside it; a store tag gets a new version with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_TEXTS
from kazstance.cli import app
from kazstance.int8 import ARTEFACT, SIDECAR, weights_digest
from kazstance.predictor import Predictor
from training.export import ExportError, export_model


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_exporting_a_folder_writes_the_artefact_tied_to_its_weights(model_copy):
    result = export_model(model_copy)
    assert result.tag is None and result.path == model_copy.resolve()
    assert (model_copy / ARTEFACT).is_file()
    sidecar = json.loads((model_copy / SIDECAR).read_text())
    assert sidecar["weights_sha256"] == weights_digest(model_copy)
    # the fp32 graph reproduces torch; int8 moves a logit by quantisation error only
    assert sidecar["probe_max_logit_error"]["fp32_onnx"] < 1e-4
    assert sidecar["probe_max_logit_error"]["int8"] < 0.05
    # and the folder now reloads on the int8 backend
    assert len(Predictor.load(model_copy, backend="int8").predict(SAMPLE_TEXTS)) == len(SAMPLE_TEXTS)


def test_exporting_a_tag_adds_a_new_version_and_leaves_the_original_untouched(model_copy, bentoml_home):
    import bentoml

    from training.registry import register

    meta = json.loads((model_copy / "kazstance.json").read_text())
    original = register(model_copy, {"run_name": "tiny", "kind": "transformer", **meta})

    result = CliRunner().invoke(app, ["export", "--model", original, "--format", "onnx-int8"])
    assert result.exit_code == 0, result.output

    latest = bentoml.models.get("kazstance:latest")
    assert str(latest.tag) != original
    assert latest.info.metadata["int8_from"] == original
    assert latest.info.metadata["run_name"] == "tiny"  # the original's metadata carries over
    assert not (Path(bentoml.models.get(original).path) / ARTEFACT).exists()
    predictor = Predictor.load(str(latest.tag), backend="int8")
    assert predictor.name == str(latest.tag)
    assert len(predictor.predict(SAMPLE_TEXTS)) == len(SAMPLE_TEXTS)


def test_unknown_formats_and_baseline_models_are_refused(model_copy, tmp_path):
    with pytest.raises(ExportError, match="unknown format"):
        export_model(model_copy, "tflite")
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "kazstance.json").write_text("{}")
    (baseline / "tfidf.json").write_text("{}")
    with pytest.raises(ExportError, match="TF-IDF"):
        export_model(baseline)


def test_the_cli_reports_a_missing_model_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["export", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "error" in result.output


def test_layers_int8_would_hurt_stay_fp32_in_the_artefact(model_copy, tmp_path, monkeypatch):
    import training.int8_plan as plan

    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": t}) + "\n" for t in SAMPLE_TEXTS), encoding="utf-8")
    monkeypatch.setattr(plan, "OUTLIER_ERROR", -1.0)  # every layer counts as hurt ...
    monkeypatch.setattr(plan, "OUTLIER_FACTOR", 1e9)  # ... and none has a channel to split off: nothing is quantised  # every layer counts as hurt: nothing is quantised
    info = export_model(model_copy, calibration=calibration).info["quantisation"]
    token_level = set(info["activation_errors"])
    assert {"bert.pooler.dense", "classifier"} | token_level == set(info["fp32_layers"])
    assert info["calibration_texts"] == len(SAMPLE_TEXTS)
    fp32 = Predictor.load(model_copy).logits(SAMPLE_TEXTS)
    all_fp32 = Predictor.load(model_copy, backend="int8").logits(SAMPLE_TEXTS)
    # the fp32 graph through the int8 path; only the embedding table (a Gather) is still int8
    np.testing.assert_allclose(all_fp32, fp32, atol=1e-3)


def test_int8_gets_its_own_temperature_fitted_on_labelled_statements(model_copy, tmp_path):
    validation = tmp_path / "validation.jsonl"
    labels = ["support", "oppose", "neutral", "oppose", "support", "neutral", "oppose", "support"]
    validation.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                                  for t, label in zip(SAMPLE_TEXTS, labels)), encoding="utf-8")
    info = export_model(model_copy, validation=validation).info
    assert info["temperature"] > 0 and info["temperature_fitted_on"].startswith(str(validation))
    assert Predictor.load(model_copy, backend="int8").temperature == pytest.approx(info["temperature"])
    fp32_temperature = json.loads((model_copy / "kazstance.json").read_text()).get("temperature", 1.0)
    assert Predictor.load(model_copy).temperature == pytest.approx(fp32_temperature)  # fp32 keeps its own
    int8, fp32 = (Predictor.load(model_copy, backend=b).predict(SAMPLE_TEXTS) for b in ("int8", "torch"))
    agreement = sum(a.label == b.label for a, b in zip(int8, fp32)) / len(SAMPLE_TEXTS)
    assert info["validation_label_agreement"] == pytest.approx(agreement)  # what `--backend auto` trusts
    # Fitted on the stance outputs alone (the model has a platform head too: another softmax).
    from training.calibration import fit_temperature

    served = Predictor.load(model_copy, backend="int8")
    y = np.array([served.labels.index(label) for label in labels])
    assert info["temperature"] == pytest.approx(fit_temperature(served.logits(SAMPLE_TEXTS), y), rel=1e-4)


def test_an_artefact_without_a_temperature_keeps_the_models(model_copy, tmp_path):
    export_model(model_copy)
    sidecar = json.loads((model_copy / SIDECAR).read_text())
    sidecar.pop("temperature", None)
    (model_copy / SIDECAR).write_text(json.dumps(sidecar))
    meta_temperature = json.loads((model_copy / "kazstance.json").read_text()).get("temperature", 1.0)
    assert Predictor.load(model_copy, backend="int8").temperature == pytest.approx(meta_temperature)


def test_a_missing_validation_file_is_refused(model_copy, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_model(model_copy, validation=tmp_path / "nowhere.jsonl")


def labelled_file(tmp_path: Path) -> Path:
    validation = tmp_path / "validation.jsonl"
    labels = ["support", "oppose", "neutral", "oppose", "support", "neutral", "oppose", "support"]
    rows = [{"text": t, "label": label} for t, label in zip(SAMPLE_TEXTS, labels)]
    rows.append({"text": "Бұл екіұшты пікір.", "label": "support", "clarity": "borderline"})  # left out
    validation.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return validation


def test_bf16_gets_its_own_temperature_and_agreement_tied_to_the_weights(model_copy, tmp_path):
    from kazstance.backends import BF16_SIDECAR

    info = export_model(model_copy, format="bf16", validation=labelled_file(tmp_path)).info
    assert info["temperature_fitted_on"].endswith("(8 clear statements of 9)")
    assert 0 <= info["validation_label_agreement"] <= 1
    assert abs(info["validation_macro_f1_delta"]) <= 1
    assert Predictor.load(model_copy, backend="bf16").temperature == pytest.approx(info["temperature"])
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # retrained in place: the calibration is stale
    fp32_temperature = json.loads((model_copy / "kazstance.json").read_text()).get("temperature", 1.0)
    assert Predictor.load(model_copy, backend="bf16").temperature == pytest.approx(fp32_temperature)
    assert (model_copy / BF16_SIDECAR).is_file()


def test_bf16_calibration_needs_labelled_statements(model_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/validation.jsonl to fall back on
    with pytest.raises(ExportError, match="--validation"):
        export_model(model_copy, format="bf16")


def test_parity_is_measured_on_every_statement_and_calibration_on_the_clear_ones():
    from training.calibration import fit_temperature
    from training.export import Validation, calibrate_against_fp32

    labels = ("support", "oppose", "neutral")
    validation = Validation(texts=["a", "b", "c", "d"], labels=["support", "oppose", "neutral", "oppose"],
                            clear=np.array([True, True, True, False]), source="v.jsonl")
    fp32 = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [0, 2.0, 1.9]])
    backend = fp32.copy()
    backend[3] = [0, 1.9, 2.0]  # the two part on the borderline statement only
    info = calibrate_against_fp32(backend, fp32, validation, labels)
    assert info["validation_label_agreement"] == 0.75  # the borderline statement counts: no label needed
    assert info["validation_macro_f1_delta"] == 0.0  # macro-F1 on the clear ones, where they agree
    assert info["temperature"] == pytest.approx(fit_temperature(backend[:3], np.array([0, 1, 2])))
    backend[0] = [0, 3.0, 0]  # now a clear support statement goes wrong
    assert calibrate_against_fp32(backend, fp32, validation, labels)["validation_macro_f1_delta"] < -0.1
