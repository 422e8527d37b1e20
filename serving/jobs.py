"""Scoring jobs over HTTP: the job store and the runner behind /jobs (the routes: `serving/job_routes.py`).

Why not BentoML's tasks (`@bentoml.task`): BentoML 1.4 stores a task's whole request, body
included, as one blob in a SQLite table (read into memory first, so no streamed upload); it runs
the task as a coroutine of the API process that nothing resumes after a restart (a task in
progress at a kill stays "in_progress" for good), and its local server cannot cancel a task.
Jobs need uploads streamed to disk, an exact resume after a restart and a cancel that stops the
work, so they keep their own durable store: a folder per job, which is also what the scorer's
resume protocol (`serving/writers.py`) works on.

Layout under the jobs folder (KAZSTANCE_JOBS_DIR):
    <id>/job.json       the job's state, replaced atomically; changed only under <id>/job.lock
    <id>/input/<name>   the upload (none for a job on a server-side path)
    <id>/output.<fmt>   the result, once done (`.output.<fmt>.partial/` while it is written)
    <id>/progress.json  rewritten by the scorer after each committed chunk
    <id>/scorer.log     the scorer's own output: a failed job's message comes from it
A folder without job.json is an upload still coming in (or one cut off by a crash: removed at
the next start once an hour old).

States: queued -> running -> done | failed; queued or running -> cancelled (DELETE, which kills
the scorer and removes the job's input and output but keeps its state, so its status still says
cancelled; a DELETE of a finished job removes its folder).

The runner: each job is one `kazstance score --resume` subprocess (killable, its memory its
own), started in creation order, at most JOBS_MAX_RUNNING at once. Always `--resume`: a first
run has nothing to resume and starts from the top; a job whose server stopped or was killed is
started again at the next start and continues from its last committed chunk, so its output is
that of an uninterrupted run. A scorer dies with the API process that started it
(PR_SET_PDEATHSIG on Linux), and a leftover one found at start is killed before its job resumes:
never two writers on one output. One process runs the jobs of a jobs folder (it holds an flock on
`.runner.lock`); other API workers only answer requests, and one of them takes over when that
process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from .score import UNITS
from .writers import OUTPUT_FORMATS

logger = logging.getLogger("kazstance.jobs")

JOB_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex: unguessable, and never a path
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
FORMATS = tuple(dict.fromkeys(OUTPUT_FORMATS.values()))  # parquet, jsonl, csv: what the scorer writes
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "jsonl": "application/x-ndjson",
               "csv": "text/csv; charset=utf-8"}
STATE, LOCK, PROGRESS, LOG, INPUT = "job.json", "job.lock", "progress.json", "scorer.log", "input"
MAX_FIELD_CHARS = 200
MAX_KEEP_FIELDS = 32
INCOMPLETE_UPLOAD_S = 3600
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class JobError(Exception):
    """A job request that cannot be served: `status` is the HTTP status to answer; `close` asks to
    close the connection (an answer sent before the whole body was read)."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


# ---------------------------------------------------------------------------------------------
# What a client may ask for.


@dataclass(frozen=True)
class JobOptions:
    """The scorer options a client may set (`kazstance score`'s, under the same names)."""

    format: str = "jsonl"
    unit: str = "statement"
    text_field: str = "text"
    id_field: str = "id"
    keep_text: bool = False
    keep_field: tuple[str, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[tuple[str, object]]) -> "JobOptions":
        """Options from (name, value) pairs: query parameters and form fields (strings), or a JSON
        object's members. `keep_field` may repeat (or be a JSON list); anything else given twice,
        unknown, or out of range raises JobError(400)."""
        names = [f for f in cls.__dataclass_fields__]
        given: dict[str, object] = {}
        keep: list[str] = []
        for name, value in items:
            if name not in names:
                raise JobError(400, f"unknown option {name!r}; the options are {', '.join(names)} "
                                    f"(and path or filename, to name the input)")
            if name == "keep_field":
                keep += value if isinstance(value, list) else [value]
                continue
            if name in given:
                raise JobError(400, f"option {name!r} given twice")
            given[name] = value
        options = {}
        for name in ("format", "unit"):
            if name in given:
                allowed = FORMATS if name == "format" else UNITS
                if given[name] not in allowed:
                    raise JobError(400, f"{name} {given[name]!r}: use one of {', '.join(allowed)}")
                options[name] = given[name]
        for name in ("text_field", "id_field"):
            if name in given:
                options[name] = _field_name(name, given[name])
        if "keep_text" in given:
            options["keep_text"] = _flag("keep_text", given["keep_text"])
        if keep:
            if len(keep) > MAX_KEEP_FIELDS:
                raise JobError(400, f"keep_field: at most {MAX_KEEP_FIELDS} fields")
            from serving.score import _kept

            try:
                options["keep_field"] = _kept(_field_name("keep_field", k) for k in keep)
            except ValueError as err:
                raise JobError(400, str(err).replace("--keep-field", "keep_field")) from None
        return cls(**options)


