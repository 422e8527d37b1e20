"""HTTP plumbing around the service: the request guard, the request schemas and GET /metadata.

The guard sits in front of BentoML and answers every bad request itself, at once, with one body
shape (`{"error": message, "status": code}`), so no client input reaches a code path that could
answer 5xx or hang:
1. API key (when one is configured): 401 without it; /livez, /readyz, /healthz (and /metrics if
   public) open. An answer sent before a body was read closes the connection.
2. POST to a JSON API: 415 unless JSON, 413 over the size limit, 408 when the body does not
   arrive within the body timeout, 400 when it is not parseable JSON (any parser failure: deep
   nesting, 5,000-digit integers, bad UTF-8), 400 when it breaks the request schema, naming the
   field and index (`texts[3]: ...`). Texts are validated with the same `clean()` the predictor
   uses, so a text of only invisible characters is refused here instead of failing a batch.
3. Concurrency: at most `max_concurrency` valid API requests run, `max_queue` more wait; past
   that, 429. A request holds no slot while its body is being read, so slow clients cannot
   starve the others.
4. Whatever answers 4xx/5xx below the guard (BentoML's own errors, unknown routes) is rewritten
   into the same body shape. (uvicorn's own 400 for a request that is not HTTP at all, and the
   header timeout of `serving/timeouts.py`, which closes the connection, never reach the guard.)
Valid bodies are re-serialised from the validated model before BentoML sees them.
The /jobs routes (`serving/job_routes.py`, mounted with /metadata) pass 1 and 4 but not 2 and 3:
an upload is a file, not JSON, with its own size limit and a timeout between chunks instead.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import re
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from kazstance.predictor import Prediction
from kazstance.text import clean, split_sentences
from serving import settings
from serving.job_routes import ROUTES as JOB_ROUTES

OPEN_PATHS = ("/livez", "/readyz", "/healthz")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _not_empty(text: str) -> str:
    if _SURROGATE.search(text):  # json.loads joins valid pairs, so any left is unpaired
        raise ValueError("text contains an unpaired surrogate escape (\\ud800-\\udfff), which is not Unicode text")
    if not clean(text):
        raise ValueError("text is empty once invisible characters and whitespace are removed")
    return text


Text = Annotated[str, Field(max_length=settings.MAX_CHARS), AfterValidator(_not_empty)]
Document = Annotated[str, Field(max_length=settings.MAX_DOCUMENT_CHARS), AfterValidator(_not_empty)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    texts: Annotated[list[Text], Field(min_length=1, max_length=settings.MAX_TEXTS)]
    explain: bool = False  # word attributions for the predicted label (kazstance/explain.py)


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: Document

    def check_sentences(self) -> None:
        count = len(split_sentences(self.text))
        if count > settings.MAX_SENTENCES:
            raise ValueError(f"text: {count} sentences; the limit is {settings.MAX_SENTENCES}")


SCHEMAS: dict[str, type[BaseModel]] = {"/predict": PredictRequest, "/predict_document": DocumentRequest}


def display_name(name: str | None) -> str | None:
    """A model name for the outside world: a local folder (`/srv/models/e5`, `models/base/e5`)
    becomes its last part, so /metadata never shows the server's paths; hub ids (`org/name`) stay."""
    if not name:
        return name
    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_dir():
        return re.split(r"[\\/]", name.rstrip("/\\"))[-1]
    return name


