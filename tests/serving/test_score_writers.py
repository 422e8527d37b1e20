"""Specification of the resumable writers: only checkpointed parts reach the output, in order."""

from __future__ import annotations

import pyarrow as pa
import pytest

from score_data import read_rows
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


def test_resume_refuses_a_run_with_other_inputs_or_options(tmp_path):
    out = tmp_path / "scores.jsonl"
    PartWriter(out, SCHEMA, FINGERPRINT).commit(chunk(0, 2), {})
    with pytest.raises(ResumeError, match="other inputs or options"):
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
