"""Specification of the resumable writers: only checkpointed parts reach the output, in order."""

from __future__ import annotations

from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from typer.testing import CliRunner

from kazstance.cli import app
from score_data import read_rows, write
from serving import writers
from serving.writers import PartWriter, ResumeError, output_format, work_dir

SCHEMA = pa.schema([("record", pa.int64()), ("text", pa.string()), ("score", pa.float64()), ("error", pa.string())])
FINGERPRINT = {"inputs": [["a.jsonl", 10, 1]], "unit": "statement"}


def chunk(start: int, n: int) -> pa.Table:
    return pa.table({"record": list(range(start, start + n)), "text": [f"мәтін, \"{i}\"\n" for i in range(start, start + n)],
                     "score": [i / 7 for i in range(start, start + n)], "error": [None] * n}, schema=SCHEMA)


def expected(n: int) -> list[dict]:
    return chunk(0, n).to_pylist()


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_committed_chunks_become_one_output_in_order_and_the_work_folder_goes(tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    writer = PartWriter(out, SCHEMA, FINGERPRINT)
    for start in (0, 3, 5):
        writer.commit(chunk(start, {0: 3, 3: 2, 5: 4}[start]), {"position": start})
    writer.commit(chunk(9, 0), {"position": "end"})  # an empty chunk only moves the checkpoint
    writer.finish()
    rows = read_rows(out)
    if suffix == ".csv":  # CSV has no types: read back, every value is text, null is empty
        rows = [{**row, "record": int(row["record"]), "score": float(row["score"]), "error": row["error"] or None}
                for row in rows]
    assert rows == expected(9)
    assert not work_dir(out).exists()


def test_an_empty_run_writes_an_output_with_the_schema(tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "empty.parquet"
    writer = PartWriter(out, SCHEMA, FINGERPRINT)
    writer.commit(chunk(0, 0), {})
    writer.finish()
    assert pq.read_table(out).schema == SCHEMA and pq.read_table(out).num_rows == 0


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_resume_drops_what_was_written_after_the_last_checkpoint(tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    first = PartWriter(out, SCHEMA, FINGERPRINT)
    first.commit(chunk(0, 4), {"position": 4})
    # Killed mid-commit: the next part landed (and a temporary file) but progress.json did not.
    (work_dir(out) / f"part-000001.{output_format(out)}").write_bytes(b"half a part")
    (work_dir(out) / "part-000002.tmp").write_bytes(b"garbage")

    resumed = PartWriter(out, SCHEMA, FINGERPRINT, resume=True)
    assert resumed.state == {"position": 4}
    resumed.commit(chunk(4, 3), {"position": 7})
    resumed.finish()
    assert read_rows(out) == expected(7)


def test_resume_after_a_kill_during_finish_assembles_again(tmp_path):
    out = tmp_path / "scores.parquet"
    writer = PartWriter(out, SCHEMA, FINGERPRINT)
    writer.commit(chunk(0, 5), {"position": "end"})
    (tmp_path / ".scores.parquet.tmp").write_bytes(b"half an output")  # killed while assembling
    resumed = PartWriter(out, SCHEMA, FINGERPRINT, resume=True)
    resumed.finish()
    assert read_rows(out) == expected(5)


def test_resume_without_a_work_folder_starts_fresh(tmp_path):
    writer = PartWriter(tmp_path / "scores.jsonl", SCHEMA, FINGERPRINT, resume=True)
    assert writer.state is None and writer.parts == 0


def test_resume_refuses_a_run_with_other_inputs_or_options_and_says_what_changed(tmp_path):
    out = tmp_path / "scores.jsonl"
    PartWriter(out, SCHEMA, FINGERPRINT).commit(chunk(0, 2), {})
    with pytest.raises(ResumeError, match=r"other inputs or options.*changed: unit\)"):
        PartWriter(out, SCHEMA, {**FINGERPRINT, "unit": "sentence"}, resume=True)


def test_without_resume_an_old_work_folder_is_discarded(tmp_path):
    out = tmp_path / "scores.jsonl"
    PartWriter(out, SCHEMA, FINGERPRINT).commit(chunk(0, 2), {})
    fresh = PartWriter(out, SCHEMA, FINGERPRINT)
    fresh.commit(chunk(10, 1), {})
    fresh.finish()
    assert [r["record"] for r in read_rows(out)] == [10]


def test_the_output_format_follows_the_extension():
    assert [output_format(p) for p in ("a.parquet", "b.JSONL", "c.csv")] == ["parquet", "jsonl", "csv"]
    with pytest.raises(ValueError, match="unknown output format"):
        output_format("scores.xlsx")


# ---------------------------------------------------------------------------------------------
# The Parquet join: memory flat whatever the run's size, row groups of a useful size.


@contextmanager
def arrow_memory():
    """A pool of its own for Arrow's allocations inside the block; its `max_memory()` is their peak."""
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(previous)
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)


def wide_chunk(start: int, n: int) -> pa.Table:
    """Rows as wide as documents kept with their text: 4 KB each."""
    return pa.table({"record": list(range(start, start + n)), "text": [f"{i:08d}" + "ә" * 2000 for i in range(start, start + n)],
                     "score": [0.5] * n, "error": [None] * n}, schema=SCHEMA)


def join_peak(out, parts: int) -> int:
    """Arrow's peak memory while `finish()` joins `parts` committed parts of 100 wide rows."""
    writer = PartWriter(out, SCHEMA, FINGERPRINT)
    for i in range(parts):
        writer.commit(wide_chunk(i * 100, 100), {})
    with arrow_memory() as pool:
        writer.finish()
    return pool.max_memory()


def test_joining_parquet_parts_holds_a_row_group_at_most_whatever_the_runs_length(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "ROW_GROUP_BYTES", 1 << 20)
    # 8,000 rows, 32 MB: under ROW_GROUP_ROWS, so a join gathering rows by count held all of them.
    short, long = join_peak(tmp_path / "short.parquet", 10), join_peak(tmp_path / "long.parquet", 80)
    assert long < 1.25 * short
    assert long < 4 * writers.ROW_GROUP_BYTES  # a row group, the part just read, the writer's buffers
    assert pq.read_table(tmp_path / "long.parquet").num_rows == 8000


def row_groups(path) -> list[int]:
    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def test_parquet_parts_are_regrouped_up_to_the_row_and_byte_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "ROW_GROUP_BYTES", 1 << 20)
    monkeypatch.setattr(writers, "ROW_GROUP_ROWS", 250)
    narrow, wide = PartWriter(tmp_path / "narrow.parquet", SCHEMA, FINGERPRINT), PartWriter(tmp_path / "wide.parquet", SCHEMA, FINGERPRINT)
    for i in range(10):
        narrow.commit(chunk(i * 100, 100), {})
        wide.commit(wide_chunk(i * 100, 100), {})  # 400 KB a part: two fit in 1 MB, three do not
    wide.commit(chunk(1000, 600), {})  # a part over the limits is cut at ROW_GROUP_ROWS
    narrow.finish(), wide.finish()
    assert row_groups(tmp_path / "narrow.parquet") == [200] * 5
    assert row_groups(tmp_path / "wide.parquet") == [200] * 5 + [250, 250, 100]
    assert read_rows(tmp_path / "narrow.parquet") == expected(1000)


# ---------------------------------------------------------------------------------------------
# CSV injection: text cells that a spreadsheet would run as formulas.

FORMULAS = ["=1+1", "+7 керек", "-HYPERLINK(\"http://x\")", "@SUM(A1)", "\t=1", "\r=1"]
HARMLESS = ["a=b", " =1", "'=1", "", "-42", "+77011234567", "-0.5e3"]  # plain numbers (ids) stay as they are


def formula_table() -> pa.Table:
    n = len(FORMULAS) + len(HARMLESS) + 1
    return pa.table({"record": [-1] * n, "text": FORMULAS + HARMLESS + [None], "score": [-0.5] * n,
                     "error": ["-1 is not a text"] + [None] * (n - 1)}, schema=SCHEMA)


def test_csv_text_cells_that_a_spreadsheet_would_run_get_a_leading_quote(tmp_path):
    out = tmp_path / "scores.csv"
    writer = PartWriter(out, SCHEMA, FINGERPRINT)
    writer.commit(formula_table(), {})
    writer.finish()
    rows = read_rows(out)
    assert [r["text"] for r in rows] == ["'" + t for t in FORMULAS] + HARMLESS + [""]
    assert rows[0]["error"] == "'-1 is not a text"  # every text column, not only `text`
    assert {(r["record"], r["score"]) for r in rows} == {("-1", "-0.5")}  # numbers are never touched
    assert list(rows[0]) == SCHEMA.names


@pytest.mark.parametrize("suffix, escape", [(".csv", False), (".jsonl", True), (".parquet", True)])
def test_texts_are_written_unchanged_without_escaping_and_in_jsonl_or_parquet(tmp_path, suffix, escape):
    out = tmp_path / f"scores{suffix}"
    writer = PartWriter(out, SCHEMA, FINGERPRINT, escape_formulas=escape)
    writer.commit(formula_table(), {})
    writer.finish()
    want = FORMULAS + HARMLESS + ["" if suffix == ".csv" else None]
    assert [r["text"] for r in read_rows(out)] == want


def test_the_cli_escapes_csv_by_default_and_no_escape_formulas_turns_it_off(tmp_path, tiny_model_dir):
    texts = FORMULAS[:4]
    path, got = write("jsonl", tmp_path / "in", texts), {}
    for flag in ([], ["--no-escape-formulas"]):
        out = tmp_path / f"scores{len(flag)}.csv"
        result = CliRunner().invoke(app, ["score", str(path), "-o", str(out), "--model", str(tiny_model_dir),
                                          "--keep-text", "--threads", "1", "--no-progress", *flag])
        assert result.exit_code == 0, result.output
        got[bool(flag)] = [r["text"] for r in read_rows(out)]
    assert got == {False: ["'" + t for t in texts], True: texts}
    assert "--no-escape-formulas" in CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"}).output
