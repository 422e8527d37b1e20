"""The serving benchmark's load generator: its percentile math and its report, against a trivial local server.

The server here answers in microseconds, so the whole file runs in a few seconds and needs no model.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

LOADGEN = Path(__file__).resolve().parents[2] / "benchmarks" / "loadgen.py"
# benchmarks/ is a folder of scripts, not a package: load the module from its file.
_spec = importlib.util.spec_from_file_location("loadgen", LOADGEN)
loadgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loadgen)


class Handler(BaseHTTPRequestHandler):
    """Answers like the service: one prediction per text; the statement "fail" gets a 500."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        texts = json.loads(self.rfile.read(int(self.headers["content-length"])))["texts"]
        status = 500 if texts == ["fail"] else 200
        body = json.dumps({"predictions": [{"label": "neutral"} for _ in texts]}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    server.shutdown()


@pytest.mark.parametrize("values", [[5.0], [3.0, 1.0], list(range(1, 101)), [0.3, 9.1, 2.2, 2.2, 7.5, 1.0, 4.4]])
@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(values, q):
    assert loadgen.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_of_nothing_is_nan_and_reported_as_null():
    assert np.isnan(loadgen.percentile([], 50))
    report = loadgen.summarize([], loadgen.Counter({"http_500": 3}), sent=3, wall_s=1.0, concurrency=1, timed_out=False)
    assert report["latency_ms"]["p50"] is None and report["ok"] == 0 and report["errors"] == 3


def test_summary_percentiles_are_in_milliseconds_and_throughput_counts_ok_answers():
    report = loadgen.summarize([i / 1000 for i in range(1, 101)], loadgen.Counter({"http_503": 2}), sent=102,
                               wall_s=2.0, concurrency=4, timed_out=False)
    assert report["latency_ms"]["p50"] == 50.5
    assert report["latency_ms"]["p99"] == 99.01
    assert report["latency_ms"]["min"] == 1.0 and report["latency_ms"]["max"] == 100.0
    assert report["throughput_rps"] == 50.0
    assert report["error_kinds"] == {"http_503": 2}


def test_loadgen_process_writes_a_complete_report(url, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("бір\nfail\nекі\nтри\n", encoding="utf-8")
    out = tmp_path / "report.json"
    subprocess.run([sys.executable, str(LOADGEN), "--url", url, "--texts", str(texts), "--concurrency", "3",
                    "--requests", "20", "--warmup", "4", "--out", str(out)], check=True, timeout=60)
    report = json.loads(out.read_text())

    assert set(report) >= {"concurrency", "requests", "ok", "errors", "error_kinds", "wall_s", "throughput_rps",
                           "latency_ms", "timed_out", "url"}
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "min", "max", "mean"}
    assert report["concurrency"] == 3 and report["requests"] == 20 and not report["timed_out"]
    # Request i sends statement i mod 4, so "fail" (index 1) comes up 5 times in 20.
    assert report["errors"] == 5 and report["error_kinds"] == {"http_500": 5}
    assert report["ok"] == 15
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["throughput_rps"] == pytest.approx(15 / report["wall_s"], rel=0.01)


def test_time_cap_ends_a_run_early(url, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("бір\n", encoding="utf-8")
    report = loadgen.main(["--url", url, "--texts", str(texts), "--concurrency", "2", "--requests", "1000000",
                           "--max-seconds", "0.5", "--out", str(tmp_path / "r.json")])
    assert report["timed_out"] and report["requests"] < 1_000_000 and report["errors"] == 0


def test_mixed_load_spreads_the_bad_share_evenly_and_reports_5xx_to_anyone():
    bad = [i for i in range(2000) if loadgen.is_bad(i, 0.05)]
    assert len(bad) == 100 and max(b - a for a, b in zip(bad, bad[1:])) == 20
    assert not any(loadgen.is_bad(i, 0.0) for i in range(100))
    from collections import Counter

    report = loadgen.summarize([0.01] * 95, Counter(), 100, 1.0, 8, False, bad=Counter({"4xx": 4, "http_500": 1}))
    assert report["bad"] == {"4xx": 4, "http_500": 1} and report["http_5xx"] == 1 and report["errors"] == 0
