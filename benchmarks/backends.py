"""Backends on this CPU: speed against a plain Hugging Face baseline, share of the ISA's peak, parity.

It owns the numbers in `benchmarks/results/backends-<cpu>.json` and the backend table of the README.
Everything is measured in one run on one machine, and reported as ratios:

1. the machine: CPU model, cores and the ISA flags that decide which backend can be fast;
2. GEMM peaks on this CPU: fp32 and bf16 (torch/oneDNN), int8 (ONNX Runtime MatMulInteger, torch
   `_int_mm`), square and model-shaped products at batch 32, best of several runs;
3. the baseline: `AutoModelForSequenceClassification` in fp32, padded batches of 32 in input
   order, the way a plain transformers script scores a file;
4. each backend through the shared predictor (`torch` fp32, `bf16`, `int8`) at batch 32:
   statements/s, speed-up over the baseline, useful GFLOP/s (no padding counted) and its share of
   the peak of the precision it computes in; p50 latency of one statement at batch 1;
5. parity of each backend with fp32 on each labelled file (its clear items, where items carry a
   clarity): macro-F1 (fp32 and the backend, each with its own temperature), label agreement, ECE;
6. batch invariance: the largest probability change of a statement scored alone against the same
   statement inside the timed batches of 32 (an HTTP answer must not depend on other traffic).

With `--openvino`, the OpenVINO variants the product does not ship (padded fp32 and bf16, NNCF
static int8, the product's int8 graph with activation groups of 64; `--variants` picks some) run
beside them (`benchmarks/openvino_variants.py`; each gets its temperature fitted on
`--validation`). The last part is the default backend: what `--backend auto` picks here, and
the issue's targets checked on its row.

    python benchmarks/backends.py --model models/default --openvino data/news/test.jsonl data/challenge.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.inference import best_seconds, gemm_rate, model_dims, parity, statement_flops  # noqa: E402

HERE = Path(__file__).resolve().parent
PRECISION = {"torch": "fp32", "bf16": "bf16", "int8": "int8", "hf_baseline": "fp32", "openvino": "fp32",
             "openvino-bf16": "bf16", "openvino-int8": "int8", "ov-padded-fp32": "fp32", "ov-padded-bf16": "bf16",
             "ov-nncf-int8": "int8", "ov-int8-group64": "int8"}
INVARIANCE_STATEMENTS = 48  # scored alone, against their probabilities inside the timed batches
TARGETS = {"default_vs_hf_baseline_min": 4.0, "peak_share_min": 0.5, "p50_ms_c1_max": 15.0,
           "macro_f1_delta_abs_max": 0.005, "label_agreement_min": 0.99, "ece_max": 0.05}


def machine() -> dict:
    import onnxruntime
    import torch

    from kazstance.backend_choice import cpu, isa

    model, _ = cpu()
    try:
        import openvino
        openvino_version = openvino.__version__
    except ImportError:
        openvino_version = None
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)),
            "isa": isa(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino_version,
            "load_average_before": os.getloadavg()}


def bf16_rate(m: int, k: int, n: int, repeats: int) -> float:
    import torch

    a, b = torch.randn(m, k, dtype=torch.bfloat16), torch.randn(k, n, dtype=torch.bfloat16)
    return 2 * m * k * n / best_seconds(lambda: torch.mm(a, b), repeats)


def peaks(threads: int, repeats: int, d: dict) -> dict:
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (32 * 40, d["hidden"], d["ffn"]), (32 * 40, d["ffn"], d["hidden"])]
    rates = {"fp32": [gemm_rate(*s, "torch", False, threads, repeats) for s in shapes],
             "bf16": [bf16_rate(*s, repeats) for s in shapes],
             "int8": [gemm_rate(*s, lib, True, threads, repeats) for s in shapes for lib in ("onnxruntime", "torch")]}
    return {kind: max(r for r in values if r) for kind, values in rates.items()}


def hf_baseline(path: Path, texts: list[str], max_length: int, batch_size: int = 32):
    """A plain transformers scorer: fp32, padded batches of 32 in input order."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()

    def run():
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt")
                model(**enc)
    return run


