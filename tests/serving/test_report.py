"""`kazstance report`: the aggregates equal counts made independently from the scored rows, the
page draws every chart in a real browser with no network, and bad input gets a clear error."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_TEXTS
from kazstance.cli import app
from serving.report import ReportError, build_report, read_scored
from serving.writers import spreadsheet_safe

runner = CliRunner()
LABELS = ("support", "oppose", "neutral")
# The language of each sample text, by a reader (not by the report's letter rule).
SAMPLE_LANGS = ["kk", "kk", "kk", "ru", "kk", "ru", "other", "kk"]
OUTLETS = ["kaz.inform.kz", "vlast.kz", "=evil.kz", None]
PLATFORMS = ["tiktok", "telegram", "general"]
# How a day is printed in the scored files, in turn: the report must read them all.
FORMATS = [lambda d: d.isoformat(), lambda d: d.strftime("%d.%m.%Y"), lambda d: f"{d.day} наурыз {d.year} ж."
           if d.month == 3 else d.strftime("%Y-%m-%dT10:00:00+05:00")]


def scored_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Rows in the scorer's output schema, with known dates, groups and labels; a few error rows,
    undated rows and unreadable dates among them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text_index = rng.randrange(len(SAMPLE_TEXTS))
        day = date(2024, rng.choice([1, 2, 3, 5]), rng.randint(1, 28))
        scores = [rng.random() ** 2 for _ in LABELS]
        total = sum(scores)
        scores = [round(s / total, 6) for s in scores]
        row = {"source": "archive.jsonl", "record": i + 1, "id": f"r{i}", "text": f"{SAMPLE_TEXTS[text_index]} ({i})",
               "outlet": OUTLETS[i % len(OUTLETS)], "platform": rng.choice(PLATFORMS),
               "date": FORMATS[i % len(FORMATS)](day),
               "label": LABELS[max(range(3), key=scores.__getitem__)],
               **{f"score_{label}": s for label, s in zip(LABELS, scores)}, "tokens": 12, "windows": 1,
               "model": "kazstance:test", "error": None,
               "_day": day, "_lang": SAMPLE_LANGS[text_index]}
        if i % 37 == 5:
            row.update(label=None, error="empty text", **{f"score_{label}": None for label in LABELS})
        elif i % 23 == 7:
            row.update(date=None, _day=None)
        elif i % 41 == 3:
            row.update(date="весной", _day=None)
        rows.append(row)
    return rows


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def write(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([public(r) for r in rows]), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(public(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:  # as the scorer writes CSV: formula-looking cells escaped with a leading '
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(public(rows[0])))
            writer.writeheader()
            for r in rows:
                writer.writerow({k: "" if v is None else spreadsheet_safe(v) for k, v in public(r).items()})
    return path


def expected_counts(rows: list[dict], key) -> dict[tuple, Counter]:
    """Label counts per group, counted directly from the rows: `key(row)` names the group (None
    leaves the row out)."""
    counts: dict[tuple, Counter] = {}
    for r in rows:
        if r["error"] is not None:
            continue
        group = key(r)
        if group is not None:
            counts.setdefault(group, Counter())[r["label"]] += 1
    return counts


def csv_counts(path: Path, grouping: str, columns: list[str]) -> dict[tuple, Counter]:
    out = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["grouping"] == grouping:
                out[tuple(row[c] for c in columns)] = Counter({l: int(row[f"n_{l}"]) for l in LABELS if int(row[f"n_{l}"])})
                assert int(row["n"]) == sum(int(row[f"n_{l}"]) for l in LABELS)
    return out


def month(r: dict):
    return (f"{r['_day']:%Y-%m}",) if r["_day"] else None


def outlet(r: dict) -> str:
    return r["outlet"] or "(missing)"


@pytest.fixture(params=[".parquet", ".jsonl", ".csv"])
def report_of(request, tmp_path):
    rows = scored_rows()
    scored = write(rows, tmp_path / f"scores{request.param}")
    result = build_report(read_scored([scored]), tmp_path / "report.html", by=["date", "outlet", "platform", "lang"],
                          evidence_per_cell=2)
    return rows, result


def test_aggregates_equal_counts_made_from_the_rows(report_of):
    rows, result = report_of
    path = result.csv
    assert csv_counts(path, "all", []) == expected_counts(rows, lambda r: ())
    assert csv_counts(path, "period", ["period"]) == expected_counts(rows, month)
    assert csv_counts(path, "outlet", ["outlet"]) == expected_counts(rows, lambda r: (outlet(r),))
    assert csv_counts(path, "platform", ["platform"]) == expected_counts(rows, lambda r: (r["platform"],))
    assert csv_counts(path, "lang", ["lang"]) == expected_counts(rows, lambda r: (r["_lang"],))
    combined = ["period", "outlet", "platform", "lang"]
    assert csv_counts(path, "+".join(combined), combined) == expected_counts(
        rows, lambda r: month(r) and (*month(r), outlet(r), r["platform"], r["_lang"]))


def test_what_was_left_out_is_counted(report_of):
    rows, result = report_of
    s = result.scored
    assert s.rows == len(rows)
    assert s.errors == sum(r["error"] is not None for r in rows)
    scored = [r for r in rows if r["error"] is None]
    assert s.dates_missing == sum(r["date"] is None for r in scored)
    assert s.dates_unparseable == sum(r["date"] == "весной" for r in scored) and s.unparseable_examples == ["весной"]
    assert s.lang_inferred


def test_low_confidence_counts_and_wilson_intervals(report_of):
    rows, result = report_of
    with result.csv.open(encoding="utf-8") as f:
        overall = next(r for r in csv.DictReader(f) if r["grouping"] == "all")
    scored = [r for r in rows if r["error"] is None]
    assert int(overall["low_confidence"]) == sum(max(r[f"score_{l}"] for l in LABELS) < 0.6 for r in scored)
    for label in LABELS:  # Wilson's interval, written out: z = 1.96
        n, k, z = len(scored), sum(r["label"] == label for r in scored), 1.959964
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        assert float(overall[f"share_{label}"]) == pytest.approx(p, abs=1e-6)
        assert float(overall[f"share_{label}_low"]) == pytest.approx(centre - half, abs=1e-5)
        assert float(overall[f"share_{label}_high"]) == pytest.approx(centre + half, abs=1e-5)


def test_low_confidence_is_counted_per_group(report_of):
    rows, result = report_of
    with result.csv.open(encoding="utf-8") as f:
        found = {r["outlet"]: int(r["low_confidence"]) for r in csv.DictReader(f) if r["grouping"] == "outlet"}
    expected = Counter(outlet(r) for r in rows
                       if r["error"] is None and max(r[f"score_{l}"] for l in LABELS) < 0.6)
    assert found == {name: expected.get(name, 0) for name in found} and set(expected) <= set(found)


def test_weekly_periods_start_on_monday(tmp_path):
    rows = scored_rows()
    scored = read_scored([write(rows, tmp_path / "s.parquet")], period="week")
    result = build_report(scored, tmp_path / "r.html", by=["date"], evidence_per_cell=0)
    expected = expected_counts(rows, lambda r: r["_day"] and (f"{r['_day'].isocalendar()[0]}-W{r['_day'].isocalendar()[1]:02d}",))
    assert csv_counts(result.csv, "period", ["period"]) == expected


def test_since_and_until_keep_only_dated_rows_inside(tmp_path):
    rows = scored_rows()
    scored = read_scored([write(rows, tmp_path / "s.parquet")], since=date(2024, 2, 1), until=date(2024, 3, 31))
    inside = [r for r in rows if r["_day"] and date(2024, 2, 1) <= r["_day"] <= date(2024, 3, 31)]
    result = build_report(scored, tmp_path / "r.html", by=["outlet"], evidence_per_cell=0)
    assert csv_counts(result.csv, "all", []) == expected_counts(inside, lambda r: ())
    assert scored.outside_range == sum(r["error"] is None for r in rows) - sum(r["error"] is None for r in inside)


def test_evidence_is_the_most_confident_distinct_items_per_stance_and_month(report_of):
    rows, result = report_of
    from serving.report import pick_evidence

    evidence = pick_evidence(result.scored, by_period=True, per_cell=2)
    for item in evidence:
        same_cell = [r for r in rows if r["error"] is None and month(r) == (item.period,) and r["label"] == item.label]
        best = sorted((r[f"score_{item.label}"] for r in same_cell), reverse=True)[:2]
        assert item.confidence in best
    assert len({(e.period, e.label, e.text) for e in evidence}) == len(evidence)


def test_the_csv_keeps_every_grouping(report_of):
    _, result = report_of
    with result.csv.open(encoding="utf-8") as f:
        groupings = {r["grouping"] for r in csv.DictReader(f)}
    assert groupings == {"all", "period", "outlet", "platform", "lang", "period+outlet+platform+lang"}


# ---------------------------------------------------------------------------------------------
# The page in a real browser, made from real scorer output.


def test_page_draws_every_chart_offline_with_highlighted_evidence(tmp_path, tiny_model_dir):
    from kazstance.predictor import Predictor
    from serving.report_browser import open_report
    from serving.score import score_files

    source = tmp_path / "archive.jsonl"
    with source.open("w", encoding="utf-8") as f:
        for i, text in enumerate(SAMPLE_TEXTS * 6):
            f.write(json.dumps({"id": f"a{i}", "text": text, "date": f"{1 + i % 28:02d}.{1 + i % 4:02d}.2024",
                                "outlet": OUTLETS[i % 3], "platform": PLATFORMS[i % 3]}, ensure_ascii=False) + "\n")
    predictor = Predictor.from_dir(tiny_model_dir)
    # `platform` is the scorer's own column: the tiny model's platform head.
    score_files([source], tmp_path / "scores.parquet", predictor=predictor, keep_text=True,
                keep_fields=["date", "outlet"])
    result = build_report(read_scored([tmp_path / "scores.parquet"], period="week"), tmp_path / "report.html",
                          predictor=predictor)
    assert result.by == ["date", "outlet", "platform", "lang"] and result.explained

    check = open_report(result.html, screenshot=tmp_path / "report.png")
    assert check.console_errors == []
    assert check.blocked_requests == []
    assert check.expected == result.charts == 7 and check.undrawn == []
    assert (tmp_path / "report.png").stat().st_size > 10_000
    html = result.html.read_text(encoding="utf-8")
    assert html.count('class="evidence"') == result.evidence > 0
    assert "<span title=" in html  # the evidence's words, each with its attribution


def test_a_page_with_a_broken_chart_is_caught(tmp_path):
    """The browser check can fail: a chart that never draws is named."""
    from serving.report_browser import open_report

    page = tmp_path / "broken.html"
    page.write_text('<html><body><section class="chart" data-chart="ghost"><div></div></section>'
                    "<script>undefinedFunction()</script></body></html>", encoding="utf-8")
    check = open_report(page, timeout_ms=2_000)
    assert check.undrawn == ["ghost"] and check.drawn == 0
    assert any("undefinedFunction" in e for e in check.console_errors)


def test_markup_in_the_data_stays_text(tmp_path):
    """Outlet names and texts come from archives: on the page they are text, never markup."""
    from serving.report_browser import open_report

    rows = scored_rows(60)
    for r in rows:
        r["outlet"] = '<img src="x" onerror="console.error(1)">'
        r["text"] = "<script>console.error('ran')</script>" + r["text"]
    result = build_report(read_scored([write(rows, tmp_path / "s.parquet")]), tmp_path / "r.html")
    check = open_report(result.html)
    assert check.console_errors == [] and check.blocked_requests == [] and check.undrawn == []
    assert "&lt;script&gt;console.error" in result.html.read_text(encoding="utf-8")


def test_no_readable_date_is_refused_for_by_date_and_skipped_by_default(tmp_path):
    rows = [{**r, "date": "someday"} for r in scored_rows(40)]
    scored = read_scored([write(rows, tmp_path / "s.parquet")])
    with pytest.raises(ReportError, match="no scored row has a date that can be read"):
        build_report(scored, tmp_path / "r.html", by=["date"])
    assert build_report(scored, tmp_path / "r.html", evidence_per_cell=0).by == ["outlet", "platform", "lang"]


# ---------------------------------------------------------------------------------------------
# The command line.


def test_cli_writes_page_and_csv_and_names_what_it_left_out(tmp_path):
    scored = write(scored_rows(), tmp_path / "scores.jsonl")
    out = tmp_path / "out" / "report.html"
    result = runner.invoke(app, ["report", str(scored), "--out", str(out), "--by", "date", "--by", "outlet",
                                 "--no-explain"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".csv").is_file()
    assert "unparseable" in result.output and "весной" in result.output
    page = out.read_text(encoding="utf-8")
    assert "=evil.kz" in page and "'=evil.kz" not in page  # the CSV escape is undone


@pytest.mark.parametrize("args, message", [
    (["--by", "colour"], "choose from date, outlet, platform, lang"),
    (["--period", "year"], "--period must be one of week, month"),
    (["--since", "March"], "expected a day as YYYY-MM-DD"),
    (["--low-confidence", "1.5"], "between 0 and 1"),
    (["--model", "/no/such/model"], "/no/such/model"),
])
def test_cli_refuses_bad_options(tmp_path, args, message):
    scored = write(scored_rows(40), tmp_path / "scores.parquet")
    result = runner.invoke(app, ["report", str(scored), "--out", str(tmp_path / "r.html"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_grouping_the_files_lack_says_how_to_get_it(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("outlet", "text")} for r in scored_rows(40)]
    scored = write(rows, tmp_path / "scores.parquet")
    with pytest.raises(ReportError, match="--keep-field outlet"):
        build_report(read_scored([scored]), tmp_path / "r.html", by=["outlet"])
    with pytest.raises(ReportError, match="--keep-text"):
        build_report(read_scored([scored]), tmp_path / "r.html", by=["lang"])
    result = build_report(read_scored([scored]), tmp_path / "r.html")  # by default: what the files carry
    assert result.by == ["date", "platform"] and "--keep-text" in result.note


def test_files_that_are_not_scorer_output_are_refused(tmp_path):
    labelled = tmp_path / "train.jsonl"
    labelled.write_text(json.dumps({"id": "1", "text": "x", "label": "support"}) + "\n", encoding="utf-8")
    with pytest.raises(ReportError, match="expected the output of `kazstance score`"):
        read_scored([labelled])
    only_errors = write([r for r in scored_rows() if r["error"]], tmp_path / "errors.jsonl")
    with pytest.raises(ReportError, match="error rows"):
        read_scored([only_errors])


def test_the_scoring_model_explains_unless_it_is_not_here(tmp_path):
    scored = write(scored_rows(40), tmp_path / "scores.parquet")  # scored by "kazstance:test": not in this store
    result = runner.invoke(app, ["report", str(scored), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "kazstance:test cannot be loaded here" in " ".join(result.output.split())
