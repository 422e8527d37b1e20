"""The service's micro-batcher (serving/batching.py), against a fake predictor that records what it
is asked: concurrent requests share predictor calls, each gets exactly its own answers, and no
failure, cancellation or overload of one request reaches the others or stops the model thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from bentoml.exceptions import ServiceUnavailable

from kazstance.predictor import EmptyText
from serving.batching import Batcher

WAIT = 10  # seconds a test waits for the model thread before it counts as stuck


class FakePredictor:
    """Answers each text with `text.upper()`. A batch holding "hold" blocks until `release` is set
    (so the test can queue requests behind it); a batch holding "boom" raises as a whole; "bad"
    gets its own exception; "empty" an EmptyText with its index in the batch, as the real one."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.started = threading.Event()  # a held batch is running
        self.release = threading.Event()
        self.threads: set[int] = set()
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def enter(self):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.threads.add(threading.get_ident())

    def leave(self):
        with self.lock:
            self.active -= 1

    def predict_each(self, texts):
        self.enter()
        try:
            self.batches.append(list(texts))
            if "hold" in texts:
                self.started.set()
                assert self.release.wait(WAIT), "the test never released the held batch"
            time.sleep(0.002)  # long enough for an overlapping call to show
            if "boom" in texts:
                raise RuntimeError("the whole batch failed")
            return [ValueError(f"cannot read {t!r}") if t == "bad" else EmptyText(i) if t == "empty" else t.upper()
                    for i, t in enumerate(texts)]
        finally:
            self.leave()

    def explain(self, texts):
        self.enter()
        try:
            time.sleep(0.005)
            return [f"why {t}" for t in texts]
        finally:
            self.leave()


@pytest.fixture
def fake():
    fake = FakePredictor()
    yield fake
    fake.release.set()


@pytest.fixture
def make(fake):
    made = []

    def make(max_batch_size=256, max_latency_ms=30_000):
        made.append(Batcher(fake, max_batch_size, max_latency_ms))
        return made[-1]

    yield make
    for batcher in made:
        batcher.close(timeout=WAIT)


async def hold(batcher, fake) -> asyncio.Task:
    """Keep the model thread busy with a held batch; the requests sent meanwhile queue up."""
    held = asyncio.ensure_future(batcher.submit(["hold"]))
    assert await asyncio.to_thread(fake.started.wait, WAIT)
    return held


async def queued(batcher, *requests: list[str]) -> list[asyncio.Task]:
    tasks = [asyncio.ensure_future(batcher.submit(texts)) for texts in requests]
    await asyncio.sleep(0.05)  # every task has reached the queue
    return tasks


def test_concurrent_requests_share_one_predictor_call_and_each_gets_its_own_answers_in_order(make, fake):
    batcher = make()
    requests = [["a", "b"], ["c"], ["d", "e", "f"], ["g"]]

    async def run():
        held = await hold(batcher, fake)
        tasks = await queued(batcher, *requests)
        fake.release.set()
        return await held, await asyncio.gather(*tasks)

    held, answers = asyncio.run(run())
    assert held == ["HOLD"]
    assert answers == [[t.upper() for t in texts] for texts in requests]
    assert fake.batches == [["hold"], ["a", "b", "c", "d", "e", "f", "g"]]


def test_a_lone_request_is_answered_at_once_in_a_call_of_its_own(make, fake):
    batcher = make()

    async def run():
        began = time.perf_counter()
        answer = await batcher.submit(["x", "y"])
        return answer, time.perf_counter() - began

    answer, took = asyncio.run(run())
    assert answer == ["X", "Y"] and fake.batches == [["x", "y"]]
    assert took < 1  # no batching window to wait out


def test_batches_hold_at_most_max_batch_size_texts_and_never_split_a_request(make, fake):
    batcher = make(max_batch_size=4)
    requests = [["a1", "a2"], ["b1", "b2"], ["c1"], ["d1", "d2", "d3"], ["e1", "e2", "e3", "e4", "e5"], ["f1"]]

    async def run():
        held = await hold(batcher, fake)
        tasks = await queued(batcher, *requests)
        fake.release.set()
        await held
        return await asyncio.gather(*tasks)

    answers = asyncio.run(run())
    assert answers == [[t.upper() for t in texts] for texts in requests]
    # In order; the request of 5 exceeds the cap on its own, so it runs alone, whole.
    assert fake.batches[1:] == [["a1", "a2", "b1", "b2"], ["c1", "d1", "d2", "d3"], ["e1", "e2", "e3", "e4", "e5"], ["f1"]]


def test_a_failing_batch_fails_only_its_own_requests_and_the_next_batch_works(make, fake):
    batcher = make(max_batch_size=3)

    async def run():
        held = await hold(batcher, fake)
        # Two batches: [x, boom, y] fails as a whole; [z] is fine.
        tasks = await queued(batcher, ["x"], ["boom", "y"], ["z"])
        fake.release.set()
        await held
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results, await batcher.submit(["after"])

    (x, boom, z), after = asyncio.run(run())
    for failed in (x, boom):
        assert isinstance(failed, ServiceUnavailable)
        assert "RuntimeError: the whole batch failed" in str(failed) and failed.error_code.value == 503
    assert z == ["Z"] and after == ["AFTER"]


