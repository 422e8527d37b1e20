"""HTTP plumbing around the service: the request guard and the GET /metadata endpoint.

The guard answers before BentoML parses anything: a POST that is not JSON gets 415, a body
over the size limit gets 413, a body that is not valid JSON gets 400 — so no client input can
reach a code path that answers 5xx.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving import settings

JSON_ROUTES = ("/predict", "/predict_document")


@lru_cache(maxsize=None)
def model_metadata(tag: str) -> dict:
    """What /metadata reports, read from the model's store entry (no weights loaded)."""
    import bentoml

    from kazstance.int8 import SIDECAR
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
    if settings.BACKEND == "int8" and sidecar.is_file():  # the int8 artefact may be calibrated on its own
        temperature = json.loads(sidecar.read_text(encoding="utf-8")).get("temperature", temperature)
    return {
        "model": str(model.tag),
        "base_model": meta.get("base_model"),
        "labels": [id2label[str(i)] for i in range(len(id2label))],
        "data_fingerprint": meta.get("data_fingerprint"),
        "metrics": meta.get("metrics", {}),
        "temperature": temperature,
        "backend": settings.BACKEND,
        "limits": settings.limits(),
    }


async def metadata(request) -> JSONResponse:
    return JSONResponse(model_metadata(settings.MODEL_TAG))


metadata_app = Starlette(routes=[Route("/metadata", metadata, methods=["GET"])])


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class RequestGuard:
    """ASGI middleware: content type, body size and JSON well-formedness for the JSON APIs."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in JSON_ROUTES:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return await _error(415, f"content type must be application/json, got {content_type or 'none'!r}")(
                scope, receive, send)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await _error(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)

        # Read the whole (bounded) body, check it, then replay it to BentoML.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _error(413, f"request body over {self.max_bytes} bytes")(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return await _error(400, f"body is not valid JSON: {err}")(scope, receive, send)
        if not isinstance(parsed, dict):
            return await _error(400, "body must be a JSON object")(scope, receive, send)

        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
