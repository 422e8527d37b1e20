"""`kazstance serve`: resolve the model to a BentoML tag, set the service's environment, exec BentoML.

A model folder is first registered in the store (the service loads models by tag only), so
`kazstance serve --model models/default` and `--model kazstance:latest` both work. A folder whose
files are already in the store (same content hash) reuses that version: restarting the server
neither copies 466 MB again nor moves `kazstance:latest`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_tag(model: str) -> str:
    import bentoml

    from kazstance.modeling import read_meta

    if Path(model).is_dir():
        from training.registry import register_once

        meta = read_meta(Path(model))
        return register_once(Path(model), {"run_name": Path(model).name, "kind": meta.get("kind", "transformer"), **meta})
    return str(bentoml.models.get(model).tag)  # fails clearly if the tag is unknown


def serve_forever(model: str, host: str, port: int, backend: str, workers: int, threads: int | None,
                  api_key_file: Path | None = None, metrics_public: bool = False, jobs_dir: Path | None = None,
                  jobs_allow: list[Path] | None = None) -> None:
    tag = resolve_tag(model)
    env = {"KAZSTANCE_MODEL": tag, "KAZSTANCE_BACKEND": backend, "KAZSTANCE_WORKERS": str(workers)}
    if metrics_public:  # otherwise a KAZSTANCE_METRICS_PUBLIC already set stands
        env["KAZSTANCE_METRICS_PUBLIC"] = "1"
    if threads:
        env["KAZSTANCE_THREADS"] = str(threads)
    if api_key_file:
        env["KAZSTANCE_API_KEY_FILE"] = str(Path(api_key_file).resolve())
    if jobs_dir:
        env["KAZSTANCE_JOBS_DIR"] = str(Path(jobs_dir).resolve())
    if jobs_allow:  # the folders as given (absolute): a link such as /data -> /mnt/data keeps its name
        env["KAZSTANCE_JOBS_ALLOW"] = ":".join(os.path.abspath(p) for p in jobs_allow)
    os.environ.update(env)
    from serving.settings import api_key

    auth = "API key required" if api_key() else "no API key (set KAZSTANCE_API_KEY or --api-key-file to require one)"
    print(f"serving {tag} ({backend}) on http://{host}:{port}; {auth}", file=sys.stderr)
    # `python -m bentoml` from this interpreter: the venv's bin folder need not be on PATH.
    os.execv(sys.executable, [sys.executable, "-m", "bentoml", "serve", "serving.service:KazStance",
                              "--host", host, "--port", str(port)])
