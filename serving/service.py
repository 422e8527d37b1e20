"""The BentoML HTTP service: validation and response shape here, inference in the predictor.

One service in one process (or `KAZSTANCE_WORKERS` of them, each with its own model): `KazStance`
validates requests, holds the predictor and shapes responses. Concurrent requests' texts are
merged into shared model passes in-process by `serving/batching.py`, on one model thread; BentoML's
own adaptive batching would need a second service and HTTP between the two, which cost about as
much CPU per request as scoring a short statement. Settings come from the environment (set by
`kazstance serve`), see `serving/settings.py`. Batch scoring jobs (/jobs) run beside it, one
scorer subprocess each, started from the API process (`serving/jobs.py`, `serving/job_routes.py`).

Requests are validated (and refused with a 4xx) by the guard in `serving/http.py` before they
reach an API here; the batcher still answers per text, so even a text the predictor cannot read
costs only its own request, never the other requests batched with it.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: the model thread shares this process with the HTTP event loop, and
# OpenMP threads that spin after each parallel region take the cores that loop needs. Measured at
# concurrency 32 on two cores (bf16): 64.7 req/s spinning, 84.9 req/s sleeping. An explicit
# setting in the environment stands.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import asyncio  # noqa: E402
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import bentoml
from bentoml.exceptions import BadInput
from bentoml.validators import ContentType
from pydantic import Field

from kazstance.documents import aggregate, aggregate_platform
from kazstance.modeling import ModelRef
from kazstance.explain import MAX_OCCLUSIONS, words
from kazstance.predictor import Prediction, Predictor, count_windows, window_size, window_starts
from kazstance.text import clean, split_sentences
from serving import job_routes, settings, timeouts
from serving.batching import Batcher
from serving.http import Document, RequestGuard, Text, answer, check_results, metadata_app, model_metadata

timeouts.install()
job_routes.exempt_uploads_from_request_timeout()

# Drift: what the service answers, so a dashboard sees when the mix of its traffic shifts (queries
# in the README). bentoml.metrics, not prometheus_client: BentoML sets up the multi-process registry.
PREDICTIONS = bentoml.metrics.Counter(name="kazstance_predictions", documentation="Predicted labels",
                                      labelnames=["endpoint", "label"])
PLATFORMS = bentoml.metrics.Counter(name="kazstance_platforms", documentation="Platforms the answers are about",
                                    labelnames=["endpoint", "platform"])
WINNING_PROBABILITY = bentoml.metrics.Histogram(
    name="kazstance_winning_probability", documentation="Probability of the predicted label",
    labelnames=["endpoint"], buckets=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0))


# The answers' media type, declared: otherwise BentoML derives it from the return type's JSON
# schema on every response, which was ~9% of the API thread's time at concurrency 32.
JSON = Annotated[dict, ContentType("application/json")]


def record(endpoint: str, label: str, scores: dict[str, float], platform: str | None = None) -> None:
    PREDICTIONS.labels(endpoint=endpoint, label=label).inc()
    WINNING_PROBABILITY.labels(endpoint=endpoint).observe(max(scores.values()))
    if platform is not None:
        PLATFORMS.labels(endpoint=endpoint, platform=platform).inc()


def window_tokenizer(path: Path):
    """The model's tokenizer, to count a request's windows in this process; None for the TF-IDF
    baseline, which reads any length."""
    if not (path / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)


@bentoml.service(name="kazstance", workers=settings.WORKERS, traffic={"timeout": 120})
@bentoml.asgi_app(metadata_app, path="/")
class KazStance:
    model_ref = bentoml.models.BentoModel(settings.MODEL_TAG)

    def __init__(self) -> None:
        # Loaded here, at start-up (with `--backend auto`, measured too): /readyz means ready to answer.
        path = Path(self.model_ref.path)
        self.predictor = Predictor.from_ref(ModelRef(path=path, name=str(self.model_ref.tag)), backend=settings.BACKEND,
                                            threads=settings.threads_per_worker())
        self.batcher = Batcher(self.predictor, settings.MAX_BATCH_SIZE, settings.MAX_LATENCY_MS)
        self.metadata = model_metadata(settings.MODEL_TAG)
        # The window check's own tokenizer: the predictor's is busy on the model thread.
        self.tokenizer = window_tokenizer(path)
        # A fast tokenizer changes its truncation state per call: one thread at a time ("Already borrowed").
        self.tokenizer_lock = threading.Lock()

    # Scoring jobs (/jobs, serving/jobs.py) run as subprocesses started from this process.
    @bentoml.on_startup
    async def start_jobs(self) -> None:
        await job_routes.start_runner()

    @bentoml.on_shutdown
    async def stop_jobs(self) -> None:
        await job_routes.stop_runner()

    @bentoml.on_shutdown
    async def stop_model(self) -> None:
        await asyncio.to_thread(self.batcher.close)

    async def check_windows(self, texts: list[str], field: str, explain: bool = False) -> None:
        """Refuse a request that would take more than MAX_WINDOWS model windows (long texts take
        several; an explained text is read once more per word, at most 48 more), before any model
        work: one request must not hold the model for minutes."""
        if self.tokenizer is None:
            return
        per_text = [1 + min(len(words(clean(t))), MAX_OCCLUSIONS) if explain else 1 for t in texts]
        # A text has at most ~2 tokens a character (a piece per character plus word-start marks;
        # 3 leaves room for Unicode normalisation): most requests are under the cap without
        # tokenising, which would add work to this process on every request.
        size = window_size(self.tokenizer, self.metadata["max_tokens"])
        if sum(n * len(window_starts(3 * len(t) + 2, size)) for t, n in zip(texts, per_text)) <= settings.MAX_WINDOWS:
            return

        def windows() -> int:
            with self.tokenizer_lock:
                return sum(n * count_windows(self.tokenizer, self.metadata["max_tokens"], [t])
                           for t, n in zip(texts, per_text))

        count = await asyncio.to_thread(windows)
        if count > settings.MAX_WINDOWS:
            what = "model windows, explanations included," if explain else "model windows"
            raise BadInput(f"{field}: {count} {what} of {self.metadata['max_tokens']} tokens; the limit per "
                           f"request is {settings.MAX_WINDOWS}: send fewer or shorter texts")

    async def classify(self, texts: list[str]) -> list[dict]:
        """One dict per text: a prediction, or {"error", "client_error"} for a text that could not be
        scored. A batch holds other clients' texts, so one failure must not fail the batch."""
        return [answer(p) for p in await self.batcher.submit(texts)]

    async def explain(self, texts: list[str]) -> list[dict]:
        """Word attributions for each text's predicted label; a job of its own on the model thread,
        not merged with other requests (each text already makes its own batch of occluded variants)."""
        from kazstance.explain import explain

        explanations = await self.batcher.call(explain, self.predictor, texts)
        return [{"method": e.method, "words": e.words} for e in explanations]

    async def classify_checked(self, texts: list[str], field: str) -> list[dict]:
        results = await self.classify(texts)
        check_results(results, field)
        return results

    @bentoml.api(route="/predict")
    async def predict(self, texts: Annotated[list[Text], Field(min_length=1, max_length=settings.MAX_TEXTS)],
                      explain: bool = False) -> JSON:
        """Stance of each statement, in input order; with `explain`, each word's attribution to it."""
        await self.check_windows(texts, "texts", explain)
        predictions = await self.classify_checked(texts, "texts")
        for p in predictions:
            record("predict", p["label"], p["scores"], p.get("platform"))
        if explain:
            for p, explanation in zip(predictions, await self.explain(texts)):
                p["explanation"] = explanation
        return {"model": self.metadata["model"], "predictions": predictions}

    @bentoml.api(route="/predict_document")
    async def predict_document(self, text: Document) -> JSON:
        """Sentence-level stances plus the document's stance and the sentences behind it."""
        sentences = split_sentences(text)  # the guard has checked there are some, and not too many
        await self.check_windows(sentences, "text")
        predictions = [Prediction(**p) for p in await self.classify_checked(sentences, "sentences")]
        label, scores, evidence = aggregate(predictions, tuple(self.metadata["labels"]))
        platform, platform_scores = aggregate_platform(predictions)
        # The document's answer is counted; its sentences are not.
        record("predict_document", label, scores, platform)
        document = {"label": label, "scores": scores, "evidence": evidence}
        if platform is not None:
            document.update(platform=platform, platform_scores=platform_scores)
        return {
            "model": self.metadata["model"],
            "document": document,
            "sentences": [{"text": s, **asdict(p)} for s, p in zip(sentences, predictions)],
        }


KazStance.add_asgi_middleware(RequestGuard, max_bytes=settings.MAX_REQUEST_BYTES)
