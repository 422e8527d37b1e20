"""Classification metrics, calibration error, and the human-readable report and plots.

`compute_metrics` is the single definition of every number the project reports: training's
validation/test metrics and `kazstance evaluate` both call it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from kazstance.labels import STANCE_LABELS

# The headline numbers of any evaluation: what run metadata, the model card and the CLI summarise.
SUMMARY = ("n", "accuracy", "macro_f1", "f_avg_support_oppose", "ece")


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def compute_metrics(y_true: list[str], probs: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, F_avg(support, oppose), per-class P/R/F1, confusion matrix, ECE."""
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for label in y_true])
    pred = probs.argmax(axis=1)
    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=ids, zero_division=0)
    per_class = {label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, label in enumerate(labels)}
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=ids, average="macro", zero_division=0)),
        "f_avg_support_oppose": float(np.mean([per_class[label]["f1"] for label in STANCE_LABELS if label in per_class])),
        "ece": expected_calibration_error(probs, y),
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y, pred, labels=ids).tolist(),
    }


def platform_metrics(y_true: list[str], y_pred: list[str]) -> dict:
    """Platform detection: accuracy, macro-F1 over the platforms the gold labels hold, and each
    platform's precision, recall and F1 (one against the rest)."""
    names = sorted(set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=names, zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=names, average="macro", zero_division=0)),
        "per_platform": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                "support": int(s[i])} for i, name in enumerate(names)},
    }


def metrics_by_group(y_true: list[str], probs: np.ndarray, labels: tuple[str, ...], groups: list[str]) -> dict:
    """The same metrics for each value of a grouping column (e.g. `lang`)."""
    out = {}
    for value in sorted(set(groups)):
        rows = [i for i, g in enumerate(groups) if g == value]
        out[value] = compute_metrics([y_true[i] for i in rows], probs[rows], labels)
    return out


def plot_confusion_matrix(metrics: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(metrics["confusion_matrix"])
    labels = metrics["labels"]
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_title(title or f"macro-F1 {metrics['macro_f1']:.3f} (n={metrics['n']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_report(metrics: dict, title: str) -> str:
    lines = [f"# {title}", "", f"n = {metrics['n']}", "",
             "| metric | value |", "|---|---|"]
    for key in SUMMARY[1:]:
        lines.append(f"| {key} | {metrics[key]:.4f} |")
    lines += ["", "| label | precision | recall | F1 | n |", "|---|---|---|---|---|"]
    for label, m in metrics["per_class"].items():
        lines.append(f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines += ["", "Confusion matrix (rows true, columns predicted): " + ", ".join(metrics["labels"]), ""]
    lines += ["    " + " ".join(f"{v:5d}" for v in row) for row in metrics["confusion_matrix"]]
    for group, sub in metrics.get("by_lang", {}).items():
        lines.append(f"\n- lang `{group}`: n={sub['n']}, accuracy {sub['accuracy']:.3f}, macro-F1 {sub['macro_f1']:.3f}")
    if "clear" in metrics:
        c = metrics["clear"]
        lines.append(f"\n- clear items only: n={c['n']}, accuracy {c['accuracy']:.3f}, macro-F1 {c['macro_f1']:.3f}, "
                     f"ECE {c['ece']:.3f}")
    if "platform" in metrics:
        pm = metrics["platform"]
        lines += ["", f"Platform detection: n={pm['n']}, accuracy {pm['accuracy']:.3f}, macro-F1 {pm['macro_f1']:.3f}",
                  "", "| platform | precision | recall | F1 | n |", "|---|---|---|---|---|"]
        for name, p in pm["per_platform"].items():
            lines.append(f"| {name} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {p['support']} |")
    return "\n".join(lines) + "\n"
