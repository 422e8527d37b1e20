"""`kazstance serve` starts the service from a model folder (even when the venv is not on PATH),
registers a folder once, and can require an API key."""

import os
import subprocess
import sys
import time

import httpx

from bento_server import REPO, free_port, ready, stop


def test_kazstance_serve_answers_predictions_to_holders_of_the_key(tiny_model_dir, bentoml_home, tmp_path):
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret\n")
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(bentoml_home), "PATH": "/usr/bin:/bin", "KAZSTANCE_THREADS": "1"}
    cli = [sys.executable, "-c", "from kazstance.cli import app; app()"]
    env.pop("KAZSTANCE_API_KEY", None)
    proc = subprocess.Popen(cli + ["serve", "--model", str(tiny_model_dir), "--port", str(port), "--api-key-file",
                                   str(key_file)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while not ready(url):
            assert proc.poll() is None, "kazstance serve exited"
            assert time.time() < deadline, "kazstance serve did not become ready"
            time.sleep(0.5)
        assert httpx.post(f"{url}/predict", json={"texts": ["TikTok"]}, timeout=60).status_code == 401
        r = httpx.post(f"{url}/predict", json={"texts": ["TikTok"]}, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"].startswith("kazstance:")
    finally:
        stop(proc)


def test_serving_a_folder_again_reuses_its_store_version(tiny_model_dir, tmp_path, bentoml_home):
    import shutil

    import bentoml

    from serving.launch import resolve_tag

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    first = resolve_tag(str(folder))
    versions = len(bentoml.models.list("kazstance"))
    assert resolve_tag(str(folder)) == first  # a restart: no copy, `latest` does not move
    assert len(bentoml.models.list("kazstance")) == versions
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    retrained = resolve_tag(str(folder))  # new weights under the same folder name: a new version
    assert retrained != first and str(bentoml.models.get("kazstance:latest").tag) == retrained
