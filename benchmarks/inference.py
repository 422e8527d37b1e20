"""Inference benchmark: the shared predictor's fp32 and int8 backends, measured against this CPU's own peak.

It owns the numbers in `benchmarks/results/inference.json` and the table in `benchmarks/INFERENCE.md`.
The recipe, top to bottom:

1. the machine: CPU model, cores, AVX-512 VNNI flag, library versions, load average before and after;
2. GEMM peaks: square matrix products and the model's own GEMM shapes at batch 32, best of
   several runs, fp32 with torch (oneDNN/MKL) and ONNX Runtime (MLAS), int8 (u8 x s8 -> s32) with
   ONNX Runtime's MatMulInteger and torch._int_mm; a precision's peak is its best rate anywhere;
3. statements: the test split (or the raw data before splits exist), cleaned as the predictor does;
4. FLOPs per statement from the model's dimensions and each statement's token count (useful work,
   no padding): linear layers 2*n*(4H^2 + 2*H*FF) per layer, attention 4*n^2*H per layer, head;
5. throughput: `Predictor.load(model, backend=...)` at batch 1 and 32, batched as the predictor
   batches (sorted by token count). Each batch runs `--repeats` times and its fastest run counts: other
   work shares these cores, and the fastest run is the least disturbed (the median is kept too);
6. parity: fp32 and int8 probabilities at batch 32 on the same statements: macro-F1 of each against
   the file's labels, label agreement, largest probability difference;
7. write the JSON, print the table for INFERENCE.md.

    python benchmarks/inference.py --model models/default --data data/test.jsonl
    python benchmarks/inference.py --model /tmp/standin-e5 --export   # export the int8 model first
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TARGETS = {"int8_speedup_b32_min": 2.5, "fp32_peak_share_b32_min": 0.60, "int8_macro_f1_delta_abs_max": 0.01,
           "int8_label_agreement_min": 0.98}


# ---------------------------------------------------------------------------------------- 1. machine


def machine() -> dict:
    import onnxruntime
    import torch

    from kazstance.backend_choice import cpu, isa

    flags = isa()
    return {"cpu": cpu()[0] or platform.processor(), "cores": len(os.sched_getaffinity(0)), "isa": flags,
            "avx512_vnni": flags["avx512_vnni"], "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "load_average_before": os.getloadavg()}


# ------------------------------------------------------------------------------------ 2. GEMM peaks


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: packing, allocation, thread start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def ort_matmul(m: int, k: int, n: int, int8: bool, threads: int):
    """An ONNX Runtime session computing one [m,k] x [k,n] product with a constant right side, as in the model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:  # what dynamic quantisation runs: uint8 activations x int8 weights -> int32
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])
        inits = [numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "B"),
                 numpy_helper.from_array(np.array(128, np.uint8), "a_zero"), numpy_helper.from_array(np.array(0, np.int8), "b_zero")]
        node = helper.make_node("MatMulInteger", ["A", "B", "a_zero", "b_zero"], ["Y"])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        feed = {"A": rng.integers(0, 255, (m, k), dtype=np.uint8)}
    else:
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])
        inits = [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")]
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])
        feed = {"A": rng.standard_normal((m, k), dtype=np.float32)}
    graph = helper.make_graph([node], "gemm", [a], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def torch_matmul(m: int, k: int, n: int, int8: bool):
    import torch

    if int8:  # oneDNN's s8 x s8 -> s32; the weight column-major, as a linear layer stores it
        a = torch.randint(-127, 127, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 127, (n, k), dtype=torch.int8).t()
        return lambda: torch._int_mm(a, b)
    a, b = torch.randn(m, k), torch.randn(k, n)
    return lambda: torch.mm(a, b)


def gemm_rate(m: int, k: int, n: int, lib: str, int8: bool, threads: int, repeats: int) -> float | None:
    """Operations per second (multiply and add counted separately) of the best run; None if unsupported."""
    try:
        fn = ort_matmul(m, k, n, int8, threads) if lib == "onnxruntime" else torch_matmul(m, k, n, int8)
        return 2 * m * k * n / best_seconds(fn, repeats)
    except (RuntimeError, NotImplementedError):
        return None


def gemm_peaks(threads: int, repeats: int, model_shapes: list[tuple[int, int, int]]) -> dict:
    """Rates of square GEMMs and of the model's own shapes, per precision and library; the peak of
    a precision is its best rate anywhere (with other jobs about, some runs miss a quiet moment)."""
    shapes = {**{f"{s}x{s}x{s}": (s, s, s) for s in (1024, 2048)}, **{f"{m}x{k}x{n} (model)": (m, k, n)
                                                                     for m, k, n in model_shapes}}
    out: dict = {}
    for kind, int8 in (("fp32", False), ("int8", True)):
        out[kind] = {lib: {name: gemm_rate(*shape, lib, int8, threads, repeats) for name, shape in shapes.items()}
                     for lib in ("torch", "onnxruntime")}
        out[kind]["peak"] = max(r for lib in ("torch", "onnxruntime") for r in out[kind][lib].values() if r)
    return out


# ------------------------------------------------------------------------------------ 3. statements


def load_statements(data: Path | None, limit: int | None) -> tuple[list[str], list[str] | None, str]:
    """Cleaned statements, their labels when every record has one, and where they came from."""
    from kazstance.text import clean

    files = [data] if data else ([REPO / "data/test.jsonl"] if (REPO / "data/test.jsonl").is_file()
                                 else sorted((REPO / "data/raw").glob("*.jsonl")))
    records = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = [r for r in records if clean(r.get("text", ""))][:limit]
    labels = [r["label"] for r in records] if all("label" in r for r in records) else None
    return [clean(r["text"]) for r in records], labels, ", ".join(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f) for f in files)


