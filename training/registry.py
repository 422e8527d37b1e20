"""Registering a finished run in the BentoML model store as `kazstance:<version>`.

The store copy is what the service and the scorer load by tag; its metadata carries the test
metrics and the hashes that tie it to its weights and data.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kazstance.int8 import weights_digest
from kazstance.modeling import BENTO_MODEL_NAME, content_hash


def register_once(run_dir: Path, meta: dict) -> str:
    """The newest store version holding exactly this folder's files, or a new one: restarting a
    server on the same folder neither copies it again nor moves `latest`."""
    import bentoml
    from bentoml.exceptions import NotFound

    digest = content_hash(run_dir)  # hashes the weights: once, for the lookup and the new entry
    try:
        versions = bentoml.models.list(BENTO_MODEL_NAME)
    except NotFound:  # an empty store
        versions = []
    matches = [m for m in versions if m.info.metadata.get("content_sha256") == digest]
    if matches:
        return str(max(matches, key=lambda m: m.info.creation_time).tag)
    return register(run_dir, meta, content_sha256=digest)


def register(run_dir: Path, meta: dict, content_sha256: str | None = None) -> str:
    """Copy the run's inference files into a new store entry; returns the tag."""
    import bentoml

    headline = meta.get("headline", "test")
    test = meta.get("metrics", {}).get(headline, {})
    metadata = {
        "run_name": meta["run_name"],
        "base_model": meta["base_model"],
        "data_fingerprint": meta["data_fingerprint"],
        "weights_sha256": weights_digest(run_dir),
        "content_sha256": content_sha256 or content_hash(run_dir),  # what `register_once` matches a folder by
        "temperature": meta["temperature"],
        "test_set": headline,
        "test_macro_f1": test.get("macro_f1"),
        "test_accuracy": test.get("accuracy"),
        "test_ece": test.get("ece"),
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}  # the store accepts no nulls
    with bentoml.models.create(BENTO_MODEL_NAME, labels={"run": meta["run_name"], "kind": meta["kind"]},
                               metadata=metadata) as model:
        for item in run_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, Path(model.path) / item.name)
    return str(model.tag)
