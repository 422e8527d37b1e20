"""Batch-scoring benchmark: statements per second and peak memory of `kazstance score` on archives.

It owns the numbers in `benchmarks/results/score.json`. The recipe, top to bottom:

1. statements: every `text` of data/*.jsonl with --min-words..--max-words words (the target is
   about 25); when data/ has none, the hand-written samples in tests/conftest.py (and it says so).
2. throughput: a .tar.gz archive (JSONL and CSV members) of at least --statements statements,
   each copy numbered so no two rows are equal, scored by the real command (`kazstance score`,
   a fresh process) with --model. Statements per second come from the run's own summary (model
   loading excluded); the child's peak RSS from `os.wait4`.
2b. raw predictor: the same statements through the shared predictor in this process (same model,
   backend, batch size and threads; no files, no archive, no writer), right after the scorer. The
   scorer end to end should keep at least 90% of it (`scorer_over_raw`).
3. memory: uncompressed .tar archives of growing size (--memory-mb) holding posts of
   --post-statements statements each, scored the same way with --memory-model. Memory must be
   flat as the input grows; the pipeline's memory does not depend on the model's speed, so a tiny
   model (`--memory-model`) makes the 1 GB run take minutes instead of hours. Peak RSS with the
   default model = the throughput run's peak + the growth measured here.
4. write the machine, its load, the settings, the results and which targets were met.

    python benchmarks/score.py --model kazstance:latest --memory-model /path/to/tiny/model
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import importlib.util
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "score.json"
TARGETS = {"statements_per_s_min": 80.0, "peak_rss_mb_on_1gb_max": 2048.0, "min_statements": 50_000,
           "scorer_over_raw_min": 0.9}


# ------------------------------------------------------------------------------------- 1. statements


def pick_statements(min_words: int, max_words: int) -> tuple[list[str], str]:
    texts = []
    for path in sorted(glob.glob(str(REPO / "data" / "**" / "*.jsonl"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            texts += [json.loads(line).get("text") or "" for line in f if line.strip()]
    chosen = [t for t in dict.fromkeys(texts) if min_words <= len(t.split()) <= max_words]
    if chosen:
        return chosen, f"data/*.jsonl, {min_words}-{max_words} words"
    spec = importlib.util.spec_from_file_location("conftest", REPO / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    return list(conftest.SAMPLE_TEXTS), "tests/conftest.py SAMPLE_TEXTS (data/ had no statements)"


def numbered(texts: list[str], n: int):
    """n statements cycling through `texts`; each copy numbered, so no two are the same row."""
    for i in range(n):
        yield f"{texts[i % len(texts)]} #{i // len(texts)}"


# ---------------------------------------------------------------------------------------- 2/3. inputs


def add_member(archive: tarfile.TarFile, name: str, lines, tmp: Path) -> None:
    """Spool one member to disk (a tar header needs the size first), then stream it into the tar."""
    spool = tmp / "member"
    with open(spool, "w", encoding="utf-8", newline="") as f:
        for line in lines:
            f.write(line)
    archive.add(spool, arcname=name)
    spool.unlink()


def throughput_archive(path: Path, texts: list[str], n: int) -> None:
    """JSONL and CSV members of 10,000 statements each, gzip-compressed."""
    import csv

    per_member, statements = 10_000, list(numbered(texts, n))
    with tarfile.open(path, "w:gz", compresslevel=1) as archive:
        for k, start in enumerate(range(0, n, per_member)):
            chunk = statements[start : start + per_member]
            if k % 2 == 0:
                lines = (json.dumps({"id": f"{k}-{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(chunk))
                add_member(archive, f"export/part-{k:03d}.jsonl", lines, path.parent)
            else:
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows([["id", "text"]] + [[f"{k}-{i}", t] for i, t in enumerate(chunk)])
                add_member(archive, f"export/part-{k:03d}.csv", [buf.getvalue()], path.parent)


def memory_archive(path: Path, texts: list[str], megabytes: int, post_statements: int) -> int:
    """An uncompressed tar of JSONL members (~64 MB each) of long posts; returns the post count."""
    target, member_bytes, posts = megabytes * 2**20, 64 * 2**20, 0
    stream = numbered(texts, 10**12)
    written = 0
    with tarfile.open(path, "w") as archive:
        k = 0
        while written < target:
            lines, size = [], 0
            while size < min(member_bytes, target - written):
                post = " ".join(next(stream) for _ in range(post_statements))
                line = json.dumps({"id": str(posts), "text": post}, ensure_ascii=False) + "\n"
                lines.append(line)
                size += len(line.encode("utf-8"))
                posts += 1
            add_member(archive, f"dump/{k:04d}.jsonl", lines, path.parent)
            written += size
            k += 1
    return posts


# ------------------------------------------------------------------------------------------ running


def run_score(archive: Path, out: Path, model: str, args) -> dict:
    """Run `kazstance score` as a child; its summary line, wall time and peak RSS."""
    cmd = [sys.executable, "-m", "kazstance.cli", "score", str(archive), "--output", str(out), "--model", model,
           "--batch-size", str(args.batch_size), "--backend", args.backend, "--no-progress"]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"kazstance score failed ({status}): {stdout}")
    line = next(line for line in stdout.splitlines() if line.startswith("files:"))
    summary = {k.strip().replace(" ", "_").replace("/", "_per_"): float(v)
               for k, v in re.findall(r"([a-z/ ]+): ([\d.]+)", line)}
    return {"input_bytes": archive.stat().st_size, "rows": int(summary["rows_written"]),
            "errors": int(summary["errors"]), "rows_per_s": summary["rows_per_s"],
            "scoring_s": summary["time"], "wall_s_with_startup": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
            # CPU seconds the run got: on a shared machine, rows per CPU second still compares.
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "rows_per_cpu_s": round(int(summary["rows_written"]) / max(usage.ru_utime + usage.ru_stime, 1e-9), 1),
            "loadavg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}


def raw_predictor(texts: list[str], model: str, args) -> dict:
    """Statements/s of the shared predictor alone on `texts`: what the scorer would make if reading,
    cleaning, windowing and writing cost nothing. Timed after one warm-up batch."""
    from kazstance.predictor import Predictor

    predictor = Predictor.load(model, backend=args.backend, threads=args.threads, batch_size=args.batch_size)
    predictor.predict(texts[: args.batch_size])
    began = time.perf_counter()
    predictor.predict(texts)
    seconds = time.perf_counter() - began
    return {"backend": predictor.backend_name, "statements": len(texts), "seconds": round(seconds, 1),
            "rows_per_s": round(len(texts) / seconds, 1)}


def token_stats(model: str, texts: list[str]) -> dict:
    from kazstance.modeling import load_transformer, resolve

    _, tokenizer = load_transformer(resolve(model).path)
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return {"mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
            "mean_tokens": round(sum(lengths) / len(lengths), 1)}


def machine() -> dict:
    import torch

    from kazstance.backend_choice import cpu, isa

    return {"cores": len(os.sched_getaffinity(0)), "cpu": cpu()[0] or platform.processor(), "isa": isa(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="kazstance:latest", help="model folder or BentoML tag (the default model)")
    parser.add_argument("--memory-model", help="model for the memory runs (default: --model)")
    parser.add_argument("--statements", type=int, default=50_000, help="statements in the throughput archive")
    parser.add_argument("--memory-mb", default="100,300,1000", help="sizes of the memory inputs, MB; empty: skip")
    parser.add_argument("--post-statements", type=int, default=10, help="statements per post in the memory inputs")
    parser.add_argument("--min-words", type=int, default=18)
    parser.add_argument("--max-words", type=int, default=35)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch threads (default: the command's, one per core)")
    parser.add_argument("--backend", default="auto", help="as `kazstance score --backend` (auto: what it would pick)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    texts, source = pick_statements(args.min_words, args.max_words)
    print(f"{len(texts)} distinct statements from {source}", flush=True)
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "settings": {"model": args.model, "memory_model": args.memory_model or args.model,
                            "batch_size": args.batch_size, "threads": args.threads, "backend": args.backend,
                            "statements_source": source, "distinct_statements": len(texts),
                            **token_stats(args.model, texts)},
               "command": "python benchmarks/score.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        if args.statements:
            archive = tmp / "throughput.tar.gz"
            throughput_archive(archive, texts, args.statements)
            print(f"throughput: {args.statements} statements, {archive.stat().st_size / 2**20:.1f} MB archive", flush=True)
            results["throughput"] = run_score(archive, tmp / "scores.parquet", args.model, args)
            print(f"  {results['throughput']}", flush=True)
            results["raw_predictor"] = raw_predictor(list(numbered(texts, args.statements)), args.model, args)
            results["scorer_over_raw"] = round(results["throughput"]["rows_per_s"] / results["raw_predictor"]["rows_per_s"], 3)
            print(f"  raw predictor: {results['raw_predictor']}; scorer/raw {results['scorer_over_raw']}", flush=True)
        results["memory"] = []
        for mb in [int(m) for m in args.memory_mb.split(",") if m.strip()]:
            archive = tmp / f"memory-{mb}.tar"
            posts = memory_archive(archive, texts, mb, args.post_statements)
            run = {"input_mb": mb, "posts": posts, **run_score(archive, tmp / "memory.parquet",
                                                              args.memory_model or args.model, args)}
            archive.unlink()
            results["memory"].append(run)
            print(f"  memory {mb} MB: {run}", flush=True)

    met = {}
    if "throughput" in results:
        met["statements"] = results["throughput"]["rows"] >= TARGETS["min_statements"]
        met["statements_per_s"] = results["throughput"]["rows_per_s"] >= TARGETS["statements_per_s_min"]
        met["scorer_over_raw"] = results["scorer_over_raw"] >= TARGETS["scorer_over_raw_min"]
    if results["memory"]:
        peaks = [run["peak_rss_mb"] for run in results["memory"]]
        growth = round(max(peaks) - min(peaks), 1)
        results["memory_growth_mb"] = growth
        if "throughput" in results:
            results["estimated_peak_rss_mb_default_model_largest_input"] = round(results["throughput"]["peak_rss_mb"] + growth, 1)
            met["peak_rss_on_largest_input"] = results["estimated_peak_rss_mb_default_model_largest_input"] <= TARGETS["peak_rss_mb_on_1gb_max"]
    results["targets"] = {**TARGETS, "met": met}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
