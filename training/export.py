"""`kazstance export`: turn a trained model into the int8 ONNX artefact the `int8` backend runs
(or, with `--format bf16`, calibrate the `bf16` backend: its own temperature, in `model.bf16.json`;
with `--format openvino`, write the OpenVINO graphs the `openvino`, `openvino-bf16` and
`openvino-int8` backends run, `export_openvino`). Each backend's temperature and parity with fp32
on the validation split (`calibrate_against_fp32`) go into its sidecar: `--backend auto` reads them.

This module owns the recipe and where its output goes:

1. export the fp32 classifier (eager attention) to ONNX with `torch.export` (dynamic batch and
   sequence axes) and check it against torch on a padded batch: the older TorchScript exporter
   traced this model's mask arithmetic with the example's shapes and returned logits off by
   ~0.05 on other shapes;
2. quantise it with ONNX Runtime dynamic quantisation: int8 weights per output channel,
   activations quantised per batch at run time (measured on this AVX-512 VNNI CPU: signed and
   unsigned int8 weights run at the same speed; per-channel was ~20% faster and is more accurate);
   what int8 cannot hold is found on calibration statements first (`--calibration`, default the
   training split) and split off or kept fp32: see `training/int8_plan.py`;
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
import torch

from kazstance.backends import BF16_SIDECAR
from kazstance.int8 import ARTEFACT, SIDECAR, weights_digest
from kazstance.labels import split_outputs
from kazstance.modeling import BENTO_MODEL_NAME, read_meta, resolve
from training.calibration import fit_temperature
from training.int8_plan import plan_int8

FORMATS = ("onnx-int8", "bf16", "openvino")
OPSET = 20  # the first with a Gelu operator: one kernel instead of Erf, Mul, Add and Div; int8 ran 10% faster
# Mixed scripts and lengths, so the check runs on a padded batch with more than one length.
PROBE_TEXTS = [
    "TikTok-ты бұғаттау керек, балаларға зияны көп.",
    "Запрет ничего не решит.",
    "Бұғаттау ешкімді қорғамайды, бәрі VPN арқылы кіреді, сондықтан бұл шешім тек қана адал "
    "пайдаланушыларға кедергі келтіреді деп санаймын.",
    "Ok",
]
FP32_TOLERANCE = 1e-3  # largest |logit difference| accepted between torch and the fp32 ONNX graph
CALIBRATION_TEXTS = 256


class ExportError(RuntimeError):
    """The model cannot be exported, or the export does not reproduce it."""


@dataclass(frozen=True)
class ExportResult:
    path: Path          # the folder now holding the artefact
    tag: str | None     # the new BentoML version, when the model was given as a tag
    info: dict          # the sidecar written beside the artefact


def export_model(ref: str | Path, format: str = "onnx-int8", calibration: Path | None = None,
                 validation: Path | None = None) -> ExportResult:
    """Export a model folder in place, or a BentoML tag into a new version of that model.

    `calibration`: a JSONL file of statements (`text` field) on which to measure what int8 does to
    each layer's input; default `data/news/train.jsonl` or `data/train.jsonl` when one exists, else
    the built-in probe texts.
    `validation`: labelled JSONL (`text`, `label`, optional `clarity`) on which to fit the backend's
    own temperature and measure its parity with fp32 (`calibrate_against_fp32`); default
    `data/validation.jsonl` when it exists, else int8 keeps the fp32 model's temperature."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    model = resolve(ref)
    if (model.path / "tfidf.json").is_file():
        raise ExportError(f"{ref} is the TF-IDF baseline: it has no transformer to quantise")
    labelled = validation_records(validation)
    if format == "bf16":
        if labelled is None:
            raise ExportError("bf16 needs labelled statements to fit its temperature on: pass --validation FILE")
        run, names = (lambda out: export_bf16(model.path, out, labelled)), (BF16_SIDECAR,)
    elif format == "openvino":
        from kazstance.openvino import GRAPH, INT8_GRAPH, INT8_WEIGHTS, SIDECAR as OPENVINO_SIDECAR, WEIGHTS

        run, names = ((lambda out: export_openvino(model.path, out, labelled)),
                      (GRAPH, WEIGHTS, INT8_GRAPH, INT8_WEIGHTS, OPENVINO_SIDECAR))
    else:
        texts, source = calibration_texts(calibration)
        run, names = (lambda out: export_int8(model.path, out, texts, source, labelled)), (ARTEFACT, SIDECAR)
    if Path(ref).is_dir():
        info = run(model.path)
        return ExportResult(path=model.path, tag=None, info=info)
    with tempfile.TemporaryDirectory(prefix="kazstance-export-") as tmp:
        info = run(Path(tmp))
        tag = register_with_artefact(model.name, Path(tmp), names)
    import bentoml

    return ExportResult(path=Path(bentoml.models.get(tag).path), tag=tag, info=info)