@lru_cache(maxsize=None)
def model_metadata(tag: str) -> dict:
    """What /metadata reports, read from the model's store entry (no weights loaded)."""
    import bentoml

    from kazstance.int8 import SIDECAR
    from kazstance.labels import PLATFORM_PREFIX, split_outputs
    from kazstance.modeling import read_meta

    model = bentoml.models.get(tag)
    meta = read_meta(Path(model.path))
    config_path = Path(model.path) / "config.json"
    if config_path.is_file():
        id2label = json.loads(config_path.read_text(encoding="utf-8"))["id2label"]
    else:  # the TF-IDF baseline keeps its labels beside its vocabulary
        id2label = json.loads((Path(model.path) / "tfidf.json").read_text(encoding="utf-8"))["id2label"]
    temperature = meta.get("temperature")
    sidecar = Path(model.path) / SIDECAR
    # The int8 artefact may be calibrated on its own.
    int8_temperature = json.loads(sidecar.read_text(encoding="utf-8")).get("temperature", temperature) \
        if sidecar.is_file() else temperature
    outputs = tuple(id2label[str(i)] for i in range(len(id2label)))
    stance, platform = split_outputs(outputs)
    return {
        "model": str(model.tag),
        "base_model": display_name(meta.get("base_model")),
        "labels": [outputs[i] for i in stance],
        "platforms": [outputs[i][len(PLATFORM_PREFIX):] for i in platform],  # empty: no platform head
        "max_tokens": meta.get("max_length"),
        "data_fingerprint": meta.get("data_fingerprint"),
        "metrics": meta.get("metrics", {}),
        "temperature": temperature,
        "int8_temperature": int8_temperature,
        "limits": settings.limits(),
        "auth": settings.api_key() is not None,
    }


async def metadata(request) -> JSONResponse:
    import bentoml

    backend = serving_backend(bentoml.get_current_service().predictor)
    meta = {**model_metadata(settings.MODEL_TAG), "backend": backend}
    if (backend if isinstance(backend, str) else backend["auto"]) == "int8":
        meta["temperature"] = meta["int8_temperature"]
    return JSONResponse(meta)


def serving_backend(predictor) -> str | dict:
    """The backend the service's predictor runs: as configured, or, for `auto`, what it chose
    (and the measurements behind the choice) when it loaded at start-up."""
    if settings.BACKEND != "auto":
        return settings.BACKEND
    return {"auto": predictor.backend_name, "measured": (predictor.backend_choice or {}).get("measured")}


metadata_app = Starlette(routes=[Route("/metadata", metadata, methods=["GET"]), *JOB_ROUTES])


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}, ensure_ascii=False).encode("utf-8")


