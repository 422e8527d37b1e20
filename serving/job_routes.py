"""The HTTP side of scoring jobs: POST /jobs, GET /jobs/{id}, GET /jobs/{id}/result, DELETE /jobs/{id}.

The store and the runner are `serving/jobs.py`; this module turns requests into jobs and states
into answers. The request guard (`serving/http.py`) checks the API key first and gives every 4xx
its uniform shape; the JSON body checks of the prediction APIs do not apply here, since an upload
is a file of up to KAZSTANCE_MAX_UPLOAD_BYTES. Instead:

- The input: the file as the request body with `?filename=NAME` (any content type but JSON and
  multipart), or a multipart/form-data part with a file name (`curl -F file=@export.tar.gz`), or
  a server-side path under KAZSTANCE_JOBS_ALLOW: `?path=/abs/path` (empty body) or a JSON body
  `{"path": ...}`.
- Options (`serving.jobs.JobOptions`: format, unit, text_field, id_field, keep_text, keep_field):
  query parameters, multipart text fields, or members of the JSON body.
- An upload is written to the job's folder as it arrives, never held in memory: 413 past
  KAZSTANCE_MAX_UPLOAD_BYTES (at once when Content-Length says so), 408 when no byte comes for
  KAZSTANCE_BODY_TIMEOUT_S. It has no overall deadline, so BentoML's request timeout (the service's
  `traffic.timeout`, which would answer 504 to a long upload) is lifted for POST /jobs only
  (`exempt_uploads_from_request_timeout`); every other route keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from serving import jobs, settings
from serving.jobs import INPUT, MEDIA_TYPES, JobError, JobOptions, JobStore

MAX_JSON_BYTES = 64 * 1024
MAX_FORM_FIELD_BYTES = 4096
RUNNER: jobs.JobRunner | None = None  # this process's runner, set by the service at start-up


class ClientGone(Exception):
    """The client hung up mid-upload: nobody to answer."""


@lru_cache(maxsize=None)
def store() -> JobStore:
    return JobStore(settings.jobs_dir())


def runner() -> jobs.JobRunner:
    return jobs.JobRunner(store(), max_running=settings.JOBS_MAX_RUNNING, batch_size=settings.JOBS_BATCH_SIZE,
                          threads=settings.threads_per_worker())


@lru_cache(maxsize=None)
def served_model() -> str:
    """The model the service serves, as a concrete version: a job keeps scoring with it even if
    `latest` moves or the server is restarted on another model."""
    import bentoml

    return str(bentoml.models.get(settings.MODEL_TAG).tag)


def error(status: int, message: str, close: bool = False) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status,
                        headers={"connection": "close"} if close else None)


# ---------------------------------------------------------------------------------------------
# POST /jobs


async def submit(request: Request):
    reserved: list[Path] = []  # the job's folder once made: removed again unless the job is created
    try:
        job_id, source, options = await _read_job_request(request, reserved)
        state = store().create(job_id, source=source, options=options, model=served_model(), backend=settings.BACKEND)
    except (JobError, ClientGone, OSError) as err:
        for folder in reserved:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(err, JobError):
            return error(err.status, err.message, err.close)
        if isinstance(err, ClientGone):
            return error(400, "the client hung up before the upload was complete", close=True)
        # The jobs folder is full or unwritable: the server's trouble, said plainly.
        return error(507, f"the server could not store the job: {err.strerror or err}", close=True)
    except BaseException:  # the server is stopping, or a bug: no job, no leftovers
        for folder in reserved:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if RUNNER is not None:
        RUNNER.wake()
    return JSONResponse(jobs.public_view(state, None), status_code=202, headers={"location": f"/jobs/{job_id}"})


async def _read_job_request(request: Request, reserved: list[Path]) -> tuple[str, dict, JobOptions]:
    """The new job's id (its folder appended to `reserved`), its input and its options."""
    query = request.query_params.multi_items()
    named = dict((k, v) for k, v in query if k in ("path", "filename"))
    if len(named) < sum(k in ("path", "filename") for k, _ in query):
        raise JobError(400, "path or filename given twice")
    options = [(k, v) for k, v in query if k not in named]
    JobOptions.parse(options)  # refuse bad options before reading a byte of the upload
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()

    if content_type == "application/json":
        body = await _json_body(request)
        if "path" not in body or "filename" in body or "filename" in named:
            raise JobError(400, "a JSON body names a server-side file: {\"path\": \"/abs/path\", options}; to "
                                "upload a file, send it as the body with ?filename=NAME")
        if "path" in named:
            raise JobError(400, "path given twice")
        options += [(k, v) for k, v in body.items() if k != "path"]
        named["path"] = body["path"]
    elif "path" in named and await _has_body(request):
        raise JobError(400, "either upload a file or name a server-side path, not both")
    if "path" in named:
        if "filename" in named:
            raise JobError(400, "filename names an upload; a server-side path needs none")
        parsed = JobOptions.parse(options)
        path = await asyncio.to_thread(jobs.allowed_path, named["path"], settings.jobs_allow())
        job_id, folder = store().reserve()
        reserved.append(folder)
        return job_id, {"kind": "path", "path": str(path)}, parsed

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.MAX_UPLOAD_BYTES:
        raise JobError(413, f"upload over {settings.MAX_UPLOAD_BYTES} bytes (KAZSTANCE_MAX_UPLOAD_BYTES)", close=True)
    name = None if content_type == "multipart/form-data" else jobs.upload_name(named.get("filename"))
    job_id, folder = store().reserve()
    reserved.append(folder)
    if name is None:
        name, size, fields = await _receive_form(request, folder / INPUT)
        options += fields
    else:
        size = await _receive_file(request, folder / INPUT / name)
    if size == 0:
        raise JobError(400, "empty upload: send the file as the request body (?filename=NAME) or as a multipart "
                            "file part, or name a server-side file with ?path=")
    return job_id, {"kind": "upload", "name": name, "bytes": size}, JobOptions.parse(options)