def export_int8(model_dir: Path, out_dir: Path, calibration: list[str] | None = None,
                calibration_source: str = "built-in probe statements",
                validation: Validation | None = None) -> dict:
    """Write `ARTEFACT` and `SIDECAR` for the model in `model_dir` into `out_dir`; returns the sidecar."""
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_meta(model_dir)  # a clear error on a folder that is not a kazstance model
    model, tokenizer = load_for_export(model_dir)
    reference = probe_logits(model, tokenizer)  # the trained model's, before any surgery
    calibration = calibration or PROBE_TEXTS
    plan = plan_int8(model, tokenizer, calibration, max_length=int(meta.get("max_length", 256)))
    with tempfile.TemporaryDirectory(prefix="kazstance-onnx-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, tokenizer, fp32)
        fp32_error = max_logit_error(reference, tokenizer, fp32)
        if fp32_error > FP32_TOLERANCE:
            raise ExportError(f"the fp32 ONNX graph differs from torch by {fp32_error:.2g} in a logit "
                              f"(tolerance {FP32_TOLERANCE}); not quantising a wrong graph")
        staged = Path(tmp) / ARTEFACT
        with _without_preprocessing_hint():
            quantize_dynamic(fp32, staged, weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=nodes_of(fp32, plan.fp32_layers))
        int8_error = max_logit_error(reference, tokenizer, staged)
        info = {
            "format": "onnx-int8",
            "weights_sha256": weights_digest(model_dir),
            "quantisation": {"method": "onnxruntime.quantize_dynamic", "weights": "int8, per channel",
                             "activations": "uint8, per text at run time",
                             "calibration": calibration_source, "calibration_texts": len(calibration),
                             **plan.as_info()},
            "opset": OPSET,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "probe_max_logit_error": {"fp32_onnx": fp32_error, "int8": int8_error},
        }
        if validation:
            # The stance outputs only: a platform head's outputs are another softmax, not calibrated.
            outputs = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
            stance, _ = split_outputs(outputs)
            max_length = int(meta.get("max_length", 256))
            info.update(calibrate_against_fp32(
                onnx_logits(staged, tokenizer, validation.texts, max_length)[:, stance],
                _torch_logits(model, tokenizer, validation.texts, max_length)[:, stance],
                validation, tuple(outputs[i] for i in stance)))
        out_dir.mkdir(parents=True, exist_ok=True)
        # Artefact first, sidecar last: a half-finished export never looks valid to the backend.
        (out_dir / SIDECAR).unlink(missing_ok=True)
        shutil.move(str(staged), out_dir / ARTEFACT)
    (out_dir / SIDECAR).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def calibration_texts(path: Path | None) -> tuple[list[str] | None, str]:
    """Up to CALIBRATION_TEXTS statements from a JSONL file (default: the news train split if
    present, news being what users score, else data/train.jsonl)."""
    if path is None:
        path = next((p for p in (Path("data/news/train.jsonl"), Path("data/train.jsonl")) if p.is_file()), None)
        if path is None:
            return None, "built-in probe statements"
    if not Path(path).is_file():
        raise ExportError(f"calibration file {path} does not exist")
    texts = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            text = json.loads(line).get("text", "") if line.strip() else ""
            if text.strip():
                texts.append(text)
            if len(texts) == CALIBRATION_TEXTS:
                break
    if not texts:
        raise ExportError(f"calibration file {path} has no `text` values")
    return texts, f"{path} (first {len(texts)})"


@dataclass(frozen=True)
class Validation:
    """Labelled statements a backend is calibrated and checked on. Every statement counts for label
    agreement with fp32, which needs no label (and the borderline ones are where backends part);
    the temperature and macro-F1 use the clear ones only, as training's calibration does."""
    texts: list[str]
    labels: list[str]
    clear: np.ndarray  # bool, per statement
    source: str


def validation_records(path: Path | None) -> Validation | None:
    """The labelled statements of `path` (default: data/validation.jsonl if present), cleaned."""
    from kazstance.text import clean

    if path is None:
        path = Path("data/validation.jsonl")
        if not path.is_file():
            return None
    if not Path(path).is_file():
        raise ExportError(f"validation file {path} does not exist")
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if clean(r.get("text", "")) and r.get("label")]
    clear = np.array([r.get("clarity") in (None, "clear") for r in rows], dtype=bool)
    if not clear.any():
        raise ExportError(f"validation file {path} has no clear records with `text` and `label`")
    return Validation([clean(r["text"]) for r in rows], [r["label"] for r in rows], clear,
                      f"{path} ({clear.sum()} clear statements of {len(rows)})")


