"""Starting and stopping the real BentoML service for tests, with a model registered by tag."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[2]
MAX_REQUEST_BYTES = 200_000  # the shared test server's body limit: small, so it is cheap to test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session: SIGTERM lets BentoML stop its workers; a loaded
    machine may need longer, then SIGKILL. A server killed already (a test's SIGKILL) is only reaped."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait(timeout=30)
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def kill_hard(proc: subprocess.Popen, spare: tuple[int, ...] = ()) -> None:
    """SIGKILL a server as a crash would: its process and every worker (BentoML starts each worker
    in a session of its own, so the server's process group alone leaves them running), but not
    the processes in `spare` (to see whether they die on their own)."""
    import psutil

    family = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    for pid in family:
        if pid not in spare:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_service(model_dir: Path, bentoml_home: Path, run_name: str, tag: str | None = None,
                    **env: str) -> Iterator[dict]:
    """Register `model_dir` (or serve `tag`, registered before), serve it on a free port, yield
    {"url", "tag", "proc"} (the server leads its own process group), always stop the server."""
    from training.registry import register

    if tag is None:
        meta = json.loads((model_dir / "kazstance.json").read_text())
        tag = register(model_dir, {"run_name": run_name, "kind": "transformer", **meta})
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "KAZSTANCE_MODEL": tag, "KAZSTANCE_THREADS": "1",
           "BENTOML_DO_NOT_TRACK": "True", **env}
    log_path = bentoml_home / f"serve-{run_name}-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "serving.service:KazStance", "--host",
                                 "127.0.0.1", "--port", str(port)], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 180
            while not ready(url):
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"server did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield {"url": url, "tag": tag, "proc": proc}
        finally:
            stop(proc)