# ---------------------------------------------------------------------------------------- 4. FLOPs


def model_dims(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())
    return {"hidden": config["hidden_size"], "layers": config["num_hidden_layers"], "ffn": config["intermediate_size"],
            "heads": config["num_attention_heads"], "labels": len(config["id2label"]), "vocab": config["vocab_size"]}


def statement_flops(tokens: np.ndarray, d: dict) -> tuple[np.ndarray, np.ndarray]:
    """(linear-layer FLOPs, attention FLOPs) per statement of `tokens` tokens; embeddings are lookups."""
    h, layers, ff = d["hidden"], d["layers"], d["ffn"]
    linear = layers * 2 * tokens * (4 * h * h + 2 * h * ff) + 2 * h * h + 2 * h * d["labels"]  # + pooler + classifier
    attention = layers * 4 * tokens.astype(np.float64) ** 2 * h  # QK^T and (softmax)V
    return linear.astype(np.float64), attention


# ----------------------------------------------------------------------------------- 5. throughput


def machine_busy_s() -> float:
    """CPU seconds all processes have spent busy since boot (from /proc/stat)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Contention:
    """Share of the cores that other processes used while a block ran: the context for its timings."""

    def __enter__(self) -> "Contention":
        self.start = (time.perf_counter(), machine_busy_s(), own_cpu_s())
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = (b - a for a, b in zip(self.start, (time.perf_counter(), machine_busy_s(), own_cpu_s())))
        self.others_share = round(max(0.0, busy - own) / (wall * len(os.sched_getaffinity(0))), 3)


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15, sample_s: float = 3.0) -> float:
    """Wait, at most `max_wait_s`, until other processes use under `threshold` of the cores; returns seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait_s:
        with Contention() as c:
            time.sleep(sample_s)
        if c.others_share < threshold:
            break
    return round(time.perf_counter() - start, 1)


