"""Micro-batching inside the API process: concurrent requests' texts share the model's passes.

BentoML 1.4 batches only the calls that reach a `batchable` API over HTTP (its dispatcher lives in
the HTTP app); a method called from another API of the same service is a plain call, batched with
nothing. Batching over HTTP between two services cost ~8 ms of CPU per request in serialisation,
so the service batches in-process with this instead.

`Batcher(predictor, max_batch_size, max_latency_ms)` owns one thread, the only one that runs the
model: torch's intra-op threads already use every core given to the worker, and two callers
splitting them would only add contention. Requests `await batcher.submit(texts)`; whenever the
thread becomes free it takes every request queued by then, up to `max_batch_size` texts, and makes
one `predictor.predict_each` call of them ("batch while busy": no waiting window, so a lone request
pays no added latency, and under load batches grow by themselves). Each request gets back its own
slice, in order:

- a request's texts are never split: one request with more than `max_batch_size` texts runs alone;
- a text that cannot be scored gets its exception in its place (`predict_each`), so it costs only
  its own request; an exception from the whole call fails the requests of that batch alone, with
  `ServiceUnavailable`, and the thread goes on with the next batch;
- a request that waited `max_latency_ms` in the queue is taken out of it and gets
  `ServiceUnavailable` (503): under overload, clients are told to retry instead of waiting ever
  longer (BentoML's adaptive batching sheds load past the same budget);
- a request whose caller is gone (cancelled) leaves the queue, or, when already taken, has its
  answer dropped.

`await batcher.call(fn, *args)` runs any other model work (explanations) on the same thread, as a
job of its own in the queue, so it never runs beside a batch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from bentoml.exceptions import ServiceUnavailable

from kazstance.predictor import EmptyText

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity: the queue removes the very job
class _Job:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    texts: list[str] | None = None  # a prediction job; None for a `call`
    fn: Callable[[], Any] | None = None


class Batcher:
    def __init__(self, predictor, max_batch_size: int, max_latency_ms: float, name: str = "kazstance-model"):
        self.predictor = predictor
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_latency_s = max_latency_ms / 1000
        self._queue: deque[_Job] = deque()
        self._changed = threading.Condition()
        self._closed = False
        # A daemon: a batch still running when the process exits must not hold the exit up.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, texts: Sequence[str]) -> list:
        """One `predict_each` item per text (a Prediction, or the text's exception), in order."""
        if not texts:
            return []
        return await self._enqueue(list(texts), None)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the model thread, between batches."""
        return await self._enqueue(None, functools.partial(fn, *args))

    def close(self, timeout: float | None = 30) -> None:
        """Fail what is still queued, let the running batch finish (up to `timeout`), stop."""
        with self._changed:
            self._closed = True
            queued, self._queue = list(self._queue), deque()
            self._changed.notify_all()
        for job in queued:
            _settle(job, error=ServiceUnavailable("the server is shutting down; retry"))
        self._thread.join(timeout)

    # --- the requests' side, on their event loop

    async def _enqueue(self, texts: list[str] | None, fn: Callable[[], Any] | None) -> Any:
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), texts, fn)
        with self._changed:
            if self._closed:
                raise ServiceUnavailable("the server is shutting down; retry")
            self._queue.append(job)
            self._changed.notify()
        # Set before any answer can arrive: the worker settles futures through this same loop.
        timer = loop.call_later(self.max_latency_s, self._expire, job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._unqueue(job)
            raise
        finally:
            timer.cancel()

    def _unqueue(self, job: _Job) -> bool:
        with self._changed:
            try:
                self._queue.remove(job)
            except ValueError:  # taken by the worker already, or expired
                return False
            return True

    def _expire(self, job: _Job) -> None:
        # Only a job still waiting: one being computed is nearly done, failing it would waste that.
        if self._unqueue(job) and not job.future.done():
            job.future.set_exception(ServiceUnavailable(
                f"overloaded: the request waited over {self.max_latency_s * 1000:g} ms for the model; retry later"))

    # --- the model thread

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                jobs = self._take()
            if not jobs:
                continue
            try:
                self._work(jobs)
            except Exception as err:  # noqa: BLE001 - a bug here must not stop the thread or strand callers
                log.exception("model thread: a batch of %d requests failed outside the model", len(jobs))
                for job in jobs:
                    _settle(job, error=ServiceUnavailable(f"internal error ({type(err).__name__}: {err}); retry"))

    def _take(self) -> list[_Job]:
        """The next work, under the lock: a `call` job at the head alone; otherwise the queued
        prediction jobs in order while they fit `max_batch_size` (the first always does). A `call`
        job behind the head stays for the next turn, so it waits for one batch at most."""
        # A caller that has gone (cancelled) or expired may still be queued for a moment.
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        if not self._queue:
            return []
        if self._queue[0].texts is None:
            return [self._queue.popleft()]
        taken: list[_Job] = []
        size = 0
        for job in self._queue:
            if job.texts is None or job.future.done():
                continue
            if taken and size + len(job.texts) > self.max_batch_size:
                break
            taken.append(job)
            size += len(job.texts)
        chosen = {id(job) for job in taken}
        self._queue = deque(job for job in self._queue if id(job) not in chosen)
        return taken

    def _work(self, jobs: list[_Job]) -> None:
        if jobs[0].texts is None:
            job = jobs[0]
            try:
                result = job.fn()
            except Exception as err:  # noqa: BLE001 - the caller's to raise
                _settle(job, error=err)
            else:
                _settle(job, result=result)
            return

        texts = [text for job in jobs for text in job.texts]
        try:
            results = list(self.predictor.predict_each(texts))
            if len(results) != len(texts):
                raise RuntimeError(f"the predictor gave {len(results)} results for {len(texts)} texts")
        except Exception as err:  # noqa: BLE001 - fails this batch's requests only
            log.exception("model thread: a batch of %d texts from %d requests failed", len(texts), len(jobs))
            for job in jobs:
                _settle(job, error=ServiceUnavailable(
                    f"the model failed on the batch holding this request ({type(err).__name__}: {err}); retry"))
            return
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            _settle(job, result=[_local(r, start) for r in results[start:end]])
            start = end


def _local(result, offset: int):
    """An EmptyText names its index in the merged batch; the caller knows only its own texts."""
    return EmptyText(result.index - offset) if isinstance(result, EmptyText) else result


def _settle(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    """Hand an answer to the job's loop (the caller may be gone: then it is dropped)."""

    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits for this answer
        pass
