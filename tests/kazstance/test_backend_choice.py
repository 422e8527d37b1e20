"""`--backend auto`: measured once per CPU and model, never a backend that disagrees with fp32."""

from __future__ import annotations

import pytest

from kazstance import backend_choice
from kazstance.predictor import Predictor


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KAZSTANCE_CACHE", str(tmp_path / "cache"))


def test_auto_picks_a_measured_candidate_and_reports_it(tiny_model_dir):
    predictor = Predictor.load(tiny_model_dir, backend="auto", threads=1)
    choice = predictor.backend_choice
    assert predictor.backend_name == choice["backend"] in backend_choice.candidates(tiny_model_dir)
    assert isinstance(choice["measured"]["torch"], float) and choice["measured"]["torch"] > 0
    assert choice["measured"][choice["backend"]] == max(v for v in choice["measured"].values() if isinstance(v, float))


def test_the_choice_is_cached_per_cpu_and_model(tiny_model_dir, monkeypatch):
    first = backend_choice.choose(tiny_model_dir, 64, threads=1)

    def measure_again(*args):
        raise AssertionError("measured again")

    monkeypatch.setattr(backend_choice, "_measure", measure_again)
    assert backend_choice.choose(tiny_model_dir, 64, threads=1) == first
    assert backend_choice.cached_choice(tiny_model_dir, threads=1) == first


class Disagreeing:
    """Fast, and wrong: fp32's stance logits in reverse order."""

    def __init__(self, inner):
        self.inner, self.labels, self.tokenizer, self.max_length = inner, inner.labels, inner.tokenizer, inner.max_length

    def lengths(self, texts):
        return self.inner.lengths(texts)

    def logits(self, texts):
        out = self.inner.logits(texts).copy()
        out[:, :3] = out[:, 2::-1]
        return out


def test_a_backend_that_disagrees_with_fp32_is_never_chosen(tiny_model_dir, monkeypatch):
    import kazstance.backends as backends

    real = backends.open_backend
    monkeypatch.setattr(backends, "open_backend",
                        lambda path, name, n: Disagreeing(real(path, "torch", n)) if name == "bf16" else real(path, name, n))
    monkeypatch.setattr(backend_choice, "candidates", lambda path: ["torch", "bf16"])
    choice = backend_choice.choose(tiny_model_dir, 64, threads=1)
    assert choice["backend"] == "torch"
    assert choice["measured"]["bf16"].startswith("out: differs from fp32")


@pytest.mark.parametrize("agreement, eligible", [(0.995, True), (0.97, False), (None, True)])
def test_a_backend_is_a_candidate_only_if_it_agreed_with_fp32_at_export(tmp_path, monkeypatch, agreement, eligible):
    import json

    from kazstance.backends import BF16_SIDECAR
    from kazstance.int8 import ARTEFACT, SIDECAR

    monkeypatch.setattr(backend_choice, "has_bf16", lambda: True)
    (tmp_path / ARTEFACT).write_bytes(b"onnx")
    info = {} if agreement is None else {"validation_label_agreement": agreement}
    for sidecar in (SIDECAR, BF16_SIDECAR):
        (tmp_path / sidecar).write_text(json.dumps(info))
    chosen_from = backend_choice.candidates(tmp_path)
    assert ("int8" in chosen_from) is eligible and ("bf16" in chosen_from) is eligible


def test_metadata_reports_what_the_model_service_chose(tiny_model_dir, bentoml_home, monkeypatch):
    import json

    import bentoml

    from serving import settings
    from serving.http import serving_backend
    from training.registry import register

    meta = json.loads((tiny_model_dir / "kazstance.json").read_text())
    tag = register(tiny_model_dir, {"run_name": "auto", "kind": "transformer", **meta})
    monkeypatch.setattr(settings, "BACKEND", "auto")
    assert serving_backend(tag) == "auto (deciding)"
    # What the model service does at start-up, in its own process:
    chosen = Predictor.load(bentoml.models.get(tag).path, backend="auto", threads=settings.threads_per_worker())
    assert serving_backend(tag) == {"auto": chosen.backend_name, "measured": chosen.backend_choice["measured"]}
