"""The `openvino` (f32), `openvino-bf16` and `openvino-int8` backends: the model's exported OpenVINO
graph, run by OpenVINO's CPU plugin, Intel's runtime for AVX-512 (VNNI, BF16) and AMX.

It owns reading the artefact `kazstance export --format openvino` writes beside a model
(`model.openvino.xml` and `.bin`: an XML graph and raw fp32 weights, nothing unpickled;
`model.openvino-int8.xml` and `.bin`: the same graph with int8 weights; `model.openvino.json`:
the weights it was made from, and per precision its own temperature and its parity with fp32 on
the validation split) and turning texts into logits with it. A missing or stale artefact fails
with the command that fixes it.

int8: the weights are int8 per output channel (NNCF's weight compression, asymmetric), and the CPU
plugin quantises each token's activations at run time in groups of `INT8_GROUP` input channels
(its dynamic quantisation), so the matrix products run on int8 dot products (VNNI, AMX) while no
scale is shared between tokens, let alone between the texts of a batch. Static int8 (one scale
per tensor, from calibration) was the fastest variant measured but gave fp32's label on only 97%
of the clear news test; groups of 64 were 4-23% faster than 32 (two runs) and gave it on 98.5%,
macro-F1 -0.006 (README, "Fast CPU inference").

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
INT8_GRAPH = "model.openvino-int8.xml"
INT8_WEIGHTS = "model.openvino-int8.bin"
SIDECAR = "model.openvino.json"
PRECISIONS = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "int8"}  # backend name -> sidecar key
FILES = {"f32": (GRAPH, WEIGHTS), "bf16": (GRAPH, WEIGHTS), "int8": (INT8_GRAPH, INT8_WEIGHTS)}  # graph, weights
INT8_GROUP = 32  # input channels per activation scale: OpenVINO's CPU default for dynamic quantisation
BUCKET = 16  # tokens: a text is padded to the next multiple, alone or in any batch


class OpenVinoArtefactMissing(ModelNotFound):
    """The model folder has no (or an out-of-date) OpenVINO graph; `kazstance export --format openvino` makes one."""


def check_artefact(path: Path, precision: str = "f32") -> dict:
    """The artefact's sidecar, after checking the graph `precision` runs exists and was exported
    from the folder's weights (the sidecar, written last by the same export, vouches for both graphs)."""
    graph, weights = FILES[precision]
    what = "int8 OpenVINO" if precision == "int8" else "OpenVINO"
    return checked_sidecar(path, graph, SIDECAR, "openvino", what, OpenVinoArtefactMissing, more=(weights,))


def compile_graph(graph, precision: str, threads: int | None = None, int8_group: int = INT8_GROUP):
    """An inference request on `graph` (a file or an `ov.Model`) compiled for this CPU: `f32` or
    `bf16` arithmetic on the fp32 graph, or `int8` (the int8-weight graph, activations quantised
    per token at run time in groups of `int8_group` input channels)."""
    import openvino as ov

    # One stream on every thread torch would use: the predictor already batches, and one request
    # at a time keeps a text's numbers independent of how calls interleave. Dynamic quantisation
    # is set either way, so the CPU plugin's default (which may change between releases) never
    # decides what runs.
    config = {"INFERENCE_PRECISION_HINT": "f32" if precision == "int8" else precision,
              "DYNAMIC_QUANTIZATION_GROUP_SIZE": int8_group if precision == "int8" else 0,
              "INFERENCE_NUM_THREADS": threads or torch_threads(), "NUM_STREAMS": 1}
    compiled = ov.Core().compile_model(graph if isinstance(graph, ov.Model) else str(graph), "CPU", config)
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
    """The exported graph compiled in one precision (`openvino`: f32, `openvino-bf16`: bf16,
    `openvino-int8`: the int8-weight graph)."""

    def __init__(self, path: Path, max_length: int, backend: str = "openvino", threads: int | None = None):
        path = Path(path)
        precision = PRECISIONS[backend]
        # The predictor takes its temperature from here (none without a validation split at export).
        self.info = check_artefact(path, precision).get(precision, {})
        self.tokenizer, self.labels = tokenizer_and_labels(path)
        self.max_length = max_length
        self._request = compile_graph(path / FILES[precision][0], precision, threads)
        self._lock = threading.Lock()  # one infer request: one call at a time

    def lengths(self, texts: list[str]) -> list[int]:
        return token_counts(self.tokenizer, texts, self.max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return grouped_logits(self._request, self.tokenizer, texts, self.max_length)
