"""int8 against fp32 on labelled files: label agreement, probability differences, macro-F1, ECE.

The inference benchmark reports parity on the one file it times; this checks any number of
splits, through the predictor exactly as the product runs it (batch 32, default threads).

    python benchmarks/int8_parity.py --model models/default data/validation.jsonl data/test.jsonl data/challenge.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.inference import parity  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="JSONL files with text and label")
    parser.add_argument("--model", default="kazstance:latest", help="model folder or BentoML tag")
    args = parser.parse_args(argv)

    from kazstance.predictor import Predictor
    from training.metrics import compute_metrics

    fp32, int8 = (Predictor.load(args.model, backend=b) for b in ("torch", "int8"))
    results = {}
    for path in args.files:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts, gold = [r["text"] for r in rows], [r["label"] for r in rows]
        a, b = fp32.predict_proba(texts), int8.predict_proba(texts)
        results[str(path)] = {"statements": len(rows), **parity(a, b, gold, fp32.labels),
                              "ece_fp32": compute_metrics(gold, a, fp32.labels)["ece"],
                              "ece_int8": compute_metrics(gold, b, fp32.labels)["ece"]}
        r = results[str(path)]
        print(f"{path}: {r['statements']} statements, label agreement {r['label_agreement']:.1%}, largest probability "
              f"difference {r['max_prob_diff']:.3f}, macro-F1 {r['macro_f1_fp32']:.3f} fp32 / {r['macro_f1_int8']:.3f} "
              f"int8, ECE {r['ece_fp32']:.3f} / {r['ece_int8']:.3f}")
    return results


if __name__ == "__main__":
    main()
