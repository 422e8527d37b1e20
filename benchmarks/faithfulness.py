"""Are the occlusion explanations faithful, and what do they cost?

It owns `benchmarks/results/faithfulness.json`. On one labelled file (its clear items, where items
carry a clarity), in one run on one machine:

1. faithfulness (deletion test): for each statement, delete its top-k attributed words (highest
   attribution first) and, separately, k random words (fixed seed); count how often the predicted
   label changes, and the mean fall of the predicted label's probability. Faithful explanations
   flip far more labels than random words do. Statements with k words or fewer are skipped for
   that k (deleting every word leaves nothing to read);
2. cost: mean seconds per explained text / mean seconds per predicted text on the same
   statements, one statement at a time and in batches of 32 (each after a warm-up);
3. the machine: CPU model, cores and ISA flags (benchmarks/backends.py's `machine()`).

    python benchmarks/faithfulness.py --model models/default data/news/test.jsonl --k 1,3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.backends import machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def seconds_per_text(fn, texts: list[str], batch: int) -> float:
    """Mean wall seconds per text of `fn` called on consecutive chunks of `batch` texts."""
    fn(texts[:batch])  # warm-up: thread start, allocation
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return (time.perf_counter() - start) / len(texts)


def deletion_test(predictor, explanations, k: int, seed: int) -> dict:
    """Flip rates and probability falls after deleting the top-k words vs k random words."""
    from kazstance.explain import top_words, without

    rng = random.Random(seed)  # one stream per k: a k's numbers do not depend on the other ks asked for
    kept = [e for e in explanations if len(e.words) > k]
    variants = {"top": [top_words(e, k) for e in kept],
                "random": [rng.sample(range(len(e.words)), k) for e in kept]}
    out = {"statements": len(kept)}
    for name, picks in variants.items():
        texts = [without(e.text, [(e.words[j]["start"], e.words[j]["end"]) for j in pick])
                 for e, pick in zip(kept, picks)]
        predictions = predictor.predict(texts) if texts else []
        flips = [p.label != e.label for p, e in zip(predictions, kept)]
        falls = [e.scores[e.label] - p.scores[e.label] for p, e in zip(predictions, kept)]
        out[name] = {"flip_rate": statistics.fmean(flips) if flips else None,
                     "mean_prob_fall": statistics.fmean(falls) if falls else None}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="labelled JSONL file")
    parser.add_argument("--model", default="models/default", help="model folder or BentoML tag")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--k", default="1,3", help="words deleted, comma-separated")
    parser.add_argument("--limit", type=int, default=None, help="first N statements only (a smoke run)")
    parser.add_argument("--max-occlusions", type=int, default=48)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "faithfulness.json")
    args = parser.parse_args(argv)

    from kazstance.explain import explain
    from kazstance.predictor import Predictor

    rows = [json.loads(line) for line in args.file.read_text(encoding="utf-8").splitlines() if line.strip()]
    # The headline items, as everywhere: borderline ones (two careful annotators may differ) left out.
    rows = [r for r in rows if r.get("clarity") in (None, "clear")][: args.limit]
    texts = [r["text"] for r in rows]
    predictor = Predictor.load(args.model, backend=args.backend, threads=args.threads)
    result = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "model": str(args.model), "backend": predictor.backend_name, "file": str(args.file),
              "statements": len(texts), "max_occlusions": args.max_occlusions, "seed": args.seed}
    print(json.dumps(result["machine"]), flush=True)

    explanations = explain(predictor, texts, max_occlusions=args.max_occlusions)
    result["mean_words"] = statistics.fmean(len(e.words) for e in explanations)
    result["mean_model_inputs_per_explanation"] = statistics.fmean(1 + e.occlusions for e in explanations)

    result["deletion"] = {str(k): deletion_test(predictor, explanations, k, args.seed + k)
                          for k in map(int, args.k.split(","))}

    def explain_batch(batch):
        explain(predictor, batch, max_occlusions=args.max_occlusions)

    result["cost"] = {}
    for batch in (1, 32):
        predict_s = seconds_per_text(predictor.predict, texts, batch)
        explain_s = seconds_per_text(explain_batch, texts, batch)
        result["cost"][f"batch_{batch}"] = {"predict_s_per_text": predict_s, "explain_s_per_text": explain_s,
                                            "explain_over_predict": explain_s / predict_s}

    print(f"\n{len(texts)} statements, {result['mean_words']:.1f} words and "
          f"{result['mean_model_inputs_per_explanation']:.1f} model inputs per explanation")
    print(f"{'k':>3} {'n':>5} {'flip top-k':>11} {'flip random':>12} {'p fall top-k':>13} {'p fall random':>14}")
    for k, d in result["deletion"].items():
        top, rnd = d["top"], d["random"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{k:>3} {d['statements']:>5} {fmt(top['flip_rate']):>11} {fmt(rnd['flip_rate']):>12} "
              f"{fmt(top['mean_prob_fall']):>13} {fmt(rnd['mean_prob_fall']):>14}")
    print(f"\n{'batch':>5} {'predict ms/text':>16} {'explain ms/text':>16} {'ratio':>7}")
    for name, c in result["cost"].items():
        print(f"{name.split('_')[1]:>5} {1000 * c['predict_s_per_text']:>16.2f} "
              f"{1000 * c['explain_s_per_text']:>16.2f} {c['explain_over_predict']:>7.1f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