def calibrate_against_fp32(logits: np.ndarray, fp32_logits: np.ndarray, validation: Validation,
                           stance_labels: tuple[str, ...]) -> dict:
    """A backend's own temperature (it computes a slightly different function from fp32's), and
    what `--backend auto` requires of it before it may stand in for fp32: label agreement with
    fp32 on every validation statement, and macro-F1 on the clear ones against fp32's."""
    from sklearn.metrics import f1_score

    clear = validation.clear
    y = np.array([stance_labels.index(label) for label in validation.labels])
    f1 = {name: float(f1_score(y[clear], lg[clear].argmax(1), average="macro", labels=range(len(stance_labels))))
          for name, lg in (("backend", logits), ("fp32", fp32_logits))}
    return {"temperature": fit_temperature(logits[clear], y[clear]), "temperature_fitted_on": validation.source,
            "validation_label_agreement": float((logits.argmax(1) == fp32_logits.argmax(1)).mean()),
            "validation_macro_f1_delta": f1["backend"] - f1["fp32"]}


def onnx_logits(onnx_file: Path, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """An ONNX graph's logits for `texts`, each text run alone, unpadded, as the int8 backend runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = []
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        out.append(session.run(None, {n: enc[n].astype(np.int64) for n in names})[0][0])
    return np.stack(out)


def _torch_logits(model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 32):
            enc = tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(model(**enc).logits.float().numpy())
    return np.concatenate(out)


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
    """fp32 ONNX with dynamic batch and sequence axes, named after the tokenizer's outputs.

    The padded forward, not `kazstance/unpadded.py`'s: exported with its packing as inputs, the
    unpadded graph ran int8 at 174-189 statements/s against 216-237 padded. With int8 matrix
    products four times cheaper, the scatters and transposes that re-pad for attention cost more
    than the padding they save (fp32 in torch gains ~13% from the same forward)."""
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


def nodes_of(onnx_file: Path, modules: list[str]) -> list[str]:
    """The ONNX nodes that compute the named torch modules, found by the module scope the exporter
    records on every node. The quantiser renames a Gemm it rewrites to `<name>_MatMul`, so both
    names are listed."""
    import ast

    import onnx

    wanted = set(modules)
    found = set()
    names = []
    for node in onnx.load(str(onnx_file), load_external_data=False).graph.node:
        scopes = next((ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), [])
        hit = wanted.intersection(scopes)
        if hit:
            found |= hit
            names += [node.name, f"{node.name}_MatMul"]
    if found != wanted:
        raise ExportError(f"no ONNX nodes found for {sorted(wanted - found)}; cannot keep them in fp32")
    return names


def probe_logits(model, tokenizer) -> np.ndarray:
    enc = tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits.numpy()


def max_logit_error(reference: np.ndarray, tokenizer, onnx_file: Path) -> float:
    """Largest |logit difference| between the trained model's probe logits and an ONNX graph's."""
    import onnxruntime as ort

    enc = tokenizer(PROBE_TEXTS, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    return float(np.abs(session.run(None, feeds)[0] - reference).max())


def register_with_artefact(tag: str, artefact_dir: Path, names: tuple[str, ...] = (ARTEFACT, SIDECAR)) -> str:
    """A new store version: the tagged model's files plus the exported `names`; returns its tag."""
    import bentoml

    source = bentoml.models.get(tag)
    kind = "int8" if ARTEFACT in names else "bf16"
    metadata = {**source.info.metadata, f"{kind}_from": str(source.tag)}
    with bentoml.models.create(BENTO_MODEL_NAME, labels=dict(source.info.labels), metadata=metadata) as model:
        for item in Path(source.path).iterdir():
            # model.yaml is the store's own record of the source version; the new one gets its own.
            if item.is_file() and item.name not in (*names, "model.yaml"):
                shutil.copy2(item, Path(model.path) / item.name)
        for name in names:
            shutil.copy2(artefact_dir / name, Path(model.path) / name)
    return str(model.tag)


def export_bf16(model_dir: Path, out_dir: Path, validation: Validation) -> dict:
    """Write `BF16_SIDECAR`: bf16's own temperature and its parity with fp32 (bf16 rounds every
    layer, so its logits are a slightly different function), fitted on `validation`."""
    from kazstance.backends import TorchBackend
    from kazstance.predictor import Predictor

    max_length = int(read_meta(model_dir).get("max_length", 256))
    fp32, bf16 = (Predictor(backend=TorchBackend(model_dir, max_length, dtype=d), name=d) for d in ("float32", "bfloat16"))
    info = {"format": "bf16", "weights_sha256": weights_digest(model_dir), "torch": torch.__version__,
            **calibrate_against_fp32(bf16.logits(validation.texts), fp32.logits(validation.texts), validation, fp32.labels)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / BF16_SIDECAR).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def export_openvino(model_dir: Path, out_dir: Path, validation: Validation | None = None) -> dict:
    """Write the OpenVINO graph, its weights and sidecar for the model in `model_dir` into `out_dir`.

    The graph is the fp32 ONNX graph of `export_fp32` (checked against torch), converted by
    OpenVINO with its weights kept fp32 (OpenVINO would store them fp16 by default). The int8
    graph is the same with its weights compressed to int8 by NNCF (per output channel,
    asymmetric: symmetric gave fp32's label on 99.3% of 1,421 validation, test and challenge
    statements, asymmetric on 99.5%). Each
    precision (f32, bf16, int8) then gets its own temperature and its parity with fp32 on
    `validation`, run as the backend runs it; bf16's is measured with this CPU's bf16 arithmetic."""
    import nncf
    import openvino as ov

    from kazstance.openvino import (GRAPH, INT8_GRAPH, INT8_WEIGHTS, SIDECAR as OPENVINO_SIDECAR, WEIGHTS,
                                    compile_graph, grouped_logits)

    max_length = int(read_meta(model_dir).get("max_length", 256))
    model, tokenizer = load_for_export(model_dir)
    reference = probe_logits(model, tokenizer)
    with tempfile.TemporaryDirectory(prefix="kazstance-openvino-") as tmp:
        onnx_file = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, tokenizer, onnx_file)
        staged = Path(tmp) / GRAPH
        ov.save_model(ov.convert_model(str(onnx_file)), str(staged), compress_to_fp16=False)
        f32 = compile_graph(staged, "f32")
        error = float(np.abs(grouped_logits(f32, tokenizer, PROBE_TEXTS, max_length) - reference).max())
        if error > FP32_TOLERANCE:
            raise ExportError(f"the OpenVINO graph differs from torch by {error:.2g} in a logit "
                              f"(tolerance {FP32_TOLERANCE}); not writing a wrong graph")
        nncf.set_log_level(logging.WARNING)  # not its per-layer table on every training run
        int8_graph = nncf.compress_weights(ov.Core().read_model(str(staged)), mode=nncf.CompressWeightsMode.INT8_ASYM)
        ov.save_model(int8_graph, str(Path(tmp) / INT8_GRAPH), compress_to_fp16=False)
        info = {"format": "openvino", "weights_sha256": weights_digest(model_dir), "openvino": ov.__version__,
                "nncf": nncf.__version__, "torch": torch.__version__, "probe_max_logit_error": error}
        if validation:
            outputs = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
            stance, _ = split_outputs(outputs)
            fp32 = _torch_logits(model, tokenizer, validation.texts, max_length)[:, stance]
            for precision, request in (("f32", f32), ("bf16", compile_graph(staged, "bf16")),
                                       ("int8", compile_graph(Path(tmp) / INT8_GRAPH, "int8"))):
                logits = grouped_logits(request, tokenizer, validation.texts, max_length)
                info[precision] = calibrate_against_fp32(logits[:, stance], fp32, validation,
                                                         tuple(outputs[i] for i in stance))
        out_dir.mkdir(parents=True, exist_ok=True)
        # Graphs and weights first, sidecar last: a half-finished export never looks valid to the backend.
        (out_dir / OPENVINO_SIDECAR).unlink(missing_ok=True)
        for name in (GRAPH, WEIGHTS, INT8_GRAPH, INT8_WEIGHTS):
            shutil.move(str(Path(tmp) / name), out_dir / name)
    (out_dir / OPENVINO_SIDECAR).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