async def _answer(send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = error_body(status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _describe(err: ValidationError) -> str:
    """The first problem, as `field[index]: message`."""
    first = err.errors(include_url=False)[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{where or 'body'}: {message}"


def parse_request(path: str, body: bytes) -> bytes:
    """Validate a JSON API body; returns the canonical body to hand on, or raises ValueError with
    the message a client gets in its 400."""
    try:
        parsed = json.loads(body)
    except Exception as err:  # noqa: BLE001 - any parser failure (RecursionError, ValueError) is the client's
        raise ValueError(f"body is not valid JSON: {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    try:
        request = SCHEMAS[path].model_validate(parsed)
    except ValidationError as err:
        raise ValueError(_describe(err)) from None
    if isinstance(request, DocumentRequest):
        request.check_sentences()
    return json.dumps(request.model_dump(), ensure_ascii=False).encode("utf-8")


class RequestGuard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.api_key = settings.api_key()
        self.running = asyncio.Semaphore(settings.MAX_CONCURRENCY)
        self.waiting = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and self.api_key is not None:
            return await send({"type": "websocket.close", "code": 1008})  # no WebSocket route takes a key
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self._authorised(scope):
            return await _answer(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                                 {"www-authenticate": "Bearer", **CLOSE})
        if scope["method"] != "POST" or scope["path"] not in SCHEMAS:
            return await self.app(scope, receive, _uniform_errors(send))
        body = await self._body(scope, receive, send)
        if body is None:  # answered already
            return
        # Only requests that passed every check wait for a slot; reading a slow body holds none.
        if self.waiting >= settings.MAX_QUEUE and self.running.locked():
            return await _answer(send, 429, "too many requests in flight; retry shortly", {"retry-after": "1"})
        self.waiting += 1
        try:
            await self.running.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self.app(_with_length(scope, len(body)), _replay(body, receive), _uniform_errors(send))
        finally:
            self.running.release()

    def _authorised(self, scope) -> bool:
        path = scope["path"]
        if self.api_key is None or path in OPEN_PATHS or (path == "/metrics" and settings.METRICS_PUBLIC):
            return True
        headers = dict((k.lower(), v) for k, v in scope["headers"])  # raw bytes: a key may be any UTF-8
        bearer = headers.get(b"authorization", b"")
        offered = bearer[7:].strip() if bearer[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(offered, self.api_key.encode("utf-8"))

    async def _body(self, scope, receive, send) -> bytes | None:
        """The validated, re-serialised body of a JSON API request, or None once an error is sent.
        An answer sent before the whole body came in closes the connection (`connection: close`),
        so a client cannot keep trickling bytes into a connection that has been answered."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            await _answer(send, 415, f"content type must be application/json, got {content_type or 'none'!r}", CLOSE)
            return None
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, 413, f"request body over {self.max_bytes} bytes", CLOSE)
            return None

        chunks, size, more = [], 0, True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.BODY_TIMEOUT_S
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
            except asyncio.TimeoutError:
                await _answer(send, 408, f"request body not received within {settings.BODY_TIMEOUT_S:g} s", CLOSE)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, 413, f"request body over {self.max_bytes} bytes", CLOSE)
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            # Parsing and validating megabytes takes a while: off the event loop, which serves everyone.
            parse = functools.partial(parse_request, scope["path"], body)
            return await asyncio.to_thread(parse) if len(body) > 65536 else parse()
        except ValueError as err:
            await _answer(send, 400, str(err))
            return None


CLOSE = {"connection": "close"}


def _with_length(scope, length: int) -> dict:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
    return {**scope, "headers": headers + [(b"content-length", str(length).encode())]}


def _replay(body: bytes, receive):
    """An ASGI `receive` that gives `body` once, then defers to the real one (disconnects)."""
    replayed = False

    async def replay():
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def answer(prediction: "Prediction | Exception") -> dict:
    """The service's answer for one text (`Predictor.predict_each`'s item)."""
    if isinstance(prediction, Exception):
        # A text the predictor refuses (ValueError) is the client's; anything else is the server's.
        return {"error": f"{type(prediction).__name__}: {prediction}", "client_error": isinstance(prediction, ValueError)}
    return asdict(prediction)


def check_results(results: list[dict], field: str) -> None:
    """Raise for the first text the model could not score: its input's fault (400) or the
    server's (503, retry), named by its index. The texts of other requests batched with it are
    unaffected either way."""
    from bentoml.exceptions import BadInput, ServiceUnavailable

    for i, result in enumerate(results):
        if "error" in result:
            if result.get("client_error"):
                raise BadInput(f"{field}[{i}]: {result['error']}")
            raise ServiceUnavailable(f"{field}[{i}] could not be scored ({result['error']}); retry later")


def _uniform_errors(send):
    """Wrap `send` so an error response from below (BentoML, Starlette) gets the guard's body shape."""
    status = 0

    async def wrapped(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            if status < 400:
                return await send(message)
            wrapped.start = message
            wrapped.body = b""
            return None
        if status < 400:
            return await send(message)
        wrapped.body += message.get("body", b"")
        if message.get("more_body", False):
            return None
        body = error_body(status, _message_of(wrapped.body, status))
        headers = [(k, v) for k, v in wrapped.start.get("headers", [])
                   if k.lower() not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**wrapped.start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


def _message_of(body: bytes, status: int) -> str:
    """The message inside whatever error body came from below: JSON object, array, or text."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text or f"HTTP {status}"
    while isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict):
        message = data.get("error") or data.get("detail") or data.get("msg")
        if isinstance(message, str):
            return message
        return json.dumps(data, ensure_ascii=False)[:500]
    return str(data)[:500] or f"HTTP {status}"
