"""The `int8` backend: the model's exported int8 ONNX graph, run by ONNX Runtime on the CPU.

It owns reading the artefact that `kazstance export` writes beside a model (`model.int8.onnx`,
plus `model.int8.json` saying which weights it was made from) and turning a batch of texts into
logits with it. Weights are int8 (per output channel), activations are quantised at run time
(dynamic quantisation) per text, each text run on its own, so a text's probabilities never depend
on the batch it came in; AVX-512 VNNI does the matrix products. Nothing is unpickled: the
artefact is an ONNX protobuf, the tokenizer and label names come from the model folder as for
the fp32 backend. A missing or stale artefact fails with the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .backends import token_counts
from .modeling import ModelNotFound

ARTEFACT = "model.int8.onnx"
SIDECAR = "model.int8.json"  # what the artefact was made from, and how


class Int8ArtefactMissing(ModelNotFound):
    """The model folder has no (or an out-of-date) int8 artefact; `kazstance export` makes one."""


def weights_digest(path: Path) -> dict[str, str]:
    """sha256 of each safetensors file: ties an artefact to the exact weights it was made from."""
    digests = {}
    for weights in sorted(Path(path).glob("*.safetensors")):
        h = hashlib.sha256()
        with weights.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digests[weights.name] = h.hexdigest()
    return digests


def check_artefact(path: Path) -> dict:
    """The artefact's sidecar, after checking it exists and matches the folder's weights."""
    return checked_sidecar(path, ARTEFACT, SIDECAR, "onnx-int8", "int8", Int8ArtefactMissing)


def checked_sidecar(path: Path, artefact: str, sidecar: str, format: str, what: str, missing: type[Exception],
                    more: tuple[str, ...] = ()) -> dict:
    """The sidecar of an artefact `kazstance export --format FORMAT` writes beside a model, after
    checking the artefact (and any `more` files) exist and were made from the folder's weights;
    otherwise `missing`, naming the command that fixes it."""
    fix = f"run `kazstance export --model MODEL --format {format}` (MODEL: this model's folder or tag) first"
    if not all((path / name).is_file() for name in (artefact, *more, sidecar)):
        raise missing(f"{path} has no {what} model ({artefact}); {fix}")
    info = json.loads((path / sidecar).read_text(encoding="utf-8"))
    # A model retrained into the same folder would otherwise be served with the old exported weights.
    if info.get("weights_sha256") != weights_digest(path):
        raise missing(f"{path / artefact} was exported from other weights than {path}'s; {fix}")
    return info


def tokenizer_and_labels(path: Path) -> tuple:
    """The model folder's tokenizer and output names (id2label order), for a backend that runs an
    exported graph instead of the transformers model."""
    from transformers import AutoConfig, AutoTokenizer

    safe = dict(local_files_only=True, trust_remote_code=False)
    config = AutoConfig.from_pretrained(path, **safe)
    return AutoTokenizer.from_pretrained(path, **safe), tuple(config.id2label[i] for i in range(config.num_labels))


class Int8Backend:
    """Dynamic-int8 ONNX Runtime session over the exported graph; tokenises each batch to its longest text."""

    def __init__(self, path: Path, max_length: int, threads: int | None = None):
        path = Path(path)
        self.info = check_artefact(path)
        self.tokenizer, self.labels = tokenizer_and_labels(path)
        self.max_length = max_length

        # Batch invariance: ONNX Runtime's dynamic quantisation takes one activation scale per
        # tensor, so in a padded batch a text's probabilities would move with its neighbours (an
        # HTTP answer with other clients' traffic, a resumed scoring run with its chunking; 1.49 in
        # a logit was seen). So every text runs alone, unpadded, on a one-thread session: its
        # numbers are a function of the text only, whatever the batch or --threads. The cores
        # are used by running texts side by side (ONNX Runtime sessions take concurrent calls).
        self.threads = threads or torch_threads()
        self.session = make_session(path / ARTEFACT, 1)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._pool = None

    def lengths(self, texts: list[str]) -> list[int]:
        return token_counts(self.tokenizer, texts, self.max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        if self.threads == 1 or len(texts) == 1:
            return np.vstack([self._run(self.session, [text]) for text in texts])
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kazstance-int8")
        return np.vstack(list(self._pool.map(lambda text: self._run(self.session, [text]), texts)))

    def _run(self, session, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {name: enc[name].astype(np.int64, copy=False) for name in self.input_names}
        return session.run(None, feeds)[0].astype(np.float32, copy=False)


# Measured on this CPU (AVX-512 VNNI, ONNX Runtime 1.32): with the SkipLayerNormalization fusion
# the int8 model ran 20-35% slower than with plain Add + LayerNormalization, at 1 and 2 threads.
SLOW_FUSIONS = ("SkipLayerNormFusion",)


def make_session(onnx_file: Path, threads: int, optimisation: str = "all", disabled: tuple[str, ...] = SLOW_FUSIONS):
    """A CPU session: `threads` intra-op threads, one inter-op thread (the graph is a chain), every
    graph optimisation ("all" measured ~10% faster than "extended" or "basic") except `disabled`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimisation]
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled))


def torch_threads() -> int:
    """The threads torch uses here: exported graphs run on as many."""
    import os

    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # a slim int8-only install: one thread per core
        return len(os.sched_getaffinity(0))
