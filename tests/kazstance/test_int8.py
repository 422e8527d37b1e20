"""The int8 backend: the same predictions as fp32 within quantisation error, or a clear refusal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLE_TEXTS, widened_copy
from kazstance.int8 import SIDECAR, Int8ArtefactMissing
from kazstance.modeling import ModelNotFound
from kazstance.predictor import Predictor

# int8 weights and per-batch activation scales move probabilities a little, no more (measured:
# ~0.013 on the wide random model below, which is harsher on int8 than trained weights are).
PROB_TOLERANCE = 0.03
TEXTS = SAMPLE_TEXTS + ["VPN арқылы кіреміз", "Закон принят", "Ok"]


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    from training.export import export_model

    folder = widened_copy(tiny_model_dir, tmp_path_factory.mktemp("int8") / "model")
    export_model(folder)
    return folder


def test_int8_gives_fp32_labels_and_probabilities_within_tolerance(exported_dir):
    fp32 = Predictor.load(exported_dir, backend="torch")
    int8 = Predictor.load(exported_dir, backend="int8")
    int8.temperature = fp32.temperature  # the network's parity; int8's own temperature: test_export.py
    fp32, int8 = fp32.predict_proba(TEXTS), int8.predict_proba(TEXTS)
    assert len(set(fp32.argmax(1))) > 1, "the model should not give every text the same label"
    assert np.abs(int8 - fp32).max() < PROB_TOLERANCE
    # A label may only differ where fp32 itself is undecided within the tolerance.
    top2 = np.sort(fp32, axis=1)[:, -2:]
    decided = (top2[:, 1] - top2[:, 0]) > 2 * PROB_TOLERANCE
    assert decided.sum() >= len(TEXTS) // 2
    assert (int8.argmax(1) == fp32.argmax(1))[decided].all()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_text_gets_the_same_probabilities_alone_and_in_any_batch(exported_dir, threads):
    # Per-batch activation scales used to move a text's probabilities with its neighbours.
    predictor = Predictor.load(exported_dir, backend="int8", threads=threads)
    target = "TikTok-ты бұғаттау керек, балаларға зияны көп."
    alone = predictor.predict_proba([target])[0]
    others = TEXTS + ["x" * 300, "Ok", "Запрет " * 40]
    for k in range(10):
        batch = others[k % len(others):] + [target] + others[: k]
        np.testing.assert_allclose(predictor.predict_proba(batch)[len(others) - k % len(others)], alone, atol=1e-6, rtol=0)
    assert Predictor.load(exported_dir, backend="int8", threads=3 - threads).predict_proba([target])[0] == \
        pytest.approx(alone, abs=1e-6)  # and whatever the threads


def test_int8_labels_come_from_the_model_config(exported_dir):
    predictor = Predictor.load(exported_dir, backend="int8")
    assert predictor.labels == ("support", "oppose", "neutral")
    prediction = predictor.predict(["TikTok"])[0]
    assert list(prediction.scores) == list(predictor.labels)


def test_int8_results_do_not_depend_on_batching_or_padding(exported_dir):
    # The exported graph has dynamic batch and sequence axes: any batch, any padded length.
    texts = TEXTS + ["x" * 300]
    one_batch = Predictor.load(exported_dir, backend="int8", batch_size=32).predict_proba(texts)
    small_batches = Predictor.load(exported_dir, backend="int8", batch_size=3).predict_proba(texts)
    np.testing.assert_allclose(small_batches, one_batch, atol=1e-6, rtol=0)


def test_a_model_without_the_artefact_says_how_to_export_it(tiny_model_dir):
    with pytest.raises(Int8ArtefactMissing, match="kazstance export --model"):
        Predictor.load(tiny_model_dir, backend="int8")


def test_the_missing_artefact_error_is_one_the_cli_reports_cleanly(tiny_model_dir):
    with pytest.raises(ModelNotFound):  # `predict` and `evaluate` print these without a traceback
        Predictor.load(tiny_model_dir, backend="int8")


def test_an_artefact_from_other_weights_is_refused(exported_dir, tmp_path):
    stale = tmp_path / "model"
    shutil.copytree(exported_dir, stale)
    sidecar = json.loads((stale / SIDECAR).read_text())
    sidecar["weights_sha256"] = {"model.safetensors": "0" * 64}
    (stale / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(Int8ArtefactMissing, match="other weights"):
        Predictor.load(stale, backend="int8")
