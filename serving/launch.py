"""`kazstance serve`: resolve the model to a BentoML tag, set the service's environment, exec BentoML.

A model folder is first registered in the store (the service loads models by tag only), so
`kazstance serve --model models/default` and `--model kazstance:latest` both work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resolve_tag(model: str) -> str:
    import bentoml

    from kazstance.modeling import read_meta

    if Path(model).is_dir():
        from training.registry import register

        meta = read_meta(Path(model))
        return register(Path(model), {"run_name": Path(model).name, "kind": meta.get("kind", "transformer"), **meta})
    return str(bentoml.models.get(model).tag)  # fails clearly if the tag is unknown


def serve_forever(model: str, host: str, port: int, backend: str, workers: int, threads: int | None) -> None:
    tag = resolve_tag(model)
    env = {"KAZSTANCE_MODEL": tag, "KAZSTANCE_BACKEND": backend, "KAZSTANCE_WORKERS": str(workers)}
    if threads:
        env["KAZSTANCE_THREADS"] = str(threads)
    os.environ.update(env)
    print(f"serving {tag} ({backend}) on http://{host}:{port}", file=sys.stderr)
    # `python -m bentoml` from this interpreter: the venv's bin folder need not be on PATH.
    os.execv(sys.executable, [sys.executable, "-m", "bentoml", "serve", "serving.service:KazStance",
                              "--host", host, "--port", str(port)])
