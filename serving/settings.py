"""Service settings, read once from the environment (`kazstance serve` sets them).

| variable | default | meaning |
|---|---|---|
| KAZSTANCE_MODEL | kazstance:latest | BentoML model tag to serve |
| KAZSTANCE_BACKEND | torch | predictor backend: torch (fp32) or int8 |
| KAZSTANCE_WORKERS | 1 | model worker processes |
| KAZSTANCE_THREADS | cores / workers | torch threads per model worker |
| KAZSTANCE_MAX_CHARS | 5000 | longest statement accepted by /predict |
| KAZSTANCE_MAX_DOCUMENT_CHARS | 100000 | longest text accepted by /predict_document |
| KAZSTANCE_MAX_BATCH_SIZE | 256 | adaptive batching: most texts in one forward batch |
| KAZSTANCE_MAX_LATENCY_MS | 30000 | adaptive batching: latency budget before shedding load |
| KAZSTANCE_MAX_REQUEST_BYTES | 10485760 | request bodies above this get 413 |
"""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


MODEL_TAG = os.environ.get("KAZSTANCE_MODEL", "kazstance:latest")
BACKEND = os.environ.get("KAZSTANCE_BACKEND", "torch")
WORKERS = _int("KAZSTANCE_WORKERS", 1)
MAX_TEXTS = 256
MAX_CHARS = _int("KAZSTANCE_MAX_CHARS", 5000)
MAX_DOCUMENT_CHARS = _int("KAZSTANCE_MAX_DOCUMENT_CHARS", 100_000)
MAX_SENTENCES = 2000
MAX_BATCH_SIZE = _int("KAZSTANCE_MAX_BATCH_SIZE", 256)
MAX_LATENCY_MS = _int("KAZSTANCE_MAX_LATENCY_MS", 30_000)
# 256 texts x 5000 characters, JSON-escaped as \uXXXX (6 bytes each), fit under 10 MiB.
MAX_REQUEST_BYTES = _int("KAZSTANCE_MAX_REQUEST_BYTES", 10 * 1024 * 1024)


def threads_per_worker() -> int:
    if os.environ.get("KAZSTANCE_THREADS"):
        return int(os.environ["KAZSTANCE_THREADS"])
    return max(1, len(os.sched_getaffinity(0)) // WORKERS)


def limits() -> dict:
    return {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_document_chars": MAX_DOCUMENT_CHARS,
            "max_sentences": MAX_SENTENCES, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS,
            "max_request_bytes": MAX_REQUEST_BYTES}
