"""Bad input against the real service: every case gets its 4xx at once, in one body shape, and
costs nothing to the good requests in flight beside it.

Each case: (route, method, raw body, content type, expected status, text the error must contain).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from bento_server import MAX_REQUEST_BYTES

JSON = "application/json"


def body(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


CASES = {
    # /predict: each text is checked with the predictor's own clean(), the index named.
    "invisible only": ("/predict", "POST", body({"texts": ["\u200b\u00ad"]}), JSON, 400, "texts[0]: text is empty"),
    "invisible beside good text": ("/predict", "POST", body({"texts": ["ok", "\ufeff\u2060"]}), JSON, 400, "texts[1]"),
    "empty string": ("/predict", "POST", body({"texts": ["ok", ""]}), JSON, 400, "texts[1]"),
    "whitespace only": ("/predict", "POST", body({"texts": ["ok", "  \n\t"]}), JSON, 400, "texts[1]"),
    "number in texts": ("/predict", "POST", body({"texts": ["ok", 5]}), JSON, 400, "texts[1]: Input should be a valid string"),
    "null in texts": ("/predict", "POST", body({"texts": [None]}), JSON, 400, "texts[0]"),
    "nested list": ("/predict", "POST", body({"texts": [["a"]]}), JSON, 400, "texts[0]"),
    "texts is a string": ("/predict", "POST", body({"texts": "a"}), JSON, 400, "texts: Input should be a valid list"),
    "texts is a bool": ("/predict", "POST", body({"texts": True}), JSON, 400, "texts"),
    "no texts": ("/predict", "POST", body({}), JSON, 400, "texts: Field required"),
    "empty list": ("/predict", "POST", body({"texts": []}), JSON, 400, "texts: List should have at least 1 item"),
    "257 texts": ("/predict", "POST", body({"texts": ["ok"] * 257}), JSON, 400, "texts: List should have at most 256"),
    "5001 characters": ("/predict", "POST", body({"texts": ["ok", "x" * 5001]}), JSON, 400, "texts[1]: String should have at most 5000"),
    # 32 texts of 3,000 characters, a token each for the tiny model: ~67 windows of 64 tokens apiece.
    "more windows than a request may take": ("/predict", "POST", body({"texts": ["jk" * 1500] * 32}), JSON, 400,
                                             "model windows of 64 tokens; the limit per request is 2048"),
    "explanations over the window budget": ("/predict", "POST", body({"texts": ["a b c d e f g h i j"] * 256, "explain": True}),
                                            JSON, 400, "model windows, explanations included,"),
    "explain not a boolean": ("/predict", "POST", body({"texts": ["ok"], "explain": "yes"}), JSON, 400,
                              "explain: Input should be a valid boolean"),
    "unknown field": ("/predict", "POST", body({"texts": ["ok"], "lang": "kk"}), JSON, 400, "lang: unknown field"),
    "lone surrogate": ("/predict", "POST", b'{"texts": ["\\udcd0"]}', JSON, 400, "texts[0]"),
    "NaN for texts": ("/predict", "POST", b'{"texts": NaN}', JSON, 400, "texts"),
    # Bodies the guard cannot parse: a 400 at once, whatever the parser raised.
    "3,000 levels deep": ("/predict", "POST", b'{"texts": ' + b"[" * 3000 + b"]" * 3000 + b"}", JSON, 400, "not valid JSON"),
    "5,000-digit integer": ("/predict", "POST", b'{"texts": [' + b"7" * 5000 + b"]}", JSON, 400, "not valid JSON"),
    "truncated JSON": ("/predict", "POST", b'{"texts": ["a"', JSON, 400, "not valid JSON"),
    "empty body": ("/predict", "POST", b"", JSON, 400, "not valid JSON"),
    "JSON array": ("/predict", "POST", body(["a"]), JSON, 400, "must be a JSON object"),
    "JSON null": ("/predict", "POST", b"null", JSON, 400, "must be a JSON object"),
    "invalid UTF-8": ("/predict", "POST", b'{"texts": ["\xff\xfe"]}', JSON, 400, "not valid JSON"),
    "text/plain": ("/predict", "POST", body({"texts": ["a"]}), "text/plain", 415, "application/json"),
    "form": ("/predict", "POST", b"texts=a", "application/x-www-form-urlencoded", 415, "application/json"),
    "no content type": ("/predict", "POST", body({"texts": ["a"]}), None, 415, "application/json"),
    "over the size limit": ("/predict", "POST", body({"texts": ["a" * MAX_REQUEST_BYTES]}), JSON, 413, "over"),
    # /predict_document
    "document of a soft hyphen": ("/predict_document", "POST", body({"text": "\u00ad"}), JSON, 400, "text: text is empty"),
    "document empty": ("/predict_document", "POST", body({"text": ""}), JSON, 400, "text: text is empty"),
    "document not a string": ("/predict_document", "POST", body({"text": 3}), JSON, 400, "text: Input should be a valid string"),
    "document as texts": ("/predict_document", "POST", body({"texts": ["a"]}), JSON, 400, "text: Field required"),
    "document over 100,000 characters": ("/predict_document", "POST", body({"text": "a " * 50_001}), JSON, 400,
                                         "text: String should have at most 100000"),
    "document of 2,001 sentences": ("/predict_document", "POST", body({"text": "Иә. " * 2001}), JSON, 400,
                                    "2001 sentences; the limit is 2000"),
    "document deep JSON": ("/predict_document", "POST", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON, 400,
                           "not valid JSON"),
    # Routes and methods: the same body shape from BentoML's and Starlette's own answers.
    "GET /predict": ("/predict", "GET", None, None, 405, "Method Not Allowed"),
    "PUT /predict": ("/predict", "PUT", body({"texts": ["a"]}), JSON, 405, "Method Not Allowed"),
    "unknown route": ("/predict_all", "POST", body({"texts": ["a"]}), JSON, 404, "Not Found"),
}


def send(server, route: str, method: str, content: bytes | None, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.request(method, f"{server['url']}{route}", content=content, headers=headers, timeout=60)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_its_4xx_at_once_in_one_body_shape(tiny_server, case):
    route, method, content, content_type, status, message = CASES[case]
    began = time.perf_counter()
    r = send(tiny_server, route, method, content, content_type)
    elapsed = time.perf_counter() - began
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": r.json()["error"], "status": status}
    assert message in r.json()["error"], r.json()["error"]
    assert elapsed < 10, f"answered after {elapsed:.1f} s"  # it used to hang for the 120 s traffic timeout


def test_good_requests_in_flight_beside_bad_ones_all_succeed(tiny_server):
    # An invisible text used to fail every request batched with it; now each bad request fails
    # alone, before it reaches the model.
    good = [("/predict", "POST", body({"texts": [f"TikTok шектеу {i}", f"сөйлем {i}"]}), JSON, 200, "") for i in range(60)]
    bad = [CASES[name] for name in ("invisible only", "5,000-digit integer", "3,000 levels deep", "document of a soft hyphen",
                                    "lone surrogate", "truncated JSON")] * 5
    mixed = [item for pair in zip(good, bad + good[: len(good) - len(bad)]) for item in pair]

    with ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(lambda c: (c, send(tiny_server, *c[:4])), mixed))
    for (route, method, content, content_type, status, _), r in responses:
        assert r.status_code == status, (content[:60], r.status_code, r.text)
        if status == 200:
            assert len(r.json()["predictions"]) == 2


def test_json_content_type_with_parameters_is_accepted(tiny_server):
    r = send(tiny_server, "/predict", "POST", body({"texts": ["ok"]}), "Application/JSON; charset=utf-8")
    assert r.status_code == 200, r.text
