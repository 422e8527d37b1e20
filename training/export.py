"""`kazstance export`: turn a trained model into the int8 ONNX artefact the `int8` backend runs.

This module owns the recipe and where its output goes:

1. export the fp32 classifier (eager attention) to ONNX with `torch.export` (dynamic batch and
   sequence axes) and check it against torch on a padded batch: the older TorchScript exporter
   traced this model's mask arithmetic with the example's shapes and returned logits off by
   ~0.05 on other shapes;
2. quantise it with ONNX Runtime dynamic quantisation: int8 weights per output channel,
   activations quantised per batch at run time (measured on this AVX-512 VNNI CPU: signed and
   unsigned int8 weights run at the same speed; per-channel was ~20% faster and is more accurate);
3. write `model.int8.onnx` and `model.int8.json` (the weights' sha256, versions, probe error)
   beside the model, replacing any earlier artefact atomically.

A model folder is updated in place. A BentoML tag is never modified (store entries are
immutable): its files plus the artefact become a new version of the same model, with the same
labels and metadata plus `int8_from`, so `kazstance:latest` then serves the exported copy.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kazstance.int8 import ARTEFACT, SIDECAR, weights_digest
from kazstance.modeling import BENTO_MODEL_NAME, read_meta, resolve

FORMATS = ("onnx-int8",)
OPSET = 18
# Mixed scripts and lengths, so the check runs on a padded batch with more than one length.
PROBE_TEXTS = [
    "TikTok-ты бұғаттау керек, балаларға зияны көп.",
    "Запрет ничего не решит.",
    "Бұғаттау ешкімді қорғамайды, бәрі VPN арқылы кіреді, сондықтан бұл шешім тек қана адал "
    "пайдаланушыларға кедергі келтіреді деп санаймын.",
    "Ok",
]
FP32_TOLERANCE = 1e-3  # largest |logit difference| accepted between torch and the fp32 ONNX graph


class ExportError(RuntimeError):
    """The model cannot be exported, or the export does not reproduce it."""


@dataclass(frozen=True)
class ExportResult:
    path: Path          # the folder now holding the artefact
    tag: str | None     # the new BentoML version, when the model was given as a tag
    info: dict          # the sidecar written beside the artefact


def export_model(ref: str | Path, format: str = "onnx-int8") -> ExportResult:
    """Export a model folder in place, or a BentoML tag into a new version of that model."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    model = resolve(ref)
    if (model.path / "tfidf.json").is_file():
        raise ExportError(f"{ref} is the TF-IDF baseline: it has no transformer to quantise")
    if Path(ref).is_dir():
        info = export_int8(model.path, model.path)
        return ExportResult(path=model.path, tag=None, info=info)
    with tempfile.TemporaryDirectory(prefix="kazstance-export-") as tmp:
        info = export_int8(model.path, Path(tmp))
        tag = register_with_artefact(model.name, Path(tmp))
    import bentoml

    return ExportResult(path=Path(bentoml.models.get(tag).path), tag=tag, info=info)


def export_int8(model_dir: Path, out_dir: Path) -> dict:
    """Write `ARTEFACT` and `SIDECAR` for the model in `model_dir` into `out_dir`; returns the sidecar."""
    import onnxruntime
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    read_meta(model_dir)  # a clear error on a folder that is not a kazstance model
    model, tokenizer = load_for_export(model_dir)
    with tempfile.TemporaryDirectory(prefix="kazstance-onnx-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, tokenizer, fp32)
        fp32_error = max_logit_error(model, tokenizer, fp32)
        if fp32_error > FP32_TOLERANCE:
            raise ExportError(f"the fp32 ONNX graph differs from torch by {fp32_error:.2g} in a logit "
                              f"(tolerance {FP32_TOLERANCE}); not quantising a wrong graph")
        staged = Path(tmp) / ARTEFACT
        with _without_preprocessing_hint():
            quantize_dynamic(fp32, staged, weight_type=QuantType.QInt8, per_channel=True)
        int8_error = max_logit_error(model, tokenizer, staged)
        info = {
            "format": "onnx-int8",
            "weights_sha256": weights_digest(model_dir),
            "quantisation": {"method": "onnxruntime.quantize_dynamic", "weights": "int8, per channel",
                             "activations": "uint8, per batch at run time"},
            "opset": OPSET,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "probe_max_logit_error": {"fp32_onnx": fp32_error, "int8": int8_error},
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        # Artefact first, sidecar last: a half-finished export never looks valid to the backend.
        (out_dir / SIDECAR).unlink(missing_ok=True)
        shutil.move(str(staged), out_dir / ARTEFACT)
    (out_dir / SIDECAR).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


@contextlib.contextmanager
def _without_preprocessing_hint():
    """Silence quantize_dynamic's advice to pre-process first: measured here, ONNX Runtime's
    pre-processing gave no speed-up (its symbolic shape inference also fails on this graph)."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def load_for_export(model_dir: Path):
    """The fp32 model and tokenizer, with plain matmul-softmax-matmul attention: it exports to a
    smaller graph than SDPA's (no NaN guards in every layer) that ran ~8% faster once quantised."""
    from kazstance.modeling import load_transformer

    model, tokenizer = load_transformer(model_dir)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    return model, tokenizer


def export_fp32(model, tokenizer, out_file: Path) -> None:
    """fp32 ONNX with dynamic batch and sequence axes, named after the tokenizer's outputs."""
    import torch
    from torch.export import Dim

    example = dict(tokenizer(PROBE_TEXTS[:2], padding=True, return_tensors="pt"))
    # Example batch 2 and length > 1: torch.export would otherwise specialise a size-1 axis.
    batch, sequence = Dim("batch"), Dim("sequence", max=model.config.max_position_embeddings)
    # Quiet: the exporter narrates its steps and warns about torchvision and axis names; a real
    # failure still raises, and the result is checked against torch right after.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (), str(out_file), kwargs=example, input_names=list(example),
                              output_names=["logits"], dynamic_shapes={name: {0: batch, 1: sequence} for name in example},
                              opset_version=OPSET, dynamo=True, external_data=True, verbose=False)
    finally:
        exporter_log.setLevel(level)


def max_logit_error(model, tokenizer, onnx_file: Path) -> float:
    """Largest |logit difference| between torch and an ONNX graph on the padded probe batch."""
    import onnxruntime as ort
    import torch

    enc = tokenizer(PROBE_TEXTS, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    return float(np.abs(session.run(None, feeds)[0] - expected).max())


def register_with_artefact(tag: str, artefact_dir: Path) -> str:
    """A new store version: the tagged model's files plus the artefact; returns its tag."""
    import bentoml

    source = bentoml.models.get(tag)
    metadata = {**source.info.metadata, "int8_from": str(source.tag)}
    with bentoml.models.create(BENTO_MODEL_NAME, labels=dict(source.info.labels), metadata=metadata) as model:
        for item in Path(source.path).iterdir():
            # model.yaml is the store's own record of the source version; the new one gets its own.
            if item.is_file() and item.name not in (ARTEFACT, SIDECAR, "model.yaml"):
                shutil.copy2(item, Path(model.path) / item.name)
        for name in (ARTEFACT, SIDECAR):
            shutil.copy2(artefact_dir / name, Path(model.path) / name)
    return str(model.tag)