async def _chunks(request: Request):
    """The body's chunks as they arrive: 413 past the upload limit, 408 after a pause longer than
    the body timeout (a stalled upload), ClientGone when the client hangs up."""
    size = 0
    while True:
        try:
            message = await asyncio.wait_for(request.receive(), settings.BODY_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise JobError(408, f"upload stalled: no data for {settings.BODY_TIMEOUT_S:g} s", close=True) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > settings.MAX_UPLOAD_BYTES:
            raise JobError(413, f"upload over {settings.MAX_UPLOAD_BYTES} bytes (KAZSTANCE_MAX_UPLOAD_BYTES)",
                           close=True)
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _has_body(request: Request) -> bool:
    async for _ in _chunks(request):
        return True
    return False


async def _json_body(request: Request) -> dict:
    data = b""
    async for chunk in _chunks(request):
        data += chunk
        if len(data) > MAX_JSON_BYTES:
            raise JobError(413, f"a JSON job request is at most {MAX_JSON_BYTES} bytes", close=True)
    try:
        body = json.loads(data)
    except ValueError as err:
        raise JobError(400, f"body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise JobError(400, "body must be a JSON object: {\"path\": ..., options}")
    return body


async def _receive_file(request: Request, path: Path) -> int:
    """Stream the body into `path`; its size."""
    size = 0
    with open(path, "wb") as f:
        async for chunk in _chunks(request):
            f.write(chunk)
            size += len(chunk)
        f.flush()
        await asyncio.to_thread(os.fsync, f.fileno())
    return size


async def _receive_form(request: Request, folder: Path) -> tuple[str, int, list[tuple[str, str]]]:
    """Stream a multipart/form-data body: its one part with a file name into `folder`, the other
    parts as small text fields (options). Returns the file's safe name, its size, the fields."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    if not params.get(b"boundary"):
        raise JobError(400, "multipart/form-data without a boundary")
    form = _Form(folder)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        async for chunk in _chunks(request):
            parser.write(chunk)
        parser.finalize()
    except JobError:
        raise
    except Exception as err:  # noqa: BLE001 - python-multipart's parse errors: the client's body
        raise JobError(400, f"malformed multipart body: {err}") from None
    finally:
        form.close()
    if form.name is None:
        raise JobError(400, "multipart upload without a file part: send it as e.g. -F file=@export.tar.gz")
    with open(folder / form.name, "rb") as f:
        await asyncio.to_thread(os.fsync, f.fileno())
    return form.name, form.size, form.fields


class _Form:
    """python-multipart callbacks: a part with a file name is written to disk as it comes."""

    def __init__(self, folder: Path):
        self.folder, self.name, self.size, self.fields = folder, None, 0, []
        self.file = None
        self.headers: dict[bytes, bytes] = {}
        self.header = b""
        self.field: tuple[str, bytearray] | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self.begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_done, "on_part_data": self.data, "on_part_end": self.end}

    def begin(self) -> None:
        self.headers, self.header, self.field = {}, b"", None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.headers[self.header.lower()] = self.headers.get(self.header.lower(), b"") + data[start:end]

    def header_end(self) -> None:
        self.header = b""

    def headers_done(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        field = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            if self.name is not None:
                raise JobError(400, "one file per job: the form holds more than one file part")
            self.name = jobs.upload_name(params[b"filename"].decode("utf-8", "replace"))
            self.file = open(self.folder / self.name, "wb")
        else:
            if len(self.fields) >= 64:
                raise JobError(400, "too many form fields")
            self.field = (field, bytearray())

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.field is not None:
            self.field[1].extend(data[start:end])
            if len(self.field[1]) > MAX_FORM_FIELD_BYTES:
                raise JobError(400, f"form field {self.field[0]!r} over {MAX_FORM_FIELD_BYTES} bytes")
        elif self.file is not None:
            self.file.write(data[start:end])
            self.size += end - start

    def end(self) -> None:
        if self.field is not None:
            name, value = self.field
            try:
                self.fields.append((name, value.decode("utf-8")))
            except UnicodeDecodeError:
                raise JobError(400, f"form field {name!r} is not UTF-8") from None
            self.field = None
        elif self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# ---------------------------------------------------------------------------------------------
# GET and DELETE /jobs/{id}, GET /jobs/{id}/result


async def status(request: Request):
    try:
        job_id = jobs.check_id(request.path_params["job_id"])
        if request.method == "DELETE":
            return await _delete(job_id)
        return JSONResponse(jobs.public_view(store().read(job_id), store().progress(job_id)))
    except JobError as err:
        return error(err.status, err.message)


async def _delete(job_id: str) -> JSONResponse:
    """Cancel a queued or running job (its scorer is killed, its input and output removed, its
    state kept: it reads `cancelled`); a finished job's folder is removed."""
    try:
        pid = jobs.cancel(store(), job_id)
    except JobError as err:
        if err.status != 409:
            raise
        store().remove(job_id)
        return JSONResponse({"id": job_id, "status": "deleted"})
    if pid:
        for _ in range(200):  # the runner (maybe in this process) reaps it; its files stay put until then
            if jobs.gone(pid):
                break
            await asyncio.sleep(0.05)
    store().discard_files(job_id)
    return JSONResponse(jobs.public_view(store().read(job_id), None))


async def result(request: Request):
    try:
        job_id = jobs.check_id(request.path_params["job_id"])
        state = store().read(job_id)
        if state["status"] != "done":
            why = f": {state['error']}" if state["error"] else ""
            raise JobError(409, f"job {job_id} is {state['status']}{why}; its result is here once it is done "
                                f"(GET /jobs/{job_id} for progress)")
        output = store().output(state)
        if not output.is_file():
            raise JobError(410, f"job {job_id}: its result is no longer on the server")
        fmt = state["options"]["format"]
        return FileResponse(output, media_type=MEDIA_TYPES[fmt], filename=f"kazstance-{job_id}.{fmt}")
    except JobError as err:
        return error(err.status, err.message)


ROUTES = [Route("/jobs", submit, methods=["POST"]),
          Route("/jobs/{job_id}", status, methods=["GET", "DELETE"]),
          Route("/jobs/{job_id}/result", result, methods=["GET"])]


# ---------------------------------------------------------------------------------------------
# The service's side: starting the runner, lifting the request timeout for uploads.


async def start_runner() -> None:
    global RUNNER
    RUNNER = runner()
    await RUNNER.start()


async def stop_runner() -> None:
    global RUNNER
    if RUNNER is not None:
        await RUNNER.stop()
        RUNNER = None


def exempt_uploads_from_request_timeout() -> None:
    """BentoML answers 504 to a request without a response after `traffic.timeout` seconds (120
    here), which would cut off a large upload; POST /jobs times its uploads itself (a pause
    between chunks), so it is exempt. BentoML builds its middleware from this module attribute
    when the server starts, after the service module is imported."""
    with contextlib.suppress(ImportError, AttributeError):
        from bentoml._internal.server.http import traffic

        base = traffic.TimeoutMiddleware
        if getattr(base, "exempts_uploads", False):
            return

        class UploadExemptTimeout(base):
            exempts_uploads = True

            async def __call__(self, scope, receive, send):
                if scope.get("type") == "http" and scope.get("method") == "POST" and scope.get("path") == "/jobs":
                    return await self.app(scope, receive, send)
                return await super().__call__(scope, receive, send)

        traffic.TimeoutMiddleware = UploadExemptTimeout