def timed_passes(contenders: dict, texts: list[str], tokens: np.ndarray, batch_size: int,
                 repeats: int) -> dict[str, dict]:
    """Every text through every contender, batched as the predictor batches (sorted by token count).

    Batch by batch, each contender runs the batch `repeats` times in turn: when other jobs come
    and go, they slow all contenders alike instead of whichever ran at the time. Per contender:
    probabilities (input order), the sum over batches of the fastest run (`seconds`) and of the
    median run (`seconds_median`).
    """
    from kazstance.predictor import length_batches

    out = {}
    for name, predictor in contenders.items():
        predictor.batch_size = batch_size
        predictor.predict_proba(texts[:batch_size])  # warm-up: allocation, thread pools
        out[name] = {"probs": np.zeros((len(texts), len(predictor.labels)), dtype=np.float32),
                     "seconds": 0.0, "seconds_median": 0.0}
    for batch in length_batches(list(tokens), batch_size):
        chunk = [texts[i] for i in batch]
        for name, predictor in contenders.items():
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                out[name]["probs"][batch] = predictor.predict_proba(chunk)  # one batch: the predictor keeps it whole
                times.append(time.perf_counter() - start)
            out[name]["seconds"] += min(times)
            out[name]["seconds_median"] += statistics.median(times)
    return out


def padded_tokens(tokens: np.ndarray, keys: list[int], batch_size: int) -> int:
    from kazstance.predictor import length_batches

    return int(sum(len(b) * tokens[b].max() for b in length_batches(keys, batch_size)))


# ---------------------------------------------------------------------------------------- 6. parity


def parity(fp32: np.ndarray, int8: np.ndarray, gold: list[str] | None, labels: tuple[str, ...]) -> dict:
    out = {"label_agreement": float((fp32.argmax(1) == int8.argmax(1)).mean()),
           "max_prob_diff": float(np.abs(fp32 - int8).max()), "mean_prob_diff": float(np.abs(fp32 - int8).mean())}
    if gold:
        from training.metrics import compute_metrics

        f1_fp32 = compute_metrics(gold, fp32, labels)["macro_f1"]
        f1_int8 = compute_metrics(gold, int8, labels)["macro_f1"]
        out.update(macro_f1_fp32=f1_fp32, macro_f1_int8=f1_int8, macro_f1_delta=f1_int8 - f1_fp32)
    return out


