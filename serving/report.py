"""`kazstance report`: from scored rows to what an analyst asks of them.

A year of scored news answers questions only once it is counted: who moved toward restriction,
when, in which outlets, about which platform. The report reads `kazstance score` output (Parquet,
JSONL or CSV, several files at once) and writes

- one self-contained HTML page (`serving/report_page.py`): stance share over time with counts and
  95% confidence intervals, stance share by outlet, platform and language, the share of
  low-confidence items, and the most confident evidence for each stance and period, its words
  highlighted by how much the prediction leans on them (`kazstance.explain`);
- the same aggregates as one tidy CSV: one row per group, `grouping` names the columns grouped by.

The recipe, top to bottom: `read_scored` -> `aggregate` (per grouping) -> `pick_evidence` ->
explanations -> page and CSV (`build_report`).

Grouping columns come from the scored files: `platform` is the scorer's own (the model's platform
head); `date`, `outlet` and `lang` are carried from the input by `kazstance score --keep-field ...`.
Without a `lang` column the language is read off the text's letters (`infer_lang`). Dates are parsed in the common formats
(`serving/dates.py`); missing and unparseable dates are counted, shown with examples, and left out
of the groupings by period only.

Counting rules, stated once:
- error rows (the scorer could not score them) are counted and left out of every share;
- a row's stance is the scorer's `label`; its confidence is its highest `score_<label>`;
  "low confidence" is a confidence under `--low-confidence` (default 0.6);
- shares are n_label / n of the group with Wilson 95% intervals (statsmodels): honest at the
  small counts a weekly outlet slice has, where the normal approximation leaves [0, 1];
- a missing outlet, platform or language is its own group, `(missing)`, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Iterable, Sequence

from .dates import parse_date, period_label, period_start
from .writers import score_cell, unescape_formula

GROUPINGS = ("date", "outlet", "platform", "lang")
PERIODS = ("week", "month")
MISSING = "(missing)"
NO_DATE = "(no date)"
LOW_CONFIDENCE = 0.6
EVIDENCE_PER_CELL = 3
EXAMPLES_KEPT = 5  # unparseable dates named on the page and in the summary
# Letters Kazakh Cyrillic has and Russian lacks: one of them marks a text as Kazakh.
KAZAKH_LETTERS = re.compile(r"[әғқңөұүһіӘҒҚҢӨҰҮҺІ]")
CYRILLIC = re.compile(r"[а-яёА-ЯЁ]")


class ReportError(ValueError):
    """The scored files cannot be reported on (not scorer output, or a grouping they lack)."""


@dataclass
class Scored:
    """The scored rows a report is made of, as a DataFrame, and what was left out of it."""

    frame: "pd.DataFrame"          # one row per scored row: label, confidence, score_*, keys, evidence text
    labels: list[str]              # the model's labels, in the files' score column order
    files: list[str]
    models: list[str]              # distinct `model` values (the report names them)
    rows: int = 0                  # rows read, error rows included
    errors: int = 0
    dates_missing: int = 0
    dates_unparseable: int = 0
    unparseable_examples: list[str] = field(default_factory=list)
    outside_range: int = 0         # rows left out by --since/--until (undated rows among them)
    since: date | None = None
    until: date | None = None
    lang_inferred: bool = False
    has_text: bool = False
    period: str = "month"
    low_confidence: float = LOW_CONFIDENCE


def infer_lang(text: str | None) -> str:
    """`kk` when the text has a letter only Kazakh Cyrillic uses, `ru` for other Cyrillic, else
    `other` (Latin-script Kazakh and Russian cannot be told apart by letters)."""
    if not text:
        return MISSING
    if KAZAKH_LETTERS.search(text):
        return "kk"
    return "ru" if CYRILLIC.search(text) else "other"


def read_scored(paths: Sequence[Path], period: str = "month", low_confidence: float = LOW_CONFIDENCE,
                since: date | None = None, until: date | None = None) -> Scored:
    """Every row of the scored files, with its period, groups and confidence. With `since` or
    `until` (inclusive), only rows dated inside that range: the rest, undated rows included, are
    counted in `outside_range` and left out of the whole report."""
    import pandas as pd

    from training.data import DataError, iter_rows

    if period not in PERIODS:
        raise ReportError(f"--period must be one of {', '.join(PERIODS)}, not {period!r}")
    if not 0 < low_confidence < 1:
        raise ReportError("--low-confidence must be between 0 and 1")
    columns: dict[str, list] = {}
    labels: list[str] = []
    present: set[str] = set()
    models: dict[str, None] = {}
    out = Scored(frame=None, labels=labels, files=[str(p) for p in paths], models=[], period=period,
                 low_confidence=low_confidence, since=since, until=until)
    for path in paths:
        try:
            for k, (_, row) in enumerate(iter_rows(Path(path))):
                if k == 0:
                    labels[:] = _check_columns(Path(path), row, labels)
                    present |= {name for name in row if name in GROUPINGS or name in ("text", "evidence")}
                out.rows += 1
                scores = [score_cell(row.get(f"score_{label}")) for label in labels]
                if row.get("error") not in (None, "") or None in scores or row.get("label") not in labels:
                    out.errors += 1
                    continue
                _add(columns, row, scores, labels, period, out, since, until)
                if row.get("model"):
                    models.setdefault(str(row["model"]))
        except DataError as err:
            raise ReportError(str(err)) from None
    if not out.rows:
        raise ReportError("the scored files hold no rows")
    frame = pd.DataFrame(columns)
    if frame.empty:
        why = f"{out.errors} are error rows and {out.outside_range} are outside --since/--until" if out.outside_range \
            else f"all {out.rows} are error rows"
        raise ReportError(f"no row to report on: of {out.rows} rows, {why}")
    out.has_text = "text" in present or "evidence" in present
    for name in ("outlet", "platform"):
        if name not in present:
            frame = frame.drop(columns=name)
    if "lang" not in present:
        if out.has_text:
            frame["lang"] = [infer_lang(t) for t in frame["evidence_text"]]
            out.lang_inferred = True
        else:
            frame = frame.drop(columns="lang")
    if "date" not in present:
        frame = frame.drop(columns=["period", "period_start"])
    frame["low_confidence"] = frame["confidence"] < low_confidence
    out.frame, out.models = frame, list(models)
    return out


def _check_columns(path: Path, row: dict, labels: list[str]) -> list[str]:
    found = [k[len("score_"):] for k in row if k.startswith("score_")]
    if len(found) < 2 or "label" not in row:
        raise ReportError(f"{path}: no label and score_<label> columns; expected the output of `kazstance score`")
    if labels and found != labels:
        raise ReportError(f"{path}: scores for {', '.join(found)}, but the first file has {', '.join(labels)}: "
                          "report on one model's output at a time")
    return found


def _add(columns: dict[str, list], row: dict, scores: list[float], labels: list[str], period: str, out: Scored,
         since: date | None, until: date | None) -> None:
    def put(name, value):
        columns.setdefault(name, []).append(value)

    raw = unescape_formula(row.get("date"))
    day = parse_date(raw)
    if (since or until) and (day is None or (since and day < since) or (until and day > until)):
        out.outside_range += 1
        return
    put("label", row["label"])
    put("confidence", max(scores))
    for label, score in zip(labels, scores):
        put(f"score_{label}", score)
    for name in ("outlet", "platform", "lang"):
        value = unescape_formula(row.get(name))
        put(name, str(value).strip() if value not in (None, "") else MISSING)
    if day is None:
        if raw in (None, "") or (isinstance(raw, str) and not raw.strip()):
            out.dates_missing += "date" in row
        else:
            out.dates_unparseable += 1
            if len(out.unparseable_examples) < EXAMPLES_KEPT and str(raw) not in out.unparseable_examples:
                out.unparseable_examples.append(str(raw))
    start = period_start(day, period) if day else None
    put("period_start", start)
    put("period", period_label(start, period) if start else NO_DATE)
    # Documents scored with --unit document carry the sentences behind their label: the evidence.
    text = unescape_formula(row.get("evidence") or row.get("text"))
    put("evidence_text", str(text) if text not in (None, "") else None)
    put("id", unescape_formula(row.get("id")) or f"{row.get('source')}:{row.get('record')}")


# ---------------------------------------------------------------------------------------------
# Aggregates.


def groupings(by: Sequence[str]) -> list[tuple[str, ...]]:
    """What to aggregate over: everything, each `--by` key alone, and all of them together."""
    keys = tuple("period" if k == "date" else k for k in by)
    out: list[tuple[str, ...]] = [()] + [(k,) for k in keys]
    if len(keys) > 1:
        out.append(keys)
    return out


def aggregate(scored: Scored, keys: tuple[str, ...]) -> "pd.DataFrame":
    """Counts, shares with Wilson 95% intervals, and low-confidence counts per group of `keys`
    (rows without a date are left out of a grouping by period)."""
    import pandas as pd
    from statsmodels.stats.proportion import proportion_confint

    frame = scored.frame
    if "period" in keys:
        frame = frame[frame["period"] != NO_DATE]
    index = [frame[k] for k in keys] if keys else [pd.Series("all", index=frame.index, name="all")]
    counts = pd.crosstab(index=index, columns=frame["label"]).reindex(columns=scored.labels, fill_value=0)
    low = frame.groupby([s.values for s in index])["low_confidence"].sum() if len(frame) else pd.Series(dtype=int)
    out = pd.DataFrame(index=counts.index)
    out["n"] = counts.sum(axis=1)
    for label in scored.labels:
        out[f"n_{label}"] = counts[label]
    for label in scored.labels:
        lo, hi = proportion_confint(counts[label].to_numpy(), out["n"].to_numpy(), alpha=0.05, method="wilson")
        out[f"share_{label}"] = counts[label] / out["n"]
        out[f"share_{label}_low"], out[f"share_{label}_high"] = lo, hi
    out["low_confidence"] = low.reindex(counts.index, fill_value=0).astype(int).to_numpy()
    out["low_confidence_share"] = out["low_confidence"] / out["n"]
    lo, hi = proportion_confint(out["low_confidence"].to_numpy(), out["n"].to_numpy(), alpha=0.05, method="wilson")
    out["low_confidence_share_low"], out["low_confidence_share_high"] = lo, hi
    out = out.reset_index()
    if not keys:
        out = out.drop(columns=out.columns[0])
    if "period" in keys:  # the period's first day, so charts put periods on a time axis (gaps show as gaps)
        starts = frame.drop_duplicates("period").set_index("period")["period_start"]
        out.insert(out.columns.get_loc("period") + 1, "period_start", out["period"].map(starts))
    out.insert(0, "grouping", "+".join(keys) or "all")
    return out


def aggregates_csv(tables: Iterable["pd.DataFrame"], path: Path, by: Sequence[str]) -> Path:
    """All groupings in one tidy CSV: the grouping, one column per key (empty where the grouping
    does not use it), then the counts and shares; numbers rounded to 6 places."""
    import pandas as pd

    keys = [*(["period", "period_start"] if "date" in by else []), *(k for k in by if k != "date")]
    frame = pd.concat(list(tables), ignore_index=True)
    frame = frame[["grouping", *keys, *[c for c in frame.columns if c not in ("grouping", *keys)]]]
    frame.round(6).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------
# Evidence.


@dataclass
class Evidence:
    label: str
    period: str            # "" when the report is not by date
    text: str
    confidence: float
    id: str
    outlet: str | None
    explanation: object = None  # kazstance.explain.Explanation, when explained


def pick_evidence(scored: Scored, by_period: bool, per_cell: int = EVIDENCE_PER_CELL) -> list[Evidence]:
    """The `per_cell` most confident rows of each stance (and period), one per distinct text (a
    viral repost is one piece of evidence, not three)."""
    frame = scored.frame
    if not scored.has_text or per_cell < 1:
        return []
    frame = frame[frame["evidence_text"].notna()]
    if by_period:
        frame = frame[frame["period"] != NO_DATE]
    cells = ["period", "label"] if by_period else ["label"]
    ranked = frame.sort_values(["confidence", "id"], ascending=[False, True], kind="stable")
    ranked = ranked.drop_duplicates(subset=[*cells, "evidence_text"])
    picked = ranked.groupby(cells, sort=False).head(per_cell)
    order = {label: i for i, label in enumerate(scored.labels)}
    picked = picked.assign(_order=picked["label"].map(order))
    picked = picked.sort_values([*(["period_start"] if by_period else []), "_order", "confidence"],
                                ascending=[*([True] if by_period else []), True, False], kind="stable")
    return [Evidence(label=r.label, period=r.period if by_period else "", text=r.evidence_text,
                     confidence=float(r.confidence), id=str(r.id),
                     outlet=getattr(r, "outlet", None)) for r in picked.itertuples()]


def explain_evidence(evidence: list[Evidence], predictor) -> None:
    """Word attributions for each piece of evidence, in one predictor call (see kazstance.explain)."""
    from kazstance.explain import explain

    if not evidence:
        return
    for item, explanation in zip(evidence, explain(predictor, [e.text for e in evidence])):
        item.explanation = explanation


# ---------------------------------------------------------------------------------------------
# The recipe.


@dataclass
class ReportResult:
    html: Path
    csv: Path
    scored: Scored
    by: list[str]
    charts: int
    evidence: int
    explained: bool
    note: str | None = None   # why evidence has no highlights, when it has none


def resolve_by(scored: Scored, by: Sequence[str] | None) -> list[str]:
    """`--by` as asked, checked against the columns; by default every grouping the files carry."""
    frame = scored.frame
    available = [k for k in GROUPINGS if ("period" if k == "date" else k) in frame.columns]
    if "date" in available and (frame["period"] == NO_DATE).all():
        if by and "date" in by:
            raise ReportError("--by date: no scored row has a date that can be read "
                              f"({scored.dates_missing} missing, {scored.dates_unparseable} unparseable)")
        available.remove("date")
    if not by:
        return available
    unknown = [k for k in by if k not in GROUPINGS]
    if unknown:
        raise ReportError(f"--by {unknown[0]!r}: choose from {', '.join(GROUPINGS)}")
    for k in by:
        if k not in available:
            how = ("score with `--keep-text` so the language can be read off the text, or "
                   if k == "lang" else "")
            raise ReportError(f"--by {k}: the scored files have no `{k}` column; {how}score with "
                              f"`kazstance score ... --keep-field {k}`")
    return list(dict.fromkeys(by))


def build_report(scored: Scored, out: Path, by: Sequence[str] | None = None, csv_path: Path | None = None,
                 evidence_per_cell: int = EVIDENCE_PER_CELL, predictor=None, explain_note: str | None = None,
                 title: str = "Stance report", top_groups: int = 20) -> ReportResult:
    """Aggregate `scored` (from `read_scored`), pick and explain the evidence, then write the page
    and the CSV. `predictor` (a loaded `Predictor`) explains the evidence; None leaves it
    unhighlighted, `explain_note` saying why."""
    from .report_page import render_page

    by = resolve_by(scored, by)
    tables = {keys: aggregate(scored, keys) for keys in groupings(by)}
    evidence = pick_evidence(scored, by_period="date" in by, per_cell=evidence_per_cell)
    note = explain_note
    if predictor is not None:
        explain_evidence(evidence, predictor)
    elif evidence and note is None:
        note = "no model was given to explain the evidence"
    if not scored.has_text:
        note = "the scored files carry no text: score with `--keep-text` to see evidence"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = Path(csv_path) if csv_path else out.with_suffix(".csv")
    aggregates_csv(tables.values(), csv_path, by)
    charts = render_page(out, scored=scored, by=by, tables=tables, evidence=evidence, title=title,
                         csv_name=csv_path.name, note=note, top_groups=top_groups)
    return ReportResult(html=out, csv=csv_path, scored=scored, by=by, charts=charts, evidence=len(evidence),
                        explained=predictor is not None and bool(evidence), note=note)
