"""`kazstance data check`: validate a labelled dataset against the label contract and count it.

Rules (each violation is reported as `file:row: [rule] message`):
- `schema`: every record has non-empty `id`, `text`, `label`, `lang`, `platform`, `source`;
- `label` / `lang`: values from the policy's sets;
- `split`: a record's split is its `split` field or its file name (train / validation / test);
- `unique-id`: ids are unique across all files;
- `duplicate`: no two records share the same (normalised) text;
- `leak`: no near duplicate (character 5-gram Jaccard >= threshold) across different splits;
- `heldout`: no `source_url` is on the team's held-out page list (see `training.sources`);
- `source-leak`: all statements restated from one page sit in one split;
- `clarity` / `label_2`: when present, `clarity` is clear/borderline and `label_2` a label.
Near duplicates inside one split are allowed but counted: the rate is printed.

Besides the rules it reports what a dataset's author needs to judge it: counts by label,
language and platform; sources and outlets per split (and test outlets unseen in train);
agreement (Cohen's kappa) wherever a second annotator's `label_2` is present; and a cue report:
how far the TF-IDF baseline, trained on a folder's train split, gets on its other splits.
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
from .sources import HELDOUT_FILES, load_heldout, normalise_url, outlet_family, url_hash

REQUIRED = ("id", "text", "label", "lang", "platform", "source")
LANGS = ("kk", "kk-latn", "ru", "kk-ru")
SPLITS = ("train", "validation", "test", "challenge")  # challenge: evaluation only, never trained on
CLARITY = ("clear", "borderline")
NEAR_DUPLICATE = 0.8  # character 5-gram Jaccard from which two statements count as near duplicates


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
    heldout_listed: int = 0
    heldout_refused: int = 0

    def add(self, record: Record | str, rule: str, message: str) -> None:
        where = record.where if isinstance(record, Record) else record
        self.problems.append(f"{where}: [{rule}] {message}")


def data_files(paths: list[Path]) -> list[Path]:
    """The data files under `paths`, each once (`data/ data/user/` names data/user/ twice)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        else:
            files.append(path)
    seen: set[Path] = set()
    return [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def near_duplicates(texts: list[str], threshold: float, block: int = 2048) -> list[tuple[int, int, float]]:
    """All pairs (i < j) with character 5-gram Jaccard >= threshold, via sparse products in blocks."""
    from sklearn.feature_extraction.text import CountVectorizer

    grams = CountVectorizer(analyzer="char", ngram_range=(5, 5), binary=True, lowercase=False)
    try:
        x = grams.fit_transform([normalise(t) for t in texts]).astype(np.float32).tocsr()
    except ValueError:  # no text has 5 characters: nothing can be a near duplicate
        return []
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


def check(paths: list[Path], near_threshold: float = NEAR_DUPLICATE, heldout_files: tuple[Path, ...] | list[Path] = HELDOUT_FILES
          ) -> Report:
    report = Report()
    heldout = load_heldout(heldout_files)
    report.heldout_listed = len(heldout)
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
    seen_sources: dict[str, Record] = {}
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
        if f.get("clarity") is not None and f["clarity"] not in CLARITY:
            report.add(rec, "clarity", f"{f['clarity']!r} is not one of {', '.join(CLARITY)}")
        if f.get("label_2") is not None and f["label_2"] not in LABELS:
            report.add(rec, "label_2", f"second label {f['label_2']!r} is not one of {', '.join(LABELS)}")
        url = str(f.get("source_url") or "").strip()
        if url:
            if url_hash(url) in heldout:
                report.heldout_refused += 1
                report.add(rec, "heldout", f"source_url {url} is a page held out for evaluation; drop this statement")
            first = seen_sources.setdefault(normalise_url(url), rec)
            if first.fields["_split"] != split:
                report.add(rec, "source-leak", f"page {url} also feeds split {first.fields['_split']!r} ({first.where})")

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


def sources_table(report: Report) -> Table | None:
    """Per split: statements with a source, distinct pages and outlets, the largest outlet's share."""
    rows = [r.fields for r in report.records if r.fields.get("source_url")]
    if not rows:
        return None
    table = Table(title="sources (records with a source_url)")
    for column in ("split", "statements", "pages", "outlets", "largest outlet", "outlets unseen in train"):
        table.add_column(column, justify="right" if column != "split" else "left")
    train_families = {outlet_family(f.get("outlet") or f["source_url"]) for f in rows if f["_split"] == "train"}
    for split in SPLITS + ("all",):
        part = [f for f in rows if split in ("all", f["_split"])]
        if not part:
            continue
        outlets = Counter(f.get("outlet") or outlet_family(f["source_url"]) for f in part)
        top, top_n = outlets.most_common(1)[0]
        unseen = {outlet_family(o) for o in outlets} - train_families
        unseen_n = sum(1 for f in part if outlet_family(f.get("outlet") or f["source_url"]) in unseen)
        table.add_row(split, str(len(part)), str(len({normalise_url(f["source_url"]) for f in part})), str(len(outlets)),
                      f"{top} {100 * top_n / len(part):.1f}%",
                      "-" if split in ("train", "all") else f"{len(unseen)} ({unseen_n} statements)")
    return table


def agreement(report: Report) -> dict | None:
    """Cohen's kappa between the first annotation (`label_1`, else `label`) and `label_2`."""
    from sklearn.metrics import cohen_kappa_score

    pairs = [(f.get("label_1") or f["label"], f["label_2"]) for f in (r.fields for r in report.records)
             if f.get("label_2") in LABELS and (f.get("label_1") or f.get("label")) in LABELS]
    if not pairs:
        return None
    first, second = zip(*pairs)
    return {"n": len(pairs), "agreement": sum(a == b for a, b in pairs) / len(pairs),
            "kappa": float(cohen_kappa_score(first, second, labels=list(LABELS)))}


def cue_report(report: Report) -> list[dict]:
    """For each folder with a train split: the TF-IDF baseline fitted on it, scored on its other splits.

    A high score means keywords alone solve the split, so it says little about understanding.
    """
    from sklearn.metrics import f1_score

    from .baseline import fit
    from .config import ModelConfig

    by_folder: dict[Path, dict[str, list[dict]]] = {}
    for rec in report.records:
        f = rec.fields
        if f.get("label") in LABELS and str(f.get("text") or "").strip():
            by_folder.setdefault(rec.file.parent, {}).setdefault(f["_split"], []).append(f)
    out = []
    for folder, splits in sorted(by_folder.items()):
        train = splits.get("train", [])
        if len({f["label"] for f in train}) < 2:
            continue
        try:
            vectorizer, clf, _ = fit([f["text"] for f in train], [f["label"] for f in train], LABELS, ModelConfig(), seed=0)
        except ValueError:  # too little text for any n-gram to occur twice: nothing to report
            continue
        for split, rows in sorted(splits.items()):
            if split == "train":
                continue
            pred = clf.predict(vectorizer.transform([f["text"] for f in rows]))
            y = [LABELS.index(f["label"]) for f in rows]
            out.append({"folder": str(folder), "split": split, "n": len(rows),
                        "macro_f1": float(f1_score(y, pred, labels=list(range(len(LABELS))), average="macro", zero_division=0))})
    return out


def check_and_report(paths: list[Path], near_threshold: float = NEAR_DUPLICATE, console: Console | None = None,
                     heldout_files: tuple[Path, ...] | list[Path] = HELDOUT_FILES, cues: bool = True) -> bool:
    console = console or Console()
    report = check(paths, near_threshold, heldout_files)
    n = len(report.records)
    for key in ("label", "lang", "platform"):
        if n:
            console.print(counts_table(report, key))
    if (table := sources_table(report)) is not None:
        console.print(table)
    console.print(f"held-out pages: {report.heldout_listed} on the list; {report.heldout_refused} statement(s) refused for coming from one")
    if (agree := agreement(report)) is not None:
        console.print(f"second annotation: {agree['n']} statements, raw agreement {agree['agreement']:.3f}, "
                      f"Cohen's kappa {agree['kappa']:.3f}")
    if cues and n:
        for row in cue_report(report):
            console.print(f"cue report: TF-IDF baseline fitted on {row['folder']}/train -> {row['split']} "
                          f"macro-F1 {row['macro_f1']:.3f} (n={row['n']})")
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
