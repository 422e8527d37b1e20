"""A closed-loop HTTP load generator: C concurrent clients, a bounded number of requests, one JSON report.

It owns how serving latency is measured for `benchmarks/serve.py`: latency is client-side wall time
from sending a request to having parsed its answer, so it includes HTTP, queueing and batching
waits — what a caller sees. Each of the C clients sends one request, waits for the answer, then
sends the next, until N requests have been sent or the time cap is hit, so a run always ends.
Every request is `POST {"texts": [one statement]}`; an answer counts as ok only when it is a 200
with exactly one prediction. It runs in its own process (`python benchmarks/loadgen.py ...`),
so the client's own CPU use is visible to the OS but never shares the server's interpreter.

Mixed load (`--bad-share 0.05`): that share of the requests, spread evenly, carries one of
`BAD_BODIES` instead (an invisible text, unparseable JSON, a wrong type...). A bad request is
answered correctly by a 4xx in the service's error shape; the report counts bad requests apart
(`bad`), so `errors` still means good requests that did not get their prediction, and `http_5xx`
counts 5xx answers to anyone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import httpx


# (body, content type): each must get a 4xx, never a 5xx, and never disturb the good requests.
BAD_BODIES = [
    (b'{"texts": ["\\u200b\\u00ad"]}', "application/json"),
    (b'{"texts": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json"),
    (b'{"texts": [' + b"9" * 5000 + b"]}", "application/json"),
    (b'{"texts": ["\\udcd0"]}', "application/json"),
    (b'{"texts": ["ok", 5]}', "application/json"),
    (b'{"texts": ["ok"', "application/json"),
    (b'{"text": "\\u00ad"}', "application/json"),
    (b'{"texts": ["ok"]}', "text/plain"),
]


def is_bad(i: int, bad_share: float) -> bool:
    """Whether request i is a bad one: evenly spread, the same requests in every run."""
    return bad_share > 0 and int((i + 1) * bad_share) > int(i * bad_share)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(latencies_s: list[float], errors: Counter, sent: int, wall_s: float, concurrency: int,
              timed_out: bool, bad: Counter | None = None) -> dict:
    """The report: latency percentiles (ms) over ok requests; throughput is ok requests per wall second."""
    ms = [x * 1000 for x in latencies_s]

    def ms_stat(value: float) -> float | None:  # None, not NaN, when nothing succeeded: JSON has no NaN
        return None if math.isnan(value) else round(value, 2)

    return {
        "concurrency": concurrency,
        "requests": sent,
        "ok": len(ms),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "wall_s": round(wall_s, 3),
        "throughput_rps": round(len(ms) / wall_s, 2) if wall_s > 0 else 0.0,
        "latency_ms": {name: ms_stat(percentile(ms, q)) for name, q in
                       (("p50", 50), ("p95", 95), ("p99", 99), ("min", 0), ("max", 100))}
                      | {"mean": ms_stat(sum(ms) / len(ms) if ms else math.nan)},
        "timed_out": timed_out,
        "http_5xx": sum(n for kind, n in (errors + (bad or Counter())).items() if kind.startswith("http_5")),
    } | ({"bad": dict(bad)} if bad else {})


async def run_load(url: str, texts: list[str], concurrency: int, requests: int, max_seconds: float,
                   timeout_s: float = 60.0, warmup: int = 0, bad_share: float = 0.0) -> dict:
    """Send `warmup` unmeasured requests, then `requests` measured ones from `concurrency` clients."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    bad = Counter()
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s) as client:
        async def one_bad(i: int) -> None:
            content, content_type = BAD_BODIES[i % len(BAD_BODIES)]
            try:
                r = await client.post(url, content=content, headers={"content-type": content_type})
                shaped = set(r.json()) == {"error", "status"}
                bad["4xx" if 400 <= r.status_code < 500 and shaped else f"http_{r.status_code}"] += 1
            except (httpx.HTTPError, ValueError) as err:
                bad[type(err).__name__] += 1

        async def one(i: int) -> tuple[float, str | None]:
            body = {"texts": [texts[i % len(texts)]]}
            start = time.perf_counter()
            try:
                r = await client.post(url, json=body)
                if r.status_code != 200:
                    error = f"http_{r.status_code}"
                else:
                    payload = r.json()
                    ok = isinstance(payload, dict) and len(payload.get("predictions") or []) == 1
                    error = None if ok else "bad_body"
            except (httpx.HTTPError, ValueError) as err:  # ValueError: an answer that is not JSON
                error = type(err).__name__
            return time.perf_counter() - start, error

        async def drive(total: int, deadline: float, offset: int) -> tuple[list[float], Counter, int]:
            latencies, errors, counter = [], Counter(), iter(range(total))

            async def client_loop() -> None:
                # Each client takes the next request number until all are taken or time is up.
                for i in counter:
                    if time.perf_counter() >= deadline:
                        return
                    if offset == 0 and is_bad(i, bad_share):
                        await one_bad(i)
                        continue
                    latency, error = await one(offset + i)
                    if error:
                        errors[error] += 1
                    else:
                        latencies.append(latency)

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
            return latencies, errors, len(latencies) + sum(errors.values()) + sum(bad.values())

        if warmup:
            await drive(warmup, time.perf_counter() + max_seconds, offset=requests)
        start = time.perf_counter()
        latencies, errors, sent = await drive(requests, start + max_seconds, offset=0)
        wall = time.perf_counter() - start
    return summarize(latencies, errors, sent, wall, concurrency, timed_out=sent < requests, bad=bad)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="full URL to POST to, e.g. http://127.0.0.1:3000/predict")
    parser.add_argument("--texts", type=Path, required=True, help="file with one statement per line")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=200, help="measured requests (upper bound)")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured requests sent first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout; a timeout is an error")
    parser.add_argument("--bad-share", type=float, default=0.0, help="share of bad requests (mixed load), e.g. 0.05")
    parser.add_argument("--out", type=Path, help="write the JSON report here (default: stdout)")
    args = parser.parse_args(argv)

    texts = [line for line in args.texts.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        sys.exit(f"{args.texts}: no statements")
    report = asyncio.run(run_load(args.url, texts, args.concurrency, args.requests, args.max_seconds,
                                  args.timeout, args.warmup, args.bad_share))
    report["url"] = args.url
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return report


if __name__ == "__main__":
    main()
