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

from .data import read_labelled
from .metrics import compute_metrics, markdown_report, metrics_by_group, plot_confusion_matrix


def evaluate_records(predictor: Predictor, records: list[dict], text_field: str = "text",
                     label_field: str = "label") -> tuple[dict, np.ndarray]:
    """Metrics (plus per-`lang` metrics when the column exists) and the probability matrix."""
    texts = [r[text_field] for r in records]
    y_true = [r[label_field] for r in records]
    probs = predictor.predict_proba(texts)
    metrics = compute_metrics(y_true, probs, predictor.labels)
    if all(r.get("lang") for r in records):
        metrics["by_lang"] = metrics_by_group(y_true, probs, predictor.labels, [r["lang"] for r in records])
    return metrics, probs


def write_evaluation(metrics: dict, out_dir: Path, title: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.md").write_text(markdown_report(metrics, title), encoding="utf-8")
    plot_confusion_matrix(metrics, out_dir / "confusion_matrix.png")


def evaluate_file(model: str | Path, data: Path, out_dir: Path | None = None, text_field: str = "text",
                  label_field: str = "label", backend: str = "torch") -> dict:
    predictor = Predictor.load(model, backend=backend)
    records = read_labelled(Path(data), predictor.labels, text_field, label_field)
    metrics, _ = evaluate_records(predictor, records, text_field, label_field)
    metrics.update(model=predictor.name, data=str(data), backend=backend)
    if out_dir is None:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", predictor.name)
        out_dir = Path("evaluations") / safe / Path(data).stem
    write_evaluation(metrics, Path(out_dir), f"{predictor.name} on {data}")
    return metrics