# ------------------------------------------------------------------------------------------ 7. run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="kazstance:latest", help="model folder or BentoML tag")
    parser.add_argument("--data", type=Path, default=None, help="JSONL statements (default: data/test.jsonl)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "inference.json")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: one per core)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per batch; the fastest counts")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N statements")
    parser.add_argument("--export", action="store_true", help="run `kazstance export` on the model first")
    parser.add_argument("--torch-dynamic", action="store_true",
                        help="also time torch dynamic int8 quantisation (the alternative int8 path)")
    parser.add_argument("--variants", action="store_true",
                        help="also time the ONNX Runtime quantisation choices (s8/u8, per channel/tensor, optimisation level)")
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="before each phase, wait up to this many seconds for other jobs to go quiet")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from kazstance.modeling import resolve
    from kazstance.predictor import Predictor, set_threads

    threads = args.threads or len(os.sched_getaffinity(0))
    set_threads(threads)
    model = args.model
    if args.export:
        from training.export import export_model

        result = export_model(model)
        model = result.tag or str(result.path)
        log(f"exported int8 model: {model}")
    ref = resolve(model)
    info = machine()
    dims = model_dims(ref.path)

    texts, gold, source = load_statements(args.data, args.limit)
    predictors = {backend: Predictor.load(model, backend=backend, threads=threads) for backend in ("torch", "int8")}
    tokens = np.array(predictors["torch"].backend.lengths(texts))  # what the predictor batches by
    linear, attention = statement_flops(tokens, dims)
    flops = linear + attention
    # Computed tokens per useful token, as the predictor batches (by token count), and as it did
    # before (by characters).
    padding = {str(b): float(padded_tokens(tokens, list(tokens), b) / tokens.sum()) for b in (1, 32)}
    padding["32_if_sorted_by_characters"] = float(padded_tokens(tokens, [len(t) for t in texts], 32) / tokens.sum())
    log(f"{len(texts)} statements from {source}; {tokens.mean():.1f} tokens and {flops.mean() / 1e9:.2f} GFLOP each")

    # The model's GEMM shapes at batch 32: rows = 32 statements x the mean padded length.
    rows = int(round(32 * padding["32"] * tokens.mean()))
    h, ff = dims["hidden"], dims["ffn"]
    waited = wait_for_quiet(args.wait_quiet) if args.wait_quiet else 0.0
    log("GEMM micro-benchmark")
    with Contention() as c:
        gemm = gemm_peaks(threads, max(2 * args.repeats, 10), [(rows, h, h), (rows, h, ff), (rows, ff, h)])
    gemm_contention = {"others_cpu_share": c.others_share, "waited_for_quiet_s": waited}
    fp32_peak, int8_peak = gemm["fp32"]["peak"], gemm["int8"]["peak"]

    # Three phases, contenders interleaved batch by batch inside each: fp32 and int8 (and torch's
    # int8) at batch 32 and at batch 1, and the ONNX Runtime recipes apart, so that a dozen idle
    # thread pools and models in memory do not weigh on the headline numbers.
    main_group = dict(predictors)
    if args.torch_dynamic:
        main_group["torch_dynamic_int8"] = torch_dynamic_predictor(predictors["torch"])
        main_group["torch_dynamic_int8_per_channel"] = torch_dynamic_predictor(predictors["torch"], per_channel=True)
    phases = [("b32", 32, lambda: main_group),
              ("b1", 1, lambda: {k: v for k, v in main_group.items() if not k.endswith("per_channel")})]
    if args.variants:  # built when their phase comes, so they are not in memory before
        phases.append(("b32_variants", 32, lambda: variant_contenders(ref.path, predictors["int8"], threads)))
    contention = {}
    runs: dict[str, dict] = {}
    for phase, batch_size, make_group in phases:
        group = make_group()
        waited = wait_for_quiet(args.wait_quiet) if args.wait_quiet else 0.0
        log(f"batch {batch_size}: {', '.join(group)}")
        with Contention() as c:
            for name, run in timed_passes(group, texts, tokens, batch_size, args.repeats).items():
                runs[f"{name}_b{batch_size}"] = run
        contention[phase] = {"others_cpu_share": c.others_share, "waited_for_quiet_s": waited}

    throughput = {}
    for name, run in runs.items():
        if name.startswith("onnx "):
            continue  # the variants are reported beside parity, below
        peak = int8_peak if "int8" in name else fp32_peak
        throughput[name] = {
            "statements_per_s": len(texts) / run["seconds"],
            "statements_per_s_median": len(texts) / run["seconds_median"],
            "useful_gflop_per_s": float(flops.sum() / run["seconds"] / 1e9),
            "peak_share": float(flops.sum() / run["seconds"] / peak),
            "peak_used": "int8" if "int8" in name else "fp32",
        }
    labels = predictors["torch"].labels
    fp32_probs = runs["torch_b32"]["probs"]
    par = parity(fp32_probs, runs["int8_b32"]["probs"], gold, labels)
    for name in ("torch_dynamic_int8", "torch_dynamic_int8_per_channel"):
        if f"{name}_b32" in runs:
            par[name] = parity(fp32_probs, runs[f"{name}_b32"]["probs"], gold, labels)
    variants = {name[: -len("_b32")]: {"statements_per_s": len(texts) / run["seconds"],
                                       **parity(fp32_probs, run["probs"], gold, labels)}
                for name, run in runs.items() if name.startswith("onnx ")} or None
    batch_sensitivity = {  # dynamic quantisation scales activations per batch: batch-mates move a text's scores
        backend: float(np.abs(runs[f"{backend}_b1"]["probs"] - runs[f"{backend}_b32"]["probs"]).max())
        for backend in ("torch", "int8")}

    results = {
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": ref.name, "model_meta": {k: ref.meta.get(k) for k in ("base_model", "data_fingerprint", "max_length")},
        "data": source, "statements": len(texts), "labelled": gold is not None,
        "machine": {**info, "load_average_after": os.getloadavg(), "threads": threads},
        "contention": {"gemm": gemm_contention, **contention},
        "int8_artefact": predictors["int8"].backend.info,
        "model_dims": dims,
        "tokens_per_statement": {"mean": float(tokens.mean()), "median": float(np.median(tokens)), "max": int(tokens.max())},
        "gflop_per_statement": {"mean": float(flops.mean() / 1e9), "linear_share": float(linear.sum() / flops.sum())},
        "padding_overhead": padding,
        "gemm": gemm,
        "throughput": throughput,
        "parity": par,
        "batch_composition_max_prob_diff": batch_sensitivity,
        "onnx_variants_b32": variants,
        # the headline keys the issue names
        "int8_speedup_b32": throughput["int8_b32"]["statements_per_s"] / throughput["torch_b32"]["statements_per_s"],
        "int8_speedup_b1": throughput["int8_b1"]["statements_per_s"] / throughput["torch_b1"]["statements_per_s"],
        "fp32_peak_share_b32": throughput["torch_b32"]["peak_share"],
        "int8_peak_share_b32": throughput["int8_b32"]["peak_share"],
        "int8_macro_f1_delta": par.get("macro_f1_delta"),
        "int8_label_agreement": par["label_agreement"],
        "int8_max_prob_diff": par["max_prob_diff"],
        "targets": TARGETS,
    }
    results["targets_met"] = {
        "int8_speedup_b32": results["int8_speedup_b32"] >= TARGETS["int8_speedup_b32_min"],
        "fp32_peak_share_b32": results["fp32_peak_share_b32"] >= TARGETS["fp32_peak_share_b32_min"],
        "int8_macro_f1_delta": None if gold is None else abs(par["macro_f1_delta"]) <= TARGETS["int8_macro_f1_delta_abs_max"],
        "int8_label_agreement": par["label_agreement"] >= TARGETS["int8_label_agreement_min"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    return results


def torch_dynamic_predictor(fp32, per_channel: bool = False):
    """The alternative int8 path, for comparison: torch dynamic quantisation of every Linear
    (int8 weights per tensor by default, or per output channel), quantised at load time."""
    import copy

    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    from kazstance.predictor import Predictor

    backend = copy.copy(fp32.backend)
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    backend.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32.backend.model), {torch.nn.Linear: qconfig})
    return Predictor(backend=backend, name=fp32.name, temperature=fp32.temperature, meta=fp32.meta)


