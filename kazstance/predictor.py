"""The one predictor: evaluation, the HTTP service and the batch scorer all call this.

`Predictor.load("kazstance:latest").predict(texts)` returns one `Prediction` per text, in input
order, with calibrated probabilities (temperature scaling fitted on validation at training
time). Texts are batched by token count — sorted inside a window, order restored after — so a
batch computes little padding.

Long texts are never cut silently. A text longer than the model's window (`max_length` tokens,
128 for the default model) is read as overlapping windows of that size, overlapping by a
quarter of a window; each window is predicted on its own and the windows are combined
with the document rule (`kazstance.documents.aggregate`), as the sentences of a document are.
Every prediction says how many tokens its text has and how many windows were read.

A model trained with a platform head also names the platform each text is about (`platform`,
`general` when no single platform is meant) with its probabilities (`platform_scores`); the
stance outputs and the platform outputs are two softmax groups of one output layer (see
`kazstance.labels`). The temperature calibrates the stance only. A text read in several windows
takes the document rule for platforms (`kazstance.documents.aggregate_platform`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import Backend, open_backend
from .labels import PLATFORM_PREFIX, split_outputs
from .modeling import DEFAULT_MODEL, ModelRef, resolve
from .text import clean


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]
    tokens: int | None = None  # the cleaned text's tokens, special tokens excluded (None: no tokenizer)
    windows: int = 1           # model windows read; more than 1 only for texts over the window
    platform: str | None = None                    # the platform the text is about (None: no platform head)
    platform_scores: dict[str, float] | None = None


@dataclass(frozen=True)
class Windows:
    """The texts the model reads: `pieces[k]` belongs to input text `owner[k]`."""

    pieces: list[str]
    owner: list[int]
    spans: list[tuple[int, int]]  # per piece, its characters in its text
    tokens: list[int | None]   # per input text
    lengths: list[int]         # per piece, what its batch is padded to (for sorting)


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
    path: Path | None = None  # the model folder (None for a predictor built by hand); its hash is the model's identity
    backend_name: str = "torch"  # what `backend` is; with backend="auto", what was chosen
    backend_choice: dict | None = None  # with backend="auto": the measurements behind the choice

    def __post_init__(self) -> None:
        outputs = tuple(self.backend.labels)
        self._stance, self._platform = split_outputs(outputs)
        self._labels = tuple(outputs[i] for i in self._stance)
        self._platforms = tuple(outputs[i][len(PLATFORM_PREFIX):] for i in self._platform)

    @property
    def labels(self) -> tuple[str, ...]:
        """The stance labels, in the model's order."""
        return self._labels

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms the model names; empty without a platform head."""
        return self._platforms

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
        choice = None
        if backend == "auto":
            from .backend_choice import choose

            choice = choose(ref.path, int(meta.get("max_length", 256)), threads)
            backend = choice["backend"]
        impl = open_backend(ref.path, backend, int(meta.get("max_length", 256)))
        # The int8 artefact may carry a temperature fitted on its own logits (`kazstance export`).
        temperature = getattr(impl, "info", {}).get("temperature", meta.get("temperature", 1.0))
        return cls(backend=impl, name=ref.name, temperature=float(temperature), meta=meta, batch_size=batch_size,
                   path=ref.path, backend_name=backend, backend_choice=choice)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw (uncalibrated) stance logits of each text's first window, shape [len(texts), len(labels)].

        For fitting the temperature on labelled statements, which fit one window."""
        cleaned = _cleaned(texts)
        return self._logits(cleaned, self.backend.lengths(cleaned))[:, self._stance]

    def _logits(self, texts: list[str], lengths: list[int]) -> np.ndarray:
        """All of the model's outputs (stance, then platforms when it has them)."""
        out = np.zeros((len(texts), len(self.backend.labels)), dtype=np.float32)
        for batch in length_batches(lengths, self.batch_size):
            out[batch] = self.backend.logits([texts[i] for i in batch])
        return out

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """One prediction per text; a text over the window is read as several windows (see above)."""
        return self.predict_with_proba(texts)[0]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated probabilities, shape [len(texts), len(self.labels)], columns in `labels` order
        (for a text read as several windows: the mean over its windows, as its scores)."""
        return self.predict_with_proba(texts)[1]

    def predict_with_proba(self, texts: Sequence[str]) -> tuple[list[Prediction], np.ndarray]:
        """`predict` and `predict_proba` in one pass (explanations need both)."""
        from .documents import aggregate, aggregate_platform  # documents builds on this module

        windows = self.windows(_cleaned(texts))
        logits = self._logits(windows.pieces, windows.lengths)
        probs = softmax(logits[:, self._stance] / self.temperature)
        platform_probs = softmax(logits[:, self._platform]) if self._platform else None
        rows: list[list[int]] = [[] for _ in texts]
        for k, i in enumerate(windows.owner):
            rows[i].append(k)
        out, means = [], np.zeros((len(texts), len(self.labels)))
        for i, ks in enumerate(rows):
            means[i] = probs[ks].mean(axis=0)
            pieces = [self.to_prediction(probs[k], platform_probs[k] if platform_probs is not None else None)
                      for k in ks]
            if len(ks) == 1:
                out.append(replace(pieces[0], tokens=windows.tokens[i]))
                continue
            label, scores, _ = aggregate(pieces, self.labels)
            platform, platform_scores = aggregate_platform(pieces)
            out.append(Prediction(label, scores, tokens=windows.tokens[i], windows=len(ks), platform=platform,
                                  platform_scores=platform_scores))
        return out, means

    def predict_each(self, texts: Sequence[str]) -> list[Prediction | Exception]:
        """`predict`, except that a text which cannot be predicted gets its exception in its place
        instead of failing the others: a batch may hold other clients' texts or other rows."""
        try:
            return list(self.predict(texts))
        except Exception:  # noqa: BLE001 - isolated text by text below
            out: list[Prediction | Exception] = []
            for i, text in enumerate(texts):
                try:
                    out.append(self.predict([text])[0])
                except EmptyText:
                    out.append(EmptyText(i))  # its index in `texts`, not in the one-text retry
                except Exception as err:  # noqa: BLE001 - handed to the caller, per text
                    out.append(err)
            return out

    def windows(self, texts: list[str]) -> Windows:
        """Cut each cleaned text into the pieces the model reads: itself when it fits the window,
        else overlapping windows cut at token boundaries (character offsets from the tokenizer)."""
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:  # the TF-IDF baseline reads any length
            return Windows(list(texts), list(range(len(texts))), [(0, len(t)) for t in texts], [None] * len(texts),
                           self.backend.lengths(texts))
        special = tokenizer.num_special_tokens_to_add()
        size = window_size(tokenizer, self.backend.max_length)
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                        verbose=False)
        pieces, owner, spans, lengths = [], [], [], []
        for i, (text, offsets) in enumerate(zip(texts, enc["offset_mapping"])):
            n = len(offsets)
            starts = window_starts(n, size)
            for start in starts:
                end = min(start + size, n)
                span = (0, len(text)) if len(starts) == 1 else (offsets[start][0], offsets[end - 1][1])
                pieces.append(text[span[0]:span[1]])
                spans.append(span)
                owner.append(i)
                lengths.append(min(end - start + special, self.backend.max_length))
        return Windows(pieces, owner, spans, [len(o) for o in enc["offset_mapping"]], lengths)

    def to_prediction(self, row: np.ndarray, platform_row: np.ndarray | None = None,
                      tokens: int | None = None) -> Prediction:
        """A prediction from one window's stance probabilities (and platform probabilities)."""
        platform = platform_scores = None
        if platform_row is not None:
            platform = self.platforms[int(platform_row.argmax())]
            platform_scores = {name: round(float(p), 6) for name, p in zip(self.platforms, platform_row)}
        return Prediction(label=self.labels[int(row.argmax())],
                          scores={label: round(float(p), 6) for label, p in zip(self.labels, row)}, tokens=tokens,
                          platform=platform, platform_scores=platform_scores)


