"""Evaluating any model on any labelled file, through the shared predictor.

`kazstance evaluate` and the end of a training run both come here, so the numbers in a run's
`metrics.json` and a later re-evaluation are computed the same way, on the same code path the
service uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from kazstance.predictor import Predictor

from .data import DataError, read_labelled
from .metrics import compute_metrics, markdown_report, metrics_by_group, platform_metrics, plot_confusion_matrix


def evaluate_records(predictor: Predictor, records: list[dict], text_field: str = "text",
                     label_field: str = "label", platform_field: str = "platform") -> tuple[dict, np.ndarray]:
    """Metrics and the probability matrix.

    Adds per-`lang` metrics when every record has a language, and, when records carry a
    `clarity` field, the same metrics on the `clear` items alone: borderline items are ones two
    careful annotators could label differently, so the headline number leaves them out. A model
    with a platform head is also scored on the records' platforms (`platform`: per-platform F1).
    """
    predictions, probs = predictor.predict_with_proba([r[text_field] for r in records])
    metrics = metrics_for(records, probs, predictor.labels, label_field)
    gold = [(r[platform_field], p.platform) for r, p in zip(records, predictions) if r.get(platform_field)]
    if predictor.platforms and gold:
        metrics["platform"] = platform_metrics(*map(list, zip(*gold)))
    return metrics, probs


def metrics_for(records: list[dict], probs: np.ndarray, labels: tuple[str, ...], label_field: str = "label",
                with_clear: bool = True) -> dict:
    y_true = [r[label_field] for r in records]
    metrics = compute_metrics(y_true, probs, labels)
    if all(r.get("lang") for r in records):
        metrics["by_lang"] = metrics_by_group(y_true, probs, labels, [r["lang"] for r in records])
    # Records without a clarity field (hand-written ones, written to be unambiguous) count as clear.
    clear = [i for i, r in enumerate(records) if r.get("clarity") in (None, "clear")]
    if with_clear and clear and len(clear) < len(records):
        metrics["clear"] = metrics_for([records[i] for i in clear], probs[clear], labels, label_field, with_clear=False)
    return metrics


def select(records: list[dict], only: list[str]) -> list[dict]:
    """Keep the records whose FIELD equals VALUE for every `FIELD=VALUE` in `only` (all when empty)."""
    for condition in only:
        if "=" not in condition:
            raise DataError(f"--only {condition!r}: expected FIELD=VALUE, e.g. clarity=clear")
        key, value = condition.split("=", 1)
        records = [r for r in records if str(r.get(key)) == value]
    if not records:
        raise DataError(f"no record matches {' and '.join(only)}")
    return records


def write_evaluation(metrics: dict, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown_report(metrics, title), encoding="utf-8")
    plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")


def evaluate_file(model: str | Path, data: Path, out_dir: Path | None = None, text_field: str = "text",
                  label_field: str = "label", backend: str = "torch", only: list[str] = ()) -> dict:
    predictor = Predictor.load(model, backend=backend)
    records = select(read_labelled(Path(data), predictor.labels, text_field, label_field), list(only))
    metrics, _ = evaluate_records(predictor, records, text_field, label_field)
    metrics.update(model=predictor.name, data=str(data), backend=backend, only=list(only))
    if out_dir is None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", predictor.name)
        suffix = "".join(f"-{c.replace('=', '_')}" for c in only)
        out_dir = Path("evaluations") / safe / (Path(data).parent.name + "-" + Path(data).stem + suffix)
    write_evaluation(metrics, Path(out_dir), f"{predictor.name} on {data}")
    return metrics
