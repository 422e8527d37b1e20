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


class BatchDependent(Disagreeing):
    """fp32's labels, but its numbers move with the batch: what a kernel rounding by batch shape does."""

    def logits(self, texts):
        return self.inner.logits(texts) * (1 + 1e-3 * len(texts))


@pytest.mark.parametrize("wrong, why", [(Disagreeing, "out: differs from fp32"),
                                         (BatchDependent, "change with its batch")])
def test_a_backend_that_fails_the_probe_is_never_chosen(tiny_model_dir, monkeypatch, wrong, why):
    import kazstance.backends as backends

    real = backends.open_backend
    monkeypatch.setattr(backends, "open_backend",
                        lambda path, name, n: wrong(real(path, "torch", n)) if name == "bf16" else real(path, name, n))
    monkeypatch.setattr(backend_choice, "candidates", lambda path: ["torch", "bf16"])
    choice = backend_choice.choose(tiny_model_dir, 64, threads=1)
    assert choice["backend"] == "torch"
    assert why in choice["measured"]["bf16"]


@pytest.mark.parametrize("agreement, f1_delta, eligible", [
    (0.995, 0.0, True),
    (0.97, 0.0, False),     # disagrees with fp32 on 3% of validation
    (0.995, -0.01, False),  # agrees, but the statements it flips cost macro-F1
    (0.995, 0.01, True),    # better than fp32 on this split is not a loss of parity
    (None, None, False),    # never measured: a 32-statement probe cannot show a 1% disagreement
])
def test_a_backend_is_a_candidate_only_if_its_parity_held_on_validation(tmp_path, monkeypatch, agreement, f1_delta,
                                                                       eligible):
    import json

    from kazstance import openvino
    from kazstance.backends import BF16_SIDECAR
    from kazstance.int8 import ARTEFACT, SIDECAR

    monkeypatch.setattr(backend_choice, "has_bf16", lambda: True)
    (tmp_path / ARTEFACT).write_bytes(b"onnx")
    (tmp_path / openvino.GRAPH).write_text("<net/>")
    (tmp_path / openvino.INT8_GRAPH).write_text("<net/>")
    info = {} if agreement is None else {"validation_label_agreement": agreement, "validation_macro_f1_delta": f1_delta}
    for sidecar in (SIDECAR, BF16_SIDECAR):
        (tmp_path / sidecar).write_text(json.dumps(info))
    (tmp_path / openvino.SIDECAR).write_text(json.dumps({"f32": info, "bf16": info, "int8": info}))  # one entry per precision
    chosen_from = backend_choice.candidates(tmp_path)
    assert chosen_from[0] == "torch"  # always: the reference and the fallback
    for backend in ("bf16", "int8", "openvino", "openvino-bf16", "openvino-int8"):
        assert (backend in chosen_from) is eligible, backend


def test_when_even_fp32_moves_with_its_batch_fp32_is_still_served(tiny_model_dir, monkeypatch):
    # Seen on an Intel Xeon (AVX-512 VNNI, no BF16): fp32's GEMM kernels change with the number of
    # tokens, and a probe statement moved by 1.5e-6 alone against in its batch. fp32 is the
    # reference: when nothing else qualifies, it is what `auto` serves, not a crash.
    import kazstance.backends as backends

    real = backends.open_backend
    monkeypatch.setattr(backends, "open_backend", lambda path, name, n: BatchDependent(real(path, name, n)))
    monkeypatch.setattr(backend_choice, "candidates", lambda path: ["torch"])
    choice = backend_choice.choose(tiny_model_dir, 64, threads=1)
    assert choice["backend"] == "torch" and "no backend passed" in choice["why"]
    assert "change with its batch" in choice["measured"]["torch"]


def test_metadata_reports_what_the_services_predictor_chose(tiny_model_dir, monkeypatch):
    from serving import settings
    from serving.http import serving_backend

    monkeypatch.setattr(settings, "BACKEND", "auto")
    # What the service does at start-up; /metadata then asks the predictor, in the same process.
    chosen = Predictor.load(tiny_model_dir, backend="auto", threads=1)
    assert serving_backend(chosen) == {"auto": chosen.backend_name, "measured": chosen.backend_choice["measured"]}
