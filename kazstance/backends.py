"""Inference backends: each turns a list of cleaned texts into a [n, labels] logit array.

The predictor owns batching, calibration and label mapping; a backend only computes logits,
so swapping fp32 torch for a faster backend cannot change what the rest of the product sees.
- `torch`: the fine-tuned transformers model in fp32.
- `bf16`: the same model with bfloat16 weights and activations, for CPUs with bf16 dot products
  (AVX-512 BF16, AMX); logits come back as fp32.
- `int8` (`kazstance/int8.py`, ONNX Runtime) and `openvino`, `openvino-bf16`, `openvino-int8`
  (`kazstance/openvino.py`): artefacts `kazstance export` (and training) write beside the model.
- `tfidf`: the scikit-learn character n-gram baseline, stored as JSON + safetensors (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from .modeling import load_transformer

BACKENDS = ("auto", "torch", "bf16", "int8", "openvino", "openvino-bf16", "openvino-int8")  # auto: see kazstance/backend_choice.py
# `kazstance export --format bf16` fits bf16 its own temperature and writes it here, tied to the weights.
BF16_SIDECAR = "model.bf16.json"
TFIDF_FILES = ("tfidf.json", "tfidf.safetensors")


class Backend(Protocol):
    labels: tuple[str, ...]

    def lengths(self, texts: list[str]) -> list[int]:
        """What a batch of these texts costs to pad to: the predictor sorts by it."""
        ...

    def logits(self, texts: list[str]) -> np.ndarray: ...


def token_counts(tokenizer, texts: list[str], max_length: int) -> list[int]:
    """Tokens per text after truncation. Sorting batches by these, not by characters, cut the
    padding computed at batch 32 from 34% to 14% on the test split (one script's characters
    are not another's tokens); tokenising twice costs about 0.1 ms a text."""
    return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


class TorchBackend:
    """transformers model (fp32, or bf16); tokenises each batch to its own longest length and, for
    BERT models, computes the linear layers on the real tokens only (`kazstance/unpadded.py`)."""

    def __init__(self, path: Path, max_length: int, dtype: str = "float32"):
        import torch

        from .unpadded import unpadded_or_none

        self.model, self.tokenizer = load_transformer(path)
        self.max_length = max_length
        # Checked in fp32, where the two forwards must agree to 1e-3; the cast changes both alike.
        self.unpadded = unpadded_or_none(self.model, self.tokenizer)  # None: the library's forward
        if dtype != "float32":
            self.model = self.model.to(getattr(torch, dtype))
            self.info = _bf16_sidecar(path)  # the predictor takes its temperature from here
        self.labels = tuple(self.model.config.id2label[i] for i in range(self.model.config.num_labels))

    def lengths(self, texts: list[str]) -> list[int]:
        return token_counts(self.tokenizer, texts, self.max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            if self.unpadded is not None:
                return self.unpadded(self.model, enc["input_ids"], enc["attention_mask"]).float().numpy()
            return self.model(**enc).logits.float().numpy()


def _bf16_sidecar(path: Path) -> dict:
    """The bf16 calibration written by `kazstance export --format bf16`, if it was made from these
    weights (a retrained folder keeps a stale one: then fp32's temperature stands)."""
    from .int8 import weights_digest

    sidecar = Path(path) / BF16_SIDECAR
    if not sidecar.is_file():
        return {}
    info = json.loads(sidecar.read_text(encoding="utf-8"))
    return info if info.get("weights_sha256") == weights_digest(path) else {}


class TfidfBackend:
    """Character n-gram TF-IDF + logistic regression, rebuilt from its saved arrays."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        spec = json.loads((path / TFIDF_FILES[0]).read_text(encoding="utf-8"))
        arrays = load_file(str(path / TFIDF_FILES[1]))
        self.vectorizer = TfidfVectorizer(vocabulary=spec["vocabulary"], **spec["vectorizer"])
        self.vectorizer.idf_ = arrays["idf"]
        self.coef, self.intercept = arrays["coef"], arrays["intercept"]
        self.labels = tuple(spec["id2label"][str(i)] for i in range(len(spec["id2label"])))

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(t) for t in texts]  # no padding here: any order will do

    def logits(self, texts: list[str]) -> np.ndarray:
        features = self.vectorizer.transform(texts)
        return np.asarray(features @ self.coef.T + self.intercept, dtype=np.float32)


def open_backend(path: Path, backend: str, max_length: int) -> Backend:
    """Open the backend a model folder supports; a TF-IDF folder always uses its own."""
    if (path / TFIDF_FILES[0]).is_file():
        return TfidfBackend(path)
    if backend == "torch":
        return TorchBackend(path, max_length)
    if backend == "bf16":
        return TorchBackend(path, max_length, dtype="bfloat16")
    if backend == "int8":
        from .int8 import Int8Backend  # optional fast path (ONNX Runtime)

        return Int8Backend(path, max_length)
    if backend in ("openvino", "openvino-bf16", "openvino-int8"):
        from .openvino import OpenVinoBackend  # OpenVINO's CPU plugin, after `kazstance export --format openvino`

        return OpenVinoBackend(path, max_length, backend)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