def test_a_text_that_cannot_be_scored_gets_its_own_error_and_its_neighbours_their_answers(make, fake):
    batcher = make()

    async def run():
        held = await hold(batcher, fake)
        tasks = await queued(batcher, ["a"], ["b", "bad"], ["c", "empty"])
        fake.release.set()
        await held
        return await asyncio.gather(*tasks)

    a, b, c = asyncio.run(run())
    assert a == ["A"]
    assert b[0] == "B" and isinstance(b[1], ValueError) and "'bad'" in str(b[1])
    # Its index among its own request's texts, not among the batch's.
    assert c[0] == "C" and isinstance(c[1], EmptyText) and c[1].index == 1
    assert len(fake.batches[1]) == 5


def test_a_cancelled_request_leaves_the_queue_and_the_others_are_answered(make, fake):
    batcher = make()

    async def run():
        held = await hold(batcher, fake)
        first, gone, last = await queued(batcher, ["a"], ["gone"], ["b"])
        gone.cancel()
        await asyncio.sleep(0.01)
        fake.release.set()
        return await held, await first, await last, gone.cancelled()

    held, first, last, cancelled = asyncio.run(run())
    assert (held, first, last, cancelled) == (["HOLD"], ["A"], ["B"], True)
    assert fake.batches == [["hold"], ["a", "b"]]  # the cancelled request's text was never scored


def test_a_request_cancelled_while_its_batch_runs_does_not_stop_the_model_thread(make, fake):
    batcher = make()

    async def run():
        held = await hold(batcher, fake)
        held.cancel()  # its batch is running already: the answer is dropped
        await asyncio.sleep(0.01)
        fake.release.set()
        return await batcher.submit(["next"]), held.cancelled()

    assert asyncio.run(run()) == (["NEXT"], True)


def test_a_request_that_waits_past_the_latency_budget_gets_503_and_is_never_scored(make, fake):
    batcher = make(max_latency_ms=200)

    async def run():
        held = await hold(batcher, fake)
        began = time.perf_counter()
        with pytest.raises(ServiceUnavailable, match="overloaded") as raised:
            await batcher.submit(["late"])
        waited = time.perf_counter() - began
        fake.release.set()
        await held  # the batch that was running still completes
        return raised.value, waited, await batcher.submit(["fresh"])

    error, waited, fresh = asyncio.run(run())
    assert error.error_code.value == 503
    assert 0.15 < waited < 5
    assert fresh == ["FRESH"]
    assert ["late"] not in fake.batches


def test_explanations_run_on_the_model_thread_between_batches_never_beside_them(make, fake):
    batcher = make(max_batch_size=5)

    async def run():
        # Interleaved: an explanation queued behind every third prediction.
        jobs = [batcher.call(fake.explain, [f"e{i // 3}"]) if i % 3 == 2 else batcher.submit([f"t{i}", f"u{i}"])
                for i in range(30)]
        answers = await asyncio.gather(*jobs)
        return [a for i, a in enumerate(answers) if i % 3 != 2], [a for i, a in enumerate(answers) if i % 3 == 2]

    predictions, explanations = asyncio.run(run())
    assert predictions == [[f"T{i}", f"U{i}"] for i in range(30) if i % 3 != 2]
    assert explanations == [[f"why e{i}"] for i in range(10)]
    assert fake.most_active == 1  # never two model calls at once
    assert len(fake.threads) == 1 and threading.get_ident() not in fake.threads  # one thread, not the loop's
    assert max(len(b) for b in fake.batches) <= 5 and len(fake.batches) < 20  # and predictions were merged


def test_an_error_raised_by_a_call_job_goes_to_its_caller_only(make, fake):
    batcher = make()

    def broken(texts):
        raise KeyError("no explanation")

    async def run():
        explanation = batcher.call(broken, ["a"])
        prediction = batcher.submit(["b"])
        return await asyncio.gather(explanation, prediction, return_exceptions=True)

    explanation, prediction = asyncio.run(run())
    assert isinstance(explanation, KeyError) and prediction == ["B"]


def test_closing_fails_the_queued_requests_and_refuses_new_ones(make, fake):
    batcher = make()

    async def run():
        held = await hold(batcher, fake)
        (waiting,) = await queued(batcher, ["w"])
        closing = asyncio.ensure_future(asyncio.to_thread(batcher.close, WAIT))
        await asyncio.sleep(0.05)
        fake.release.set()
        await closing
        results = await asyncio.gather(held, waiting, return_exceptions=True)
        with pytest.raises(ServiceUnavailable, match="shutting down"):
            await batcher.submit(["x"])
        return results

    held, waiting = asyncio.run(run())
    assert held == ["HOLD"] and isinstance(waiting, ServiceUnavailable)
