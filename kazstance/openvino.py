"""The `openvino` (f32) and `openvino-bf16` backends: the model's exported OpenVINO graph, run by
OpenVINO's CPU plugin, Intel's runtime for AVX-512 (VNNI, BF16) and AMX.

It owns reading the artefact `kazstance export --format openvino` writes beside a model
(`model.openvino.xml` and `.bin`: an XML graph and raw fp32 weights, nothing unpickled, plus
`model.openvino.json`: the weights it was made from, and per precision its own temperature and
its parity with fp32 on the validation split) and turning texts into logits with it. A missing or
stale artefact fails with the command that fixes it.

Batch invariance: padded to its batch's longest text, a statement's bf16 probabilities moved by
up to 0.006 with its neighbours. So a text's padding never depends on its batch: each text is
padded to the next multiple of 16 tokens, and texts of the same padded length run together. Its
input, and so its numbers, are then a function of the text alone (checked: identical alone and
in random batches). Measured on two cores in bf16, 32 random short statements a batch: exact
lengths, unpadded, 122/s (mixed lengths make many tiny batches); multiples of 8, 164/s; of 16, 180/s.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import numpy as np

from .backends import token_counts
from .int8 import checked_sidecar, tokenizer_and_labels, torch_threads
from .modeling import ModelNotFound

GRAPH = "model.openvino.xml"
WEIGHTS = "model.openvino.bin"
SIDECAR = "model.openvino.json"
PRECISIONS = {"openvino": "f32", "openvino-bf16": "bf16"}  # backend name -> OpenVINO inference precision
BUCKET = 16  # tokens: a text is padded to the next multiple, alone or in any batch


class OpenVinoArtefactMissing(ModelNotFound):
    """The model folder has no (or an out-of-date) OpenVINO graph; `kazstance export --format openvino` makes one."""


def check_artefact(path: Path) -> dict:
    """The artefact's sidecar, after checking it exists and matches the folder's weights."""
    return checked_sidecar(path, GRAPH, SIDECAR, "openvino", "OpenVINO", OpenVinoArtefactMissing, more=(WEIGHTS,))


def compile_graph(graph: Path, precision: str, threads: int | None = None):
    """An inference request on `graph` compiled for this CPU in `precision` (f32 or bf16)."""
    import openvino as ov

    # One stream on every thread torch would use: the predictor already batches, and one request
    # at a time keeps a text's numbers independent of how calls interleave.
    compiled = ov.Core().compile_model(str(graph), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads or torch_threads(), "NUM_STREAMS": 1})
    return compiled.create_infer_request()


def grouped_logits(request, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """Logits [texts, outputs]: each text padded to its own bucket (`bucket_length`), each bucket
    one batch."""
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(ids):
        groups[bucket_length(len(row), max_length)].append(i)
    names = {port.get_any_name() for port in request.model_inputs}
    pad = tokenizer.pad_token_id or 0
    out = None
    for length, members in groups.items():
        input_ids = np.full((len(members), length), pad, dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, i in enumerate(members):
            input_ids[row, :len(ids[i])] = ids[i]
            attention_mask[row, :len(ids[i])] = 1
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        result = np.asarray(request.infer({k: v for k, v in feeds.items() if k in names})[0], dtype=np.float32)
        if out is None:
            out = np.zeros((len(texts), result.shape[1]), dtype=np.float32)
        out[members] = result
    return out


def bucket_length(tokens: int, max_length: int) -> int:
    """The length a text of `tokens` tokens is padded to, whatever its batch: the next multiple of
    `BUCKET` (at most `max_length`)."""
    return min(-(-tokens // BUCKET) * BUCKET, max(max_length, tokens))


class OpenVinoBackend:
    """The exported graph compiled in one precision (`openvino`: f32, `openvino-bf16`: bf16)."""

    def __init__(self, path: Path, max_length: int, backend: str = "openvino", threads: int | None = None):
        path = Path(path)
        precision = PRECISIONS[backend]
        self.info = check_artefact(path).get(precision, {})  # the predictor takes its temperature from here
        self.tokenizer, self.labels = tokenizer_and_labels(path)
        self.max_length = max_length
        self._request = compile_graph(path / GRAPH, precision, threads)
        self._lock = threading.Lock()  # one infer request: one call at a time

    def lengths(self, texts: list[str]) -> list[int]:
        return token_counts(self.tokenizer, texts, self.max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return grouped_logits(self._request, self.tokenizer, texts, self.max_length)
