"""Inference backends: each turns a list of cleaned texts into a [n, labels] logit array.

The predictor owns batching, calibration and label mapping; a backend only computes logits,
so swapping fp32 torch for a faster backend cannot change what the rest of the product sees.
- `torch`: the fine-tuned transformers model in fp32.
- `tfidf`: the scikit-learn character n-gram baseline, stored as JSON + safetensors (no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np

from .modeling import load_transformer

BACKENDS = ("torch", "int8")
TFIDF_FILES = ("tfidf.json", "tfidf.safetensors")


class Backend(Protocol):
    labels: tuple[str, ...]

    def logits(self, texts: list[str]) -> np.ndarray: ...


class TorchBackend:
    """fp32 transformers model; tokenises each batch to its own longest length."""

    def __init__(self, path: Path, max_length: int):
        self.model, self.tokenizer = load_transformer(path)
        self.max_length = max_length
        self.labels = tuple(self.model.config.id2label[i] for i in range(self.model.config.num_labels))

    def logits(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        with torch.inference_mode():
            return self.model(**enc).logits.float().numpy()


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

    def logits(self, texts: list[str]) -> np.ndarray:
        features = self.vectorizer.transform(texts)
        return np.asarray(features @ self.coef.T + self.intercept, dtype=np.float32)


def open_backend(path: Path, backend: str, max_length: int) -> Backend:
    """Open the backend a model folder supports; a TF-IDF folder always uses its own."""
    if (path / TFIDF_FILES[0]).is_file():
        return TfidfBackend(path)
    if backend == "torch":
        return TorchBackend(path, max_length)
    if backend == "int8":
        from .int8 import Int8Backend  # optional fast path (ONNX Runtime)

        return Int8Backend(path, max_length)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
