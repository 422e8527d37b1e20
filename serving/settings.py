"""Service settings, read once from the environment (`kazstance serve` sets them).

| variable | default | meaning |
|---|---|---|
| KAZSTANCE_MODEL | kazstance:latest | BentoML model tag to serve |
| KAZSTANCE_BACKEND | auto | predictor backend: auto (see kazstance/backend_choice.py), torch (fp32), bf16, int8, openvino, openvino-bf16 or openvino-int8 |
| KAZSTANCE_WORKERS | 1 | API worker processes, each with its own model, batcher and request limits |
| KAZSTANCE_THREADS | cores / workers | torch threads per API worker |
| KAZSTANCE_MAX_CHARS | 5000 | longest statement accepted by /predict |
| KAZSTANCE_MAX_DOCUMENT_CHARS | 100000 | longest text accepted by /predict_document |
| KAZSTANCE_MAX_BATCH_SIZE | 256 | batching: most texts of concurrent requests merged into one predictor call (one request's texts are never split: a larger request runs alone) |
| KAZSTANCE_MAX_LATENCY_MS | 30000 | batching: a request that waited this long for the model gets 503 (load shed) |
| KAZSTANCE_MAX_REQUEST_BYTES | 10485760 | request bodies above this get 413 |
| KAZSTANCE_MAX_WINDOWS | 2048 | most model windows one request may take (long texts take several) |
| KAZSTANCE_API_KEY | (none) | when set, every route but /livez, /readyz (and public /metrics) needs it |
| KAZSTANCE_API_KEY_FILE | (none) | a file holding the key (`kazstance serve --api-key-file`) |
| KAZSTANCE_METRICS_PUBLIC | 0 | 1: /metrics stays open when a key is required |
| KAZSTANCE_MAX_CONCURRENCY | 64 | API requests processed at once, per API worker (the batcher merges their texts) |
| KAZSTANCE_MAX_QUEUE | 512 | API requests waiting beyond that, per API worker; past it, 429 |
| KAZSTANCE_HEADER_TIMEOUT_S | 10 | a connection must send a request's headers within this, or is closed |
| KAZSTANCE_BODY_TIMEOUT_S | 30 | a request's body must arrive within this, or 408 (uploads to /jobs: the longest pause between two chunks) |
| KAZSTANCE_JOBS_DIR | <BENTOML_HOME>/kazstance-jobs | where /jobs keeps each job's upload, state and output (`kazstance serve --jobs-dir`) |
| KAZSTANCE_JOBS_ALLOW | (none) | colon-separated folders whose files /jobs may score by server-side path (`--jobs-allow`); none: such jobs get 403 |
| KAZSTANCE_MAX_UPLOAD_BYTES | 1073741824 | uploads to /jobs above this get 413 |
| KAZSTANCE_JOBS_MAX_RUNNING | 1 | jobs scored at once; the others wait in order |
| KAZSTANCE_JOBS_BATCH_SIZE | 32 | the job scorer's batch size (a chunk, the unit of progress and resume, is 16 batches) |
"""

from __future__ import annotations

import os
from pathlib import Path


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


MODEL_TAG = os.environ.get("KAZSTANCE_MODEL", "kazstance:latest")
BACKEND = os.environ.get("KAZSTANCE_BACKEND", "auto")
WORKERS = _int("KAZSTANCE_WORKERS", 1)
MAX_TEXTS = 256
MAX_CHARS = _int("KAZSTANCE_MAX_CHARS", 5000)
MAX_DOCUMENT_CHARS = _int("KAZSTANCE_MAX_DOCUMENT_CHARS", 100_000)
MAX_SENTENCES = 2000
MAX_BATCH_SIZE = _int("KAZSTANCE_MAX_BATCH_SIZE", 256)
MAX_LATENCY_MS = _int("KAZSTANCE_MAX_LATENCY_MS", 30_000)
# 256 texts x 5000 characters, JSON-escaped as \uXXXX (6 bytes each), fit under 10 MiB.
MAX_REQUEST_BYTES = _int("KAZSTANCE_MAX_REQUEST_BYTES", 10 * 1024 * 1024)