def batch_invariance(predictor, texts: list[str]) -> float:
    """Largest probability change of a statement alone against inside the timed batches."""
    batched = predictor.predict_proba(texts)
    step = max(1, len(texts) // INVARIANCE_STATEMENTS)
    picked = list(range(0, len(texts), step))[:INVARIANCE_STATEMENTS]
    return float(max(np.abs(predictor.predict_proba([texts[i]])[0] - batched[i]).max() for i in picked))


def openvino_predictors(path: Path, args, max_length: int, threads: int) -> dict:
    """The OpenVINO variants not shipped, through the shared predictor, each with its own temperature."""
    from benchmarks.openvino_variants import VARIANTS, PaddedOpenVinoBackend, available, convert, int8_group_backend
    from kazstance.predictor import Predictor
    from training.calibration import fit_temperature

    missing = available()
    if missing:
        raise SystemExit(f"--openvino: {missing}")
    calibration = [json.loads(line)["text"] for line in args.calibration.read_text(encoding="utf-8").splitlines()
                   if line.strip()][:300]
    validation = [json.loads(line) for line in args.validation.read_text(encoding="utf-8").splitlines() if line.strip()]
    validation = [r for r in validation if r.get("clarity") in (None, "clear")]
    variants = args.variants.split(",") if args.variants else VARIANTS
    graphs = convert(path, calibration, max_length, int8="ov-nncf-int8" in variants)
    out = {}
    for variant in variants:
        backend = (int8_group_backend(path, max_length, threads, group=64) if variant == "ov-int8-group64"
                   else PaddedOpenVinoBackend(path, graphs, variant, max_length, threads))
        predictor = Predictor(backend=backend, name=variant)
        y = np.array([predictor.labels.index(r["label"]) for r in validation])
        predictor.temperature = fit_temperature(predictor.logits([r["text"] for r in validation]), y)
        out[variant] = predictor
    return out


def default_backend(path: Path, max_length: int, threads: int, result: dict) -> dict:
    """What `--backend auto`, the default, picks here (decided afresh, not from the cache), and the
    issue's targets checked on that backend's row of this run."""
    import tempfile

    from kazstance import backend_choice

    with tempfile.TemporaryDirectory() as cache:
        os.environ["KAZSTANCE_CACHE"] = cache
        choice = backend_choice.choose(path, max_length, threads)
    name, speed = choice["backend"], result["speed"][choice["backend"]]
    parity_rows = [by_backend[name] for by_backend in result["parity"].values()]
    met = {target: bool(ok) for target, ok in {  # numpy comparisons give numpy booleans
           "vs_hf_baseline": speed["vs_hf_baseline"] >= TARGETS["default_vs_hf_baseline_min"],
           "peak_share": speed["peak_share"] >= TARGETS["peak_share_min"],
           "p50_ms_c1": speed["p50_ms_batch1"] <= TARGETS["p50_ms_c1_max"],
           "macro_f1_delta": all(abs(r.get("macro_f1_delta", 0)) <= TARGETS["macro_f1_delta_abs_max"] for r in parity_rows),
           "label_agreement": all(r["label_agreement"] >= TARGETS["label_agreement_min"] for r in parity_rows),
           "ece": all(r["ece"] <= TARGETS["ece_max"] for r in parity_rows),
           "batch_invariant": speed["batch_invariance_max_prob_diff"] <= 1e-6}.items()}
    return {"backend": name, "measured": choice["measured"], "met": met}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="labelled JSONL files; the first is timed")
    parser.add_argument("--model", default="models/default", help="model folder (with the int8 artefact)")
    parser.add_argument("--backends", default="torch,bf16,int8,openvino,openvino-bf16,openvino-int8")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    parser.add_argument("--openvino", action="store_true",
                        help="also the OpenVINO variants the product does not ship (padded fp32 and bf16, "
                             "NNCF int8, int8 groups of 64)")
    parser.add_argument("--variants", default="",
                        help="with --openvino, these variants only (comma-separated; default: all of them)")
    parser.add_argument("--validation", type=Path, default=Path("data/news/validation.jsonl"),
                        help="labelled JSONL: the OpenVINO variants' temperatures are fitted on its clear items")
    parser.add_argument("--calibration", type=Path, default=Path("data/news/train.jsonl"),
                        help="statements NNCF calibrates the OpenVINO int8 variant on (the first 300)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from kazstance.predictor import Predictor
    from training.metrics import compute_metrics

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    path = Path(args.model)
    meta = json.loads((path / "kazstance.json").read_text())
    d = model_dims(path)
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "model": str(path), "threads": threads, "targets": TARGETS}
    print(json.dumps(result["machine"]), flush=True)
    result["peak_ops_per_s"] = peaks(threads, args.repeats, d)
    print("peaks GOP/s:", {k: round(v / 1e9) for k, v in result["peak_ops_per_s"].items()}, flush=True)

    files = {str(f): [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
             for f in args.files}
    timed = [r["text"] for r in next(iter(files.values()))]
    predictors = {b: Predictor.load(path, backend=b, threads=threads) for b in args.backends.split(",")}
    if args.openvino:
        predictors.update(openvino_predictors(path, args, meta["max_length"], threads))
    tokens = np.array([len(ids) for ids in predictors["torch"].backend.tokenizer(timed, truncation=True,
                                                                                 max_length=meta["max_length"])["input_ids"]])
    useful = sum(a.sum() for a in statement_flops(tokens, d))

    speed = {}
    baseline = hf_baseline(path, timed, meta["max_length"])
    speed["hf_baseline"] = {"statements_per_s": len(timed) / best_seconds(baseline, args.repeats)}
    for name, predictor in predictors.items():
        seconds = best_seconds(lambda: predictor.predict(timed), args.repeats)
        one = [timed[i] for i in range(0, len(timed), max(1, len(timed) // 100))]
        predictor.predict(one[:1])
        latencies = []
        for text in one:
            start = time.perf_counter()
            predictor.predict([text])
            latencies.append(time.perf_counter() - start)
        speed[name] = {"statements_per_s": len(timed) / seconds, "p50_ms_batch1": 1000 * statistics.median(latencies),
                       "batch_invariance_max_prob_diff": batch_invariance(predictor, timed)}
        print(name, f"{speed[name]['statements_per_s']:.1f} statements/s", flush=True)
    for name, s in speed.items():
        s["vs_hf_baseline"] = s["statements_per_s"] / speed["hf_baseline"]["statements_per_s"]
        s["useful_gop_per_s"] = useful * s["statements_per_s"] / len(timed) / 1e9
        s["peak_share"] = s["useful_gop_per_s"] * 1e9 / result["peak_ops_per_s"][PRECISION[name]]
        print(name, {k: round(v, 3) for k, v in s.items()}, flush=True)
    result["speed"] = speed

    result["parity"] = {}
    for file, rows in files.items():
        # The headline items, as everywhere: borderline ones (two careful annotators may differ) left out.
        rows = [r for r in rows if r.get("clarity") in (None, "clear")]
        texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
        probs = {name: p.predict_proba(texts) for name, p in predictors.items()}
        labels = predictors["torch"].labels
        result["parity"][file] = {}
        for name in predictors:
            m = compute_metrics(gold, probs[name], labels)
            entry = {"items": len(rows), "macro_f1": m["macro_f1"], "ece": m["ece"],
                     **parity(probs["torch"], probs[name], gold, labels)}
            result["parity"][file][name] = entry
            print(file, name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}, flush=True)

    result["default"] = default_backend(path, meta["max_length"], threads, result)
    print("default (auto):", json.dumps(result["default"]), flush=True)

    cpu = re.sub(r"[^a-z0-9]+", "-", result["machine"]["cpu"].lower()).strip("-") or "cpu"
    out = args.out or HERE / "results" / f"backends-{cpu}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
