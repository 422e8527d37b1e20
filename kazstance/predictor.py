"""The one predictor: evaluation, the HTTP service and the batch scorer all call this.

`Predictor.load("kazstance:latest").predict(texts)` returns one `Prediction` per text, in input
order, with calibrated probabilities (temperature scaling fitted on validation at training
time). Texts are batched by token count — sorted inside a window, order restored after — so a
batch computes little padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import Backend, open_backend
from .modeling import DEFAULT_MODEL, ModelRef, resolve
from .text import clean


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]


def length_batches(lengths: Sequence[int], batch_size: int, window: int | None = None) -> list[list[int]]:
    """Index batches with similar lengths: sort inside windows of `window` items, then cut.

    Sorting inside a window (not globally) keeps streaming callers' memory bounded.
    """
    window = window or batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(lengths), window):
        idx = sorted(range(start, min(start + window, len(lengths))), key=lambda i: lengths[i])
        batches.extend(idx[i : i + batch_size] for i in range(0, len(idx), batch_size))
    return batches


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Predictor:
    backend: Backend
    name: str
    temperature: float = 1.0
    meta: dict = field(default_factory=dict)
    batch_size: int = 32

    @property
    def labels(self) -> tuple[str, ...]:
        return self.backend.labels

    @classmethod
    def load(cls, ref: str | Path = DEFAULT_MODEL, backend: str = "torch", threads: int | None = None,
             batch_size: int = 32) -> "Predictor":
        """Load from a model folder or a BentoML tag."""
        return cls.from_ref(resolve(ref), backend=backend, threads=threads, batch_size=batch_size)

    @classmethod
    def from_dir(cls, path: str | Path, **kwargs) -> "Predictor":
        return cls.load(Path(path), **kwargs)

    @classmethod
    def from_ref(cls, ref: ModelRef, backend: str = "torch", threads: int | None = None,
                 batch_size: int = 32) -> "Predictor":
        set_threads(threads)
        meta = ref.meta
        impl = open_backend(ref.path, backend, int(meta.get("max_length", 256)))
        # The int8 artefact may carry a temperature fitted on its own logits (`kazstance export`).
        temperature = getattr(impl, "info", {}).get("temperature", meta.get("temperature", 1.0))
        return cls(backend=impl, name=ref.name, temperature=float(temperature), meta=meta, batch_size=batch_size)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw (uncalibrated) logits, shape [len(texts), len(self.labels)], in input order."""
        cleaned = [clean(t) for t in texts]
        for i, text in enumerate(cleaned):
            if not text:
                raise ValueError(f"text {i} is empty")
        out = np.zeros((len(cleaned), len(self.labels)), dtype=np.float32)
        for batch in length_batches(self.backend.lengths(cleaned), self.batch_size):
            out[batch] = self.backend.logits([cleaned[i] for i in batch])
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities, shape [len(texts), len(self.labels)], columns in `labels` order."""
        return softmax(self.logits(texts) / self.temperature)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = self.predict_proba(texts)
        return [self.to_prediction(row) for row in probs]

    def to_prediction(self, row: np.ndarray) -> Prediction:
        return Prediction(label=self.labels[int(row.argmax())],
                          scores={label: round(float(p), 6) for label, p in zip(self.labels, row)})


def set_threads(threads: int | None) -> None:
    """Pin intra-op threads; None means one per core (torch's default may oversubscribe)."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
