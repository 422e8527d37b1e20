"""`kazstance serve` starts the service from a model folder, even when the venv is not on PATH."""

import os
import subprocess
import sys
import time

import httpx

from bento_server import REPO, free_port, ready, stop


def test_kazstance_serve_answers_predictions(tiny_model_dir, bentoml_home):
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PATH": "/usr/bin:/bin", "KAZSTANCE_THREADS": "1"}
    cli = [sys.executable, "-c", "from kazstance.cli import app; app()"]
    proc = subprocess.Popen(cli + ["serve", "--model", str(tiny_model_dir), "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while not ready(url):
            assert proc.poll() is None, "kazstance serve exited"
            assert time.time() < deadline, "kazstance serve did not become ready"
            time.sleep(0.5)
        r = httpx.post(f"{url}/predict", json={"texts": ["TikTok"]}, timeout=60)
        assert r.status_code == 200 and r.json()["model"].startswith("kazstance:")
    finally:
        stop(proc)
