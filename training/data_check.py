"""`kazstance data check`: validate a labelled dataset against the label contract and count it.

Rules (each violation is reported as `file:row: [rule] message`):
- `schema`: every record has non-empty `id`, `text`, `label`, `lang`, `platform`, `source`;
- `label` / `lang`: values from the policy's sets;
- `split`: a record's split is its `split` field or its file name (train / validation / test);
- `unique-id`: ids are unique across all files;
- `duplicate`: no two records share the same (normalised) text;
- `leak`: no near duplicate (character 5-gram Jaccard >= threshold) across different splits.
Near duplicates inside one split are allowed but counted: the rate is printed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kazstance.labels import LABELS

from .data import SUFFIXES, DataError, iter_rows

REQUIRED = ("id", "text", "label", "lang", "platform", "source")
LANGS = ("kk", "kk-latn", "ru", "kk-ru")
SPLITS = ("train", "validation", "test", "challenge")  # challenge: evaluation only, never trained on


@dataclass
class Record:
    file: Path
    row: int
    fields: dict

    @property
    def where(self) -> str:
        return f"{self.file}:{self.row}"


@dataclass
class Report:
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    near_pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def add(self, record: Record | str, rule: str, message: str) -> None:
        where = record.where if isinstance(record, Record) else record
        self.problems.append(f"{where}: [{rule}] {message}")


def data_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        else:
            files.append(path)
    return files


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def near_duplicates(texts: list[str], threshold: float, block: int = 2048) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with character 5-gram Jaccard >= threshold, via sparse products in blocks."""
    from sklearn.feature_extraction.text import CountVectorizer

    grams = CountVectorizer(analyzer="char", ngram_range=(5, 5), binary=True, lowercase=False)
    x = grams.fit_transform([normalise(t) for t in texts]).astype(np.float32).tocsr()
    sizes = np.asarray(x.sum(axis=1)).ravel()
    pairs = []
    for start in range(0, x.shape[0], block):
        inter = (x[start : start + block] @ x.T).tocoo()
        for i, j, common in zip(inter.row + start, inter.col, inter.data):
            if i < j:
                jaccard = common / (sizes[i] + sizes[j] - common)
                if jaccard >= threshold:
                    pairs.append((int(i), int(j), float(jaccard)))
    return pairs


def check(paths: list[Path], near_threshold: float = 0.8) -> Report:
    report = Report()
    files = data_files(paths)
    if not files:
        report.add(", ".join(map(str, paths)), "files", "no JSONL, CSV or Parquet files found")
        return report
    for file in files:
        try:
            for row, fields in iter_rows(file):
                report.records.append(Record(file, row, fields))
        except DataError as err:
            report.add(str(file), "format", str(err))

    seen_ids: dict[str, Record] = {}
    seen_texts: dict[str, Record] = {}
    for rec in report.records:
        f = rec.fields
        for name in REQUIRED:
            if not str(f.get(name) or "").strip():
                report.add(rec, "schema", f"missing or empty field {name!r}")
        if f.get("label") and f["label"] not in LABELS:
            report.add(rec, "label", f"{f['label']!r} is not one of {', '.join(LABELS)}")
        if f.get("lang") and f["lang"] not in LANGS:
            report.add(rec, "lang", f"{f['lang']!r} is not one of {', '.join(LANGS)}")
        split = f.get("split") or rec.file.stem
        if split not in SPLITS:
            report.add(rec, "split", f"split {split!r} (from the split field or file name) is not one of {', '.join(SPLITS)}")
        f["_split"] = split
        rid = str(f.get("id", ""))
        if rid and rid in seen_ids:
            report.add(rec, "unique-id", f"id {rid!r} already used at {seen_ids[rid].where}")
        seen_ids.setdefault(rid, rec)
        text = normalise(f.get("text") or "")
        if text and text in seen_texts:
            report.add(rec, "duplicate", f"same text as {seen_texts[text].where}")
        seen_texts.setdefault(text, rec)

    texts = [str(r.fields.get("text") or "") for r in report.records]
    report.near_pairs = near_duplicates(texts, near_threshold) if len(texts) > 1 else []
    for i, j, jaccard in report.near_pairs:
        a, b = report.records[i], report.records[j]
        if a.fields["_split"] != b.fields["_split"]:
            report.add(b, "leak", f"near duplicate (Jaccard {jaccard:.2f}) of {a.where} in split {a.fields['_split']!r}")
    return report


def counts_table(report: Report, key: str) -> Table:
    table = Table(title=f"by {key}")
    table.add_column(key)
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    table.add_column("share", justify="right")
    by = Counter((r.fields.get(key) if key != "split" else r.fields["_split"], r.fields["_split"]) for r in report.records)
    values = sorted({v for v, _ in by}, key=str)
    n = len(report.records)
    for value in values:
        per = [by[(value, s)] for s in SPLITS]
        table.add_row(str(value), *map(str, per), str(sum(per)), f"{100 * sum(per) / n:.1f}%")
    return table


def check_and_report(paths: list[Path], near_threshold: float = 0.8, console: Console | None = None) -> bool:
    console = console or Console()
    report = check(paths, near_threshold)
    n = len(report.records)
    for key in ("label", "lang", "platform"):
        if n:
            console.print(counts_table(report, key))
    involved = {k for i, j, _ in report.near_pairs for k in (i, j)}
    console.print(f"{n} statements; {len(report.near_pairs)} near-duplicate pairs (5-gram Jaccard >= {near_threshold}); "
                  f"{len(involved)} statements ({100 * len(involved) / max(n, 1):.2f}%) have a near duplicate")
    for problem in report.problems:
        console.print(escape(problem), style="red", highlight=False, soft_wrap=True)
    if report.problems:
        console.print(f"[bold red]{len(report.problems)} problem(s)[/]")
        return False
    console.print("[bold green]ok[/]")
    return True