def window_size(tokenizer, max_length: int) -> int:
    """Text tokens per window. Re-tokenising a cut piece may add a token at its edge (a word-start
    marker), so a window keeps that margin below the model's length."""
    return max(max_length - tokenizer.num_special_tokens_to_add() - 2, 8)


def window_starts(tokens: int, size: int) -> list[int]:
    """Where each window of a `tokens`-long text starts: a quarter of a window overlaps the next,
    so a statement cut at one window's edge is whole in its neighbour; the last ends at the end."""
    step = size - size // 4
    starts = list(range(0, max(tokens - size, 0) + 1, step))
    if starts[-1] + size < tokens:
        starts.append(tokens - size)
    return starts


def count_windows(tokenizer, max_length: int, texts: Sequence[str]) -> int:
    """How many model windows `texts` take: what a request costs (the service caps it)."""
    size = window_size(tokenizer, max_length)
    ids = tokenizer([clean(t) for t in texts], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return sum(len(window_starts(len(i), size)) for i in ids)


class EmptyText(ValueError):
    """A text that is empty once cleaned (blank, or only invisible characters)."""

    def __init__(self, index: int):
        super().__init__(f"text {index} is empty once invisible characters and whitespace are removed")
        self.index = index


def _cleaned(texts: Sequence[str]) -> list[str]:
    cleaned = [clean(t) for t in texts]
    for i, text in enumerate(cleaned):
        if not text:
            raise EmptyText(i)
    return cleaned


def set_threads(threads: int | None) -> None:
    """Pin intra-op threads; None means one per core (torch's default may oversubscribe)."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
