"""OpenVINO variants the product does not ship, for `benchmarks/backends.py --openvino`.

The product's `openvino` and `openvino-bf16` backends (`kazstance/openvino.py`) run the exported
ONNX graph with texts grouped by exact length, unpadded, so a text's numbers never depend on its
batch. These are the alternatives they were chosen over, measured in the same run:
- `ov-padded-fp32`: `openvino.convert_model` of the transformers model (traced, SDPA attention),
  padded batches, compiled in f32;
- `ov-padded-bf16`: the same with `INFERENCE_PRECISION_HINT=bf16` (faster than grouping by
  length, but a padded statement's probabilities moved by up to 0.006 with its batch);
- `ov-nncf-int8`: the graph quantised by `nncf.quantize` (transformer preset: SmoothQuant, static
  per-tensor activation scales from calibration statements), padded, compiled in f32;
- `ov-int8-group64`: the product's `openvino-int8` graph with each token's activations quantised
  in groups of 64 input channels instead of 32 (fewer scales: faster, less exact).
Each is a `kazstance.backends.Backend`, so it runs through the shared predictor (the same
length-sorted batches of 32, softmax and label mapping) with its own temperature.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

VARIANTS = ("ov-padded-fp32", "ov-padded-bf16", "ov-nncf-int8", "ov-int8-group64")


def available() -> str | None:
    """None when OpenVINO and NNCF import, else why not."""
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as err:
        return f"{err}; pip install -e ."
    return None


class LogitsOnly(torch.nn.Module):
    """The transformers classifier as a graph of (input_ids, attention_mask) -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=torch.zeros_like(input_ids)).logits


def convert(path: Path, calibration: list[str], max_length: int, int8: bool = True) -> dict:
    """The fp32 and (with `int8`) int8 OpenVINO models of the model folder at `path` (int8
    calibrated on `calibration`)."""
    import nncf
    import openvino as ov

    from kazstance.modeling import load_transformer

    model, tokenizer = load_transformer(path)
    example = tokenizer(calibration[:2], padding=True, return_tensors="pt")
    shape = ov.PartialShape([-1, -1])
    fp32 = ov.convert_model(LogitsOnly(model), example_input={k: example[k] for k in ("input_ids", "attention_mask")},
                            input=[("input_ids", shape, ov.Type.i64), ("attention_mask", shape, ov.Type.i64)])

    def one(text: str) -> dict:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    if not int8:
        return {"fp32": fp32}
    quantised = nncf.quantize(fp32, nncf.Dataset(calibration, one), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))
    return {"fp32": fp32, "int8": quantised}


class PaddedOpenVinoBackend:
    """One compiled OpenVINO model; each call is one padded batch on one inference request."""

    def __init__(self, path: Path, graphs: dict, variant: str, max_length: int, threads: int):
        import openvino as ov

        from kazstance.backends import token_counts
        from kazstance.int8 import tokenizer_and_labels

        self.tokenizer, self.labels = tokenizer_and_labels(path)
        self.max_length = max_length
        self._token_counts = token_counts
        graph = graphs["int8" if variant == "ov-nncf-int8" else "fp32"]
        precision = "bf16" if variant == "ov-padded-bf16" else "f32"
        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                          "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
        self.request = compiled.create_infer_request()

    def lengths(self, texts: list[str]) -> list[int]:
        return self._token_counts(self.tokenizer, texts, self.max_length)

    def logits(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        out = self.request.infer({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return np.asarray(out[0], dtype=np.float32).copy()


def int8_group_backend(path: Path, max_length: int, threads: int, group: int):
    """The product's `openvino-int8` backend, its graph compiled with another activation group size."""
    from kazstance.openvino import INT8_GRAPH, OpenVinoBackend, compile_graph

    backend = OpenVinoBackend(path, max_length, "openvino-int8", threads)
    backend._request = compile_graph(Path(path) / INT8_GRAPH, "int8", threads, int8_group=group)
    return backend
