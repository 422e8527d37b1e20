"""Finding and loading a trained kazstance model, whoever asks (CLI, service, scorer, tests).

A model is a folder: transformers files (safetensors weights, tokenizer, config with
id2label) plus `kazstance.json` (temperature, max length, base model, data fingerprint,
metrics). It may live anywhere on disk or in the BentoML model store under `kazstance:<version>`.
Loading is locked down: safetensors only, no remote code, no network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

META_FILE = "kazstance.json"
BENTO_MODEL_NAME = "kazstance"
DEFAULT_MODEL = f"{BENTO_MODEL_NAME}:latest"


class ModelNotFound(LookupError):
    """Neither a model folder nor a known BentoML tag."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: where its files are and the name predictions report."""

    path: Path
    name: str

    @property
    def meta(self) -> dict:
        return read_meta(self.path)


def content_hash(path: Path) -> str:
    """sha256 over a model folder's files (names and bytes, sorted by name; subfolders ignored).

    This, not the folder's name, is a model's identity: a retrained folder keeps its name and
    changes its hash. The int8 artefact and the metadata count, as they change what is served."""
    return _content_hash(Path(path).resolve(), *_stamp(Path(path)))


def _stamp(path: Path) -> tuple:
    # Cache key: hashing 470 MB takes about a second, and a folder's files rarely change in a run.
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file())


@lru_cache(maxsize=8)
def _content_hash(path: Path, *stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        digest.update(name.encode("utf-8") + b"\0")
        with (path / name).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def read_meta(path: Path) -> dict:
    meta_path = Path(path) / META_FILE
    if not meta_path.is_file():
        raise ModelNotFound(f"{path} is not a kazstance model folder (no {META_FILE}); train one with `kazstance train`")
    return json.loads(meta_path.read_text(encoding="utf-8"))


def resolve(ref: str | Path = DEFAULT_MODEL) -> ModelRef:
    """Resolve a model folder or a BentoML tag (`kazstance:latest`, `kazstance:<version>`)."""
    path = Path(ref)
    if path.is_dir():
        read_meta(path)  # fail early with a clear message on a wrong folder
        return ModelRef(path=path.resolve(), name=path.resolve().name)
    import bentoml  # imported lazily: it is slow to import and only tags need it
    from bentoml.exceptions import BentoMLException

    try:
        model = bentoml.models.get(str(ref))
    except (BentoMLException, ValueError) as err:
        raise ModelNotFound(
            f"model {ref!r} is neither a folder nor a model in the BentoML store ({err}); "
            "train one with `kazstance train --config configs/default.yaml`"
        ) from None
    return ModelRef(path=Path(model.path), name=str(model.tag))


def load_transformer(path: Path):
    """Load a sequence classifier and its tokenizer from a local folder, safely."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    safe = dict(local_files_only=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(path, **safe)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True, **safe)
    return model.eval(), tokenizer