# A request's work: 256 short statements are 256 windows, the largest document (2,000 sentences)
# about 2,000, but 256 texts of 5,000 characters would be ~3,500: past this, 400.
MAX_WINDOWS = _int("KAZSTANCE_MAX_WINDOWS", 2048)
MAX_CONCURRENCY = _int("KAZSTANCE_MAX_CONCURRENCY", 64)
MAX_QUEUE = _int("KAZSTANCE_MAX_QUEUE", 512)
HEADER_TIMEOUT_S = float(os.environ.get("KAZSTANCE_HEADER_TIMEOUT_S", 10))
BODY_TIMEOUT_S = float(os.environ.get("KAZSTANCE_BODY_TIMEOUT_S", 30))
METRICS_PUBLIC = os.environ.get("KAZSTANCE_METRICS_PUBLIC", "0").lower() in ("1", "true", "yes")
MAX_UPLOAD_BYTES = _int("KAZSTANCE_MAX_UPLOAD_BYTES", 2**30)
JOBS_MAX_RUNNING = max(1, _int("KAZSTANCE_JOBS_MAX_RUNNING", 1))
JOBS_BATCH_SIZE = max(1, _int("KAZSTANCE_JOBS_BATCH_SIZE", 32))


def jobs_dir() -> Path:
    """Where the HTTP jobs live: KAZSTANCE_JOBS_DIR, else beside BentoML's own store."""
    if os.environ.get("KAZSTANCE_JOBS_DIR"):
        return Path(os.environ["KAZSTANCE_JOBS_DIR"]).expanduser().absolute()
    return Path(os.environ.get("BENTOML_HOME", "~/bentoml")).expanduser().absolute() / "kazstance-jobs"


def jobs_allow() -> list[Path]:
    """The folders a job may name files under (KAZSTANCE_JOBS_ALLOW, colon-separated), absolute."""
    return [Path(os.path.normpath(os.path.abspath(os.path.expanduser(p))))
            for p in os.environ.get("KAZSTANCE_JOBS_ALLOW", "").split(":") if p.strip()]


def api_key() -> str | None:
    """The key clients must send, from KAZSTANCE_API_KEY or the file KAZSTANCE_API_KEY_FILE names."""
    key = os.environ.get("KAZSTANCE_API_KEY")
    if key and os.environ.get("KAZSTANCE_API_KEY_FILE"):
        raise ValueError("both KAZSTANCE_API_KEY and an API key file are set: keep one")
    if not key and os.environ.get("KAZSTANCE_API_KEY_FILE"):
        key = open(os.environ["KAZSTANCE_API_KEY_FILE"], encoding="utf-8").read().strip()
        if not key:
            raise ValueError(f"{os.environ['KAZSTANCE_API_KEY_FILE']} is empty: no API key to require")
    return key or None


def threads_per_worker() -> int:
    if os.environ.get("KAZSTANCE_THREADS"):
        return int(os.environ["KAZSTANCE_THREADS"])
    return max(1, len(os.sched_getaffinity(0)) // WORKERS)


def limits() -> dict:
    return {"max_texts": MAX_TEXTS, "max_chars": MAX_CHARS, "max_document_chars": MAX_DOCUMENT_CHARS,
            "max_sentences": MAX_SENTENCES, "max_batch_size": MAX_BATCH_SIZE, "max_latency_ms": MAX_LATENCY_MS,
            "max_request_bytes": MAX_REQUEST_BYTES, "max_windows": MAX_WINDOWS, "max_concurrency": MAX_CONCURRENCY, "max_queue": MAX_QUEUE,
            "header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S,
            "max_upload_bytes": MAX_UPLOAD_BYTES, "jobs_max_running": JOBS_MAX_RUNNING}