def variant_contenders(ref_path: Path, int8, threads: int) -> dict:
    """The choices behind the shipped artefact, as predictors to time beside it at batch 32: fp32
    ONNX (no quantisation), int8 or uint8 weights, per tensor or per output channel, the session's
    graph optimisation level and the SkipLayerNormalization fusion the backend turns off."""
    import copy
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from kazstance.int8 import SLOW_FUSIONS, make_session
    from kazstance.predictor import Predictor
    from training.export import export_fp32, load_for_export

    model, tokenizer = load_for_export(ref_path)
    contenders = {}
    with tempfile.TemporaryDirectory(prefix="kazstance-variants-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(model, tokenizer, fp32)
        files = {"onnx fp32": fp32}
        for weights, per_channel in ((QuantType.QInt8, True), (QuantType.QInt8, False), (QuantType.QUInt8, True),
                                     (QuantType.QUInt8, False)):
            name = f"onnx {'s8' if weights == QuantType.QInt8 else 'u8'} per {'channel' if per_channel else 'tensor'}"
            files[name] = Path(tmp) / f"{len(files)}.onnx"
            quantize_dynamic(fp32, files[name], weight_type=weights, per_channel=per_channel)
        shipped = "onnx s8 per channel"
        sessions = {f"{name}, all optimisation": (files[name], "all", SLOW_FUSIONS) for name in files}
        sessions.update({f"{shipped}, all optimisation incl. SkipLayerNorm fusion": (files[shipped], "all", ()),
                         f"{shipped}, extended optimisation": (files[shipped], "extended", SLOW_FUSIONS),
                         f"{shipped}, basic optimisation": (files[shipped], "basic", SLOW_FUSIONS)})
        for name, (file, level, disabled) in sessions.items():
            backend = copy.copy(int8.backend)
            backend.session = make_session(file, 1, level, disabled)  # loads the file: the folder may go
            backend._pool = None
            contenders[name] = Predictor(backend=backend, name=int8.name, temperature=int8.temperature)
    return contenders


def table(r: dict) -> str:
    """The markdown summary for INFERENCE.md."""
    g, p, c = r["gemm"], r["parity"], r["contention"]
    lines = [
        f"Model `{r['model']}` on {r['statements']} statements ({r['data']}): {r['tokens_per_statement']['mean']:.1f} "
        f"tokens and {r['gflop_per_statement']['mean']:.2f} GFLOP each; {r['machine']['threads']} threads on "
        f"{r['machine']['cores']} cores of {r['machine']['cpu']}. Other jobs used "
        + ", ".join(f"{v['others_cpu_share']:.0%} ({phase})" for phase, v in c.items()) + " of the cores.",
        "",
        f"Measured GEMM peak: fp32 {g['fp32']['peak'] / 1e9:.0f} GFLOP/s, int8 {g['int8']['peak'] / 1e9:.0f} GOP/s.",
        "",
        "| backend | batch | statements/s | useful GFLOP/s | share of measured peak |",
        "|---|---|---|---|---|",
    ]
    for name, t in r["throughput"].items():
        backend, batch = name.rsplit("_b", 1)
        lines.append(f"| {backend} | {batch} | {t['statements_per_s']:.1f} | {t['useful_gflop_per_s']:.1f} | "
                     f"{t['peak_share']:.0%} of {t['peak_used']} |")
    f1 = (f"macro-F1 fp32 {p['macro_f1_fp32']:.3f} / int8 {p['macro_f1_int8']:.3f} (delta {p['macro_f1_delta']:+.3f}); "
          if "macro_f1_delta" in p else "")
    lines += ["", f"int8 speedup at batch 32: {r['int8_speedup_b32']:.2f}x (batch 1: {r['int8_speedup_b1']:.2f}x). "
              f"Parity at batch 32: {f1}label agreement {p['label_agreement']:.1%}, largest probability difference "
              f"{p['max_prob_diff']:.3f}."]
    if r.get("onnx_variants_b32"):
        lines += ["", "| int8 recipe, batch 32 | statements/s | label agreement with fp32 | largest prob. diff |",
                  "|---|---|---|---|"]
        rows = {"shipped int8 (main pass)": {"statements_per_s": r["throughput"]["int8_b32"]["statements_per_s"], **p}}
        for name, label in (("torch_dynamic_int8", "torch quantize_dynamic, per tensor (main pass)"),
                            ("torch_dynamic_int8_per_channel", "torch quantize_dynamic, per channel (main pass)")):
            if f"{name}_b32" in r["throughput"]:
                rows[label] = {"statements_per_s": r["throughput"][f"{name}_b32"]["statements_per_s"], **p[name]}
        rows.update({f"{name} (variants pass)": v for name, v in r["onnx_variants_b32"].items()})
        lines += [f"| {name} | {v['statements_per_s']:.1f} | {v['label_agreement']:.1%} | {v['max_prob_diff']:.3f} |"
                  for name, v in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
