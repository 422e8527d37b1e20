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
from pathlib import Path

META_FILE = "kazstance.json"
BENTO_MODEL_NAME = "kazstance"
DEFAULT_MODEL = f"{BENTO_MODEL_NAME}:latest"
NOT_SERVED = (".md", ".png")  # the model card and plots: editing them does not change the model


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
    """sha256 over a model folder's files (names and bytes, sorted by name; subfolders, the model
    card and plots left out).

    This, not the folder's name, is a model's identity: a retrained folder keeps its name and
    changes its hash. The int8 artefact and the metadata count, as they change what is served.
    Computed afresh each time (about a second for the default model): a cache keyed on sizes and
    times could miss weights rewritten in place."""
    digest = hashlib.sha256()
    for file in sorted(Path(path).iterdir()):
        if not file.is_file() or file.suffix.lower() in NOT_SERVED:
            continue
        digest.update(file.name.encode("utf-8") + b"\0")
        with file.open("rb") as f:
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
