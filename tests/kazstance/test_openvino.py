"""The OpenVINO backends: fp32's numbers (f32) or its labels (bf16, int8), independent of the batch,
from an artefact tied to the weights; or a clear refusal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_TEXTS, widened_copy
from kazstance.cli import app
from kazstance.openvino import GRAPH, INT8_GRAPH, INT8_WEIGHTS, SIDECAR, WEIGHTS, OpenVinoArtefactMissing
from kazstance.predictor import Predictor

TEXTS = SAMPLE_TEXTS + ["VPN арқылы кіреміз", "Закон принят", "Ok", "TikTok " * 40]
LABELS = ["support", "oppose", "neutral", "oppose", "support", "neutral", "oppose", "support"]


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    """The widened tiny model, exported by the CLI with a labelled validation file."""
    work = tmp_path_factory.mktemp("openvino")
    folder = widened_copy(tiny_model_dir, work / "model")
    validation = work / "validation.jsonl"
    validation.write_text("".join(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n"
                                  for t, label in zip(SAMPLE_TEXTS, LABELS)), encoding="utf-8")
    result = CliRunner().invoke(app, ["export", "--model", str(folder), "--format", "openvino",
                                      "--validation", str(validation)])
    assert result.exit_code == 0, result.output
    assert "OpenVINO models" in result.output
    return folder


def test_f32_gives_fp32s_logits(exported_dir):
    fp32 = Predictor.load(exported_dir, backend="torch").backend.logits(TEXTS)
    openvino = Predictor.load(exported_dir, backend="openvino").backend.logits(TEXTS)
    np.testing.assert_allclose(openvino, fp32, atol=1e-4)


def test_each_precision_has_its_own_temperature_and_measured_parity(exported_dir):
    info = json.loads((exported_dir / SIDECAR).read_text())
    for backend, precision in (("openvino", "f32"), ("openvino-bf16", "bf16"), ("openvino-int8", "int8")):
        assert 0 <= info[precision]["validation_label_agreement"] <= 1
        assert Predictor.load(exported_dir, backend=backend).temperature == pytest.approx(info[precision]["temperature"])
    assert info["f32"]["validation_label_agreement"] == 1.0  # the same arithmetic as fp32


def test_int8_has_int8_weights_and_stays_close_to_fp32(exported_dir):
    import openvino as ov

    graph = ov.Core().read_model(str(exported_dir / INT8_GRAPH))
    matrices = [op for op in graph.get_ordered_ops() if op.get_type_name() == "Constant"
                and len(op.get_output_partial_shape(0)) == 2 and op.get_output_partial_shape(0).is_static]
    weight_types = {op.get_output_element_type(0).get_type_name() for op in matrices}
    assert "u8" in weight_types  # the matrices are stored int8 (asymmetric: u8 with zero points)
    assert (exported_dir / INT8_WEIGHTS).stat().st_size < 0.5 * (exported_dir / WEIGHTS).stat().st_size
    fp32 = Predictor.load(exported_dir, backend="torch").backend.logits(TEXTS)
    int8 = Predictor.load(exported_dir, backend="openvino-int8").backend.logits(TEXTS)
    assert np.abs(int8 - fp32).max() < 0.05 * np.abs(fp32).max()


@pytest.mark.parametrize("backend", ["openvino", "openvino-bf16", "openvino-int8"])
def test_a_text_gets_the_same_probabilities_alone_and_in_any_batch(exported_dir, backend):
    # Padded batches moved a bf16 statement's probabilities by up to 0.006 with its neighbours; int8
    # quantises each token's activations on their own, never with a scale shared by the batch.
    predictor = Predictor.load(exported_dir, backend=backend)
    target = "TikTok-ты бұғаттау керек, балаларға зияны көп."
    alone = predictor.predict_proba([target])[0]
    for k in range(10):
        batch = TEXTS[k % len(TEXTS):] + [target] + TEXTS[:k]
        np.testing.assert_allclose(predictor.predict_proba(batch)[len(TEXTS) - k % len(TEXTS)], alone, atol=1e-6, rtol=0)


def test_a_missing_or_stale_artefact_is_refused_with_the_fix(exported_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(exported_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # retrained in place
    with pytest.raises(OpenVinoArtefactMissing, match="other weights.*kazstance export --model MODEL --format openvino"):
        Predictor.load(folder, backend="openvino")
    with pytest.raises(OpenVinoArtefactMissing, match="other weights"):
        Predictor.load(folder, backend="openvino-int8")
    (folder / GRAPH).unlink()
    with pytest.raises(OpenVinoArtefactMissing, match="has no OpenVINO model"):
        Predictor.load(folder, backend="openvino-bf16")


def test_an_export_without_the_int8_graph_is_refused_for_int8_only(exported_dir, tmp_path):
    # A folder exported before the int8 graph existed: f32 still serves, int8 names the fix.
    folder = tmp_path / "model"
    shutil.copytree(exported_dir, folder)
    (folder / INT8_GRAPH).unlink()
    with pytest.raises(OpenVinoArtefactMissing, match="no int8 OpenVINO model.*--format openvino"):
        Predictor.load(folder, backend="openvino-int8")
    assert Predictor.load(folder, backend="openvino").predict(["Закон принят"])


def test_int8_exported_without_a_validation_split_runs_with_the_models_temperature(exported_dir, tmp_path):
    # Without --validation the sidecar has no per-precision entries; the graphs are still the
    # ones made from these weights, so int8 runs, with fp32's temperature, as f32 and bf16 do.
    folder = tmp_path / "model"
    shutil.copytree(exported_dir, folder)
    info = json.loads((folder / SIDECAR).read_text())
    (folder / SIDECAR).write_text(json.dumps({k: v for k, v in info.items() if k not in ("f32", "bf16", "int8")}))
    meta = json.loads((folder / "kazstance.json").read_text())
    assert Predictor.load(folder, backend="openvino-int8").temperature == pytest.approx(meta.get("temperature", 1.0))