def _field_name(option: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS \
            or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise JobError(400, f"{option}: expected a field name of 1 to {MAX_FIELD_CHARS} printable characters")
    return value


def _flag(option: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise JobError(400, f"{option}: expected true or false, got {value!r}")


def check_id(job_id: object) -> str:
    """`job_id` if it is one this server could have made; checked before it names any path."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise JobError(400, "malformed job id: a job id is 32 lowercase hexadecimal digits")
    return job_id


def allowed_path(raw: object, roots: list[Path]) -> Path:
    """The server-side input a client named, resolved, if it lies under one of `roots` (absolute
    folders, as the operator wrote them); JobError otherwise: 403 when no folder is allowed or the
    path (or, through a symbolic link, where it leads) is outside them, 404 when it does not
    exist, 400 when it is no absolute path. A folder is checked whole: a link inside it that leads
    out is refused too."""
    if not roots:
        raise JobError(403, "this server scores no server-side paths: its operator allows no folder "
                            "(KAZSTANCE_JOBS_ALLOW); upload the file instead")
    if not isinstance(raw, str) or not raw or "\0" in raw or not os.path.isabs(raw):
        raise JobError(400, "path: expected an absolute path on the server")
    lexical = Path(os.path.normpath(raw))
    resolved_roots = []
    for root in roots:
        with contextlib.suppress(OSError, RuntimeError):
            resolved_roots.append(root.resolve(strict=True))
    # Checked as written first (`/data` allowed may be a link to `/mnt/data`), so a client learns
    # nothing about what exists outside the folders.
    if not any(_inside(lexical, root) for root in [*roots, *resolved_roots]):
        raise JobError(403, f"path {raw!r} is outside the folders this server allows")
    try:
        resolved = lexical.resolve(strict=True)
    except FileNotFoundError:
        raise JobError(404, f"path {raw!r}: no such file or folder") from None
    except (OSError, RuntimeError) as err:
        raise JobError(400, f"path {raw!r} cannot be read: {err}") from None
    if not any(_inside(resolved, root) for root in resolved_roots):
        raise JobError(403, f"path {raw!r} leads (through a symbolic link) outside the folders this server allows")
    if resolved.is_dir():
        from serving.readers import expand_inputs

        for found in expand_inputs([resolved]):
            try:
                target = found.path.resolve(strict=True)
            except (OSError, RuntimeError):
                continue  # a broken link or a loop: the scorer reports it as an error row
            if not any(_inside(target, root) for root in resolved_roots):
                raise JobError(403, f"path {raw!r} holds {found.path.relative_to(resolved)}, which leads outside "
                                    f"the folders this server allows")
    elif not resolved.is_file():
        raise JobError(400, f"path {raw!r} is neither a regular file nor a folder")
    else:
        check_readable_name(resolved.name)
    return resolved


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_readable_name(name: str) -> None:
    """Refuse (415) a file the scorer has no reader for: its extension says how it is read."""
    from serving.readers import _classify

    if _classify(name)[0] is None:
        raise JobError(415, f"{name!r}: the scorer reads .jsonl, .csv, .tsv, .parquet and .txt files (also "
                            f"compressed: .gz, .bz2, .xz, .zst) and .zip, .tar, .tar.gz, .tgz archives of them")


def upload_name(raw: object) -> str:
    """A safe file name for an upload: the last part of what the client called it, in ASCII
    letters, digits, `.`, `-` and `_` (other characters become `_`). Its extension decides how
    the scorer reads it, so it must name a kind the scorer reads."""
    if not isinstance(raw, str):
        raw = ""
    base = re.split(r"[\\/]", raw)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".-")[-MAX_FIELD_CHARS:]
    if not name or name.startswith("."):
        raise JobError(400, "name the upload, e.g. ?filename=export.tar.gz (or a multipart part with a file "
                            "name): its extension says how to read it")
    check_readable_name(name)
    return name


# ---------------------------------------------------------------------------------------------
# The store.


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, value: dict) -> None:
    """Replace `path` atomically and durably (a job's state must survive a kill at any moment)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JobStore:
    """Jobs as folders under `root`; see the module docstring."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        return self.root / check_id(job_id)

    def reserve(self) -> tuple[str, Path]:
        """A new job id and its (empty) folder, where the upload goes before the job exists."""
        self.root.mkdir(parents=True, exist_ok=True)
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir()
        (folder / INPUT).mkdir()
        return job_id, folder

    def create(self, job_id: str, *, source: dict, options: JobOptions, model: str, backend: str) -> dict:
        """Write the job's first state: from here on it exists, and waits its turn."""
        state = {"id": job_id, "status": "queued", "seq": time.time_ns(), "created_at": _now(),
                 "started_at": None, "finished_at": None, "input": source, "options": asdict(options),
                 "model": model, "backend": backend, "pid": None, "runs": 0, "error": None}
        _write_json(self.folder(job_id) / STATE, state)
        return state

    def read(self, job_id: str) -> dict:
        try:
            return json.loads((self.folder(job_id) / STATE).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise JobError(404, f"no job {job_id}") from None

    @contextlib.contextmanager
    def locked(self, job_id: str) -> Iterator[dict]:
        """The job's state, read under its lock (between processes too); what the caller changes
        in it is written back atomically before the lock is let go."""
        folder = self.folder(job_id)
        try:
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except (FileNotFoundError, NotADirectoryError):
            raise JobError(404, f"no job {job_id}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self.read(job_id)
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                _write_json(folder / STATE, state)
        finally:
            os.close(fd)

    def jobs(self) -> list[dict]:
        """Every job's state, oldest first."""
        states = []
        for entry in os.scandir(self.root) if self.root.is_dir() else []:
            if JOB_ID.fullmatch(entry.name):
                try:
                    states.append(self.read(entry.name))
                except (JobError, ValueError, OSError):
                    continue  # an upload still coming in
        return sorted(states, key=lambda s: (s["seq"], s["id"]))

    def output(self, state: dict) -> Path:
        return self.folder(state["id"]) / f"output.{state['options']['format']}"

    def progress(self, job_id: str) -> dict | None:
        try:
            return json.loads((self.folder(job_id) / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def discard_files(self, job_id: str) -> None:
        """Remove what a cancelled job leaves behind (upload, output, progress); keep its state."""
        folder = self.folder(job_id)
        for entry in folder.iterdir():
            if entry.name in (STATE, LOCK, LOG):
                continue
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def sweep_incomplete(self, older_than_s: float = INCOMPLETE_UPLOAD_S) -> None:
        """Remove upload folders that never became a job (a crash mid-upload)."""
        for entry in os.scandir(self.root) if self.root.is_dir() else []:
            folder = Path(entry.path)
            if JOB_ID.fullmatch(entry.name) and not (folder / STATE).exists() \
                    and time.time() - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(folder, ignore_errors=True)


def eta_seconds(progress: dict | None, now: float) -> float | None:
    """Seconds left, from the input bytes this run has read and how fast; None until known."""
    if not progress:
        return None
    if progress.get("finished"):
        return 0.0
    total, done = progress.get("bytes_total"), progress.get("bytes_done", 0)
    moved = done - progress.get("run_start_bytes", 0)
    spent = progress.get("updated_at", 0) - progress.get("run_started_at", 0)
    if not total or moved <= 0 or spent <= 0:
        return None
    left = (total - done) / (moved / spent) - (now - progress["updated_at"])
    return round(max(left, 0.0), 1)


def public_view(state: dict, progress: dict | None, now: float | None = None) -> dict:
    """What GET /jobs/{id} answers: the state without server internals, plus progress."""
    progress = progress or {}
    source = state["input"]
    view = {
        "id": state["id"], "status": state["status"], "created_at": state["created_at"],
        "started_at": state["started_at"], "finished_at": state["finished_at"],
        "input": {"path": source["path"]} if source["kind"] == "path" else {"filename": source["name"],
                                                                            "bytes": source["bytes"]},
        "options": state["options"], "model": state["model"],
        "rows_done": progress.get("rows_written", 0), "records_read": progress.get("rows_read", 0),
        "errors": progress.get("errors", 0),
        "bytes_done": progress.get("bytes_done", 0), "bytes_total": progress.get("bytes_total"),
        "eta_s": eta_seconds(progress, time.time() if now is None else now) if state["status"] == "running"
        else (0.0 if state["status"] == "done" else None),
        "error": state["error"],
    }
    if state["status"] == "done":
        view["result"] = f"/jobs/{state['id']}/result"
    return view


def cancel(store: JobStore, job_id: str) -> int | None:
    """Mark a queued or running job cancelled and kill its scorer; returns the scorer's pid (None
    when it had none). JobError(409) when the job has finished already."""
    with store.locked(job_id) as state:
        if state["status"] in FINAL:
            raise JobError(409, f"job {job_id} is {state['status']} already")
        pid = state["pid"] if state["status"] == "running" else None
        state.update(status="cancelled", finished_at=_now(), pid=None)
        if pid:
            _kill_group(pid)
    return pid


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the scorer leads its own session: its group is its pid


def gone(pid: int) -> bool:
    """Whether a process has ended (a zombie not reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


# ---------------------------------------------------------------------------------------------
# The runner.


def scorer_command(store: JobStore, state: dict, batch_size: int, threads: int | None) -> list[str]:
    """The job's `kazstance score` command line. Values go as --name=value and the input after
    `--`, so no value a client chose can be read as an option."""
    options, folder = state["options"], store.folder(state["id"])
    cmd = [sys.executable, "-m", "serving.jobs", str(os.getpid()), "score",
           f"--output={store.output(state)}", f"--model={state['model']}", f"--backend={state['backend']}",
           f"--unit={options['unit']}", f"--text-field={options['text_field']}", f"--id-field={options['id_field']}",
           f"--batch-size={batch_size}", "--resume", "--no-progress", f"--progress-file={folder / PROGRESS}"]
    cmd += [f"--threads={threads}"] if threads else []
    cmd += ["--keep-text"] if options["keep_text"] else []
    cmd += [f"--keep-field={name}" for name in options["keep_field"]]
    # An upload is named relative to the job's input folder (the scorer's working folder), so the
    # output's `source` column says `export.tar.gz:inner.jsonl`, not where the server keeps it.
    return cmd + ["--", state["input"]["path"] if state["input"]["kind"] == "path" else state["input"]["name"]]


class JobRunner:
    """Starts queued jobs' scorers, at most `max_running` at once, and records how they end."""

    def __init__(self, store: JobStore, max_running: int = 1, batch_size: int = 32, threads: int | None = None,
                 poll_s: float = 0.25):
        self.store, self.max_running, self.batch_size, self.threads = store, max_running, batch_size, threads
        self.poll_s = poll_s
        self.running: dict[str, subprocess.Popen] = {}
        self.lock_fd: int | None = None
        self.task: asyncio.Task | None = None
        self.woken = asyncio.Event()
        self.last_scan = 0.0

    async def start(self) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        """A job was just queued in this process: look at the queue now."""
        self.woken.set()

    async def stop(self) -> None:
        """Stop the loop and the scorers; their jobs stay `running` and resume at the next start."""
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for proc in self.running.values():
            _kill_group(proc.pid)
        for proc in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.running.clear()
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    async def _loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a full disk or a bad state file must not end the runner
                logger.exception("job runner")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.woken.wait(), self.poll_s)
            self.woken.clear()

    def tick(self) -> None:
        # Runs in the event loop's thread on purpose: PR_SET_PDEATHSIG ties a scorer to the thread
        # that started it, and this one lives as long as the process.
        if self.lock_fd is None and not self._take_over():
            return
        self._reap()
        # The queue is a scan of the jobs folder: every few seconds, or at once when woken.
        if len(self.running) < self.max_running and (self.woken.is_set() or time.monotonic() - self.last_scan > 2):
            self.last_scan = time.monotonic()
            self._start_queued()

    def _take_over(self) -> bool:
        """Become the one process that runs this folder's jobs, and resume the jobs a stopped or
        killed server left running."""
        fd = os.open(self.store.root / ".runner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.lock_fd = fd
        self.store.sweep_incomplete()
        for state in self.store.jobs():
            if state["status"] == "running":
                with self.store.locked(state["id"]) as current:
                    if current["status"] == "running":
                        self._kill_leftover(current)
                        current.update(status="queued", pid=None)
                        logger.info("job %s: resumes where it stopped", current["id"])
        return True

    def _kill_leftover(self, state: dict) -> None:
        """A scorer that outlived its server (no PR_SET_PDEATHSIG): kill it, if it is that job's."""
        pid = state.get("pid")
        if not pid:
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.store.folder(state["id"])).encode() in cmdline:
            _kill_group(pid)
            deadline = time.monotonic() + 10
            while not gone(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _reap(self) -> None:
        for job_id, proc in list(self.running.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.running[job_id]
            try:
                with self.store.locked(job_id) as state:
                    if state["status"] == "running" and state["pid"] == proc.pid:  # else: cancelled meanwhile
                        self._record_end(state, code)
            except JobError:  # removed meanwhile
                continue
            self.woken.set()  # a slot is free

    def _record_end(self, state: dict, code: int) -> None:
        # Exit 1 is "nothing could be read": the output holds an error row per input saying why.
        if code in (0, 1) and self.store.output(state).is_file():
            state.update(status="done", pid=None, finished_at=_now())
            return
        folder = self.store.folder(state["id"])
        try:
            log = (folder / LOG).read_text(encoding="utf-8", errors="replace")
        except OSError:
            log = ""
        lines = [line.strip() for line in log.replace(str(folder) + os.sep, "").splitlines() if line.strip()]
        said = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1] if lines else "")
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        state.update(status="failed", pid=None, finished_at=_now(), error=f"scorer failed ({how}): {said}"[:2000])

    def _start_queued(self) -> None:
        for state in self.store.jobs():
            if len(self.running) >= self.max_running:
                return
            if state["status"] != "queued" or state["id"] in self.running:
                continue
            with self.store.locked(state["id"]) as current:
                if current["status"] != "queued":
                    continue
                proc = self._spawn(current)
                self.running[current["id"]] = proc
                current.update(status="running", pid=proc.pid, started_at=current["started_at"] or _now(),
                               runs=current["runs"] + 1)
            logger.info("job %s: scorer %d started", current["id"], proc.pid)

    def _spawn(self, state: dict) -> subprocess.Popen:
        folder = self.store.folder(state["id"])
        cwd = folder / INPUT if state["input"]["kind"] == "upload" else folder
        code_root = str(Path(__file__).resolve().parents[1])  # where `serving` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")]))}
        with open(folder / LOG, "ab") as log:
            return subprocess.Popen(scorer_command(self.store, state, self.batch_size, self.threads), cwd=cwd,
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)


# ---------------------------------------------------------------------------------------------
# The scorer's entry point: `python -m serving.jobs PARENT_PID score ...`.


def _die_with_parent(parent: int) -> None:
    """Get SIGKILL when the API process that started this one dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the next start kills a leftover scorer instead
        return
    if os.getppid() != parent:  # it died before prctl took effect
        sys.exit(137)


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[1]))
    from kazstance.cli import app

    app(sys.argv[2:], prog_name="kazstance")
