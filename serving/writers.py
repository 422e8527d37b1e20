"""Resumable output for the batch scorer: Parquet, JSONL or CSV, chosen by the output's extension.

This module owns durability, so that a run killed at any moment (SIGKILL included) and restarted
with `--resume` ends with exactly the output of an uninterrupted run. Parquet cannot be appended
to after a kill (its footer is written last), so every format uses the same protocol:

1. Beside OUT, a hidden work folder `.OUT.partial/` collects numbered part files, one per
   committed chunk, plus `progress.json`.
2. `commit(table, state)` writes the chunk to a temporary file, fsyncs it and renames it to the
   next part name; only then does it replace `progress.json` atomically (write, fsync, rename)
   with the new part count and the caller's `state` (where reading stopped, the counters).
   A part exists for the output only once `progress.json` counts it.
3. On resume, the work folder is cut back to what `progress.json` counts (a part written just
   before the kill is deleted) and the caller continues from the saved `state`.
4. `finish()` concatenates the parts in order into a temporary file, renames it onto OUT and
   removes the work folder. A kill during `finish()` leaves the work folder whole, so a resume
   simply concatenates again. Parquet parts are rewritten as row groups of at most
   ROW_GROUP_BYTES (Arrow memory) and ROW_GROUP_ROWS: the join holds one row group plus one part,
   so its memory depends on neither the run's length nor its rows' width.

CSV output is meant to be opened in spreadsheets, which run a cell starting with `=`, `+`, `-`,
`@`, tab or carriage return as a formula (CSV injection: a scored text could call out or alter
the sheet). So, by default, every text cell starting with one of these gets a leading `'`
(OWASP's advice), which spreadsheets show as text; numbers (scores, record numbers) and text
cells that are just a number (ids such as `-42` or `+77011234567`) are never touched. `escape_formulas=False` (`--no-escape-formulas`) writes the texts unchanged; Parquet
and JSONL always do.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa

OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
PROGRESS = "progress.json"
# Parts are one chunk each (about 500 rows), too small to be row groups; the final Parquet file
# regroups them up to these limits. The bytes limit bounds the join's memory whatever a row holds
# (documents with their text run to kilobytes a row); the rows limit rarely comes first.
ROW_GROUP_BYTES = 8 << 20
ROW_GROUP_ROWS = 64 * 1024
FORMULA_START = r"^[=+\-@\t\r]"  # OWASP's list of what makes a spreadsheet cell a formula
# A cell that is just a number (an id like -42 or +77011234567) is read as that number, not run:
# it stays as it is, so ids still join with their source.
PLAIN_NUMBER = r"^[+-]?[0-9]+([.,][0-9]+)?([eE][+-]?[0-9]+)?$"
_FORMULA_START = re.compile(FORMULA_START)
_PLAIN_NUMBER = re.compile(PLAIN_NUMBER)


class ResumeError(RuntimeError):
    """The interrupted run's work folder does not match this run (other inputs or options)."""


def output_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {suffix or '(none)'!r} for {path}; "
                         f"use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    return OUTPUT_FORMATS[suffix]


def work_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.partial"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _durable_write(path: Path, write) -> None:
    """Write via `write(file)` to a temporary name, fsync, and rename into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class PartWriter:
    """Commits scored chunks durably and assembles the final output; see the module docstring."""

    def __init__(self, output: str | Path, schema: pa.Schema, fingerprint: dict, resume: bool = False,
                 escape_formulas: bool = True):
        """`fingerprint` must change with anything that changes the output, `escape_formulas`
        included: a resumed run must not mix escaped and unescaped parts."""
        self.output = Path(output)
        self.format = output_format(self.output)
        self.schema = schema
        self.escape_formulas = escape_formulas and self.format == "csv"
        self.work = work_dir(self.output)
        # JSON round trip so a fingerprint compares equal to the one read back from disk.
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.parts = 0
        self.state: dict | None = None  # the caller's state at the last commit of an interrupted run
        if resume:
            self._recover()
        if self.state is None:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work.mkdir(parents=True)

    def _part(self, index: int) -> Path:
        return self.work / f"part-{index:06d}.{self.format}"

    def _recover(self) -> None:
        progress = self.work / PROGRESS
        if not progress.is_file():
            return
        saved = json.loads(progress.read_text(encoding="utf-8"))
        if saved.get("fingerprint") != self.fingerprint:
            changed = _changed(saved.get("fingerprint"), self.fingerprint)
            raise ResumeError(f"{self.output}: the interrupted run used other inputs or options, or they "
                              f"changed since (changed: {changed}); rerun without --resume to start over")
        keep = {self._part(i).name for i in range(saved["parts"])} | {PROGRESS}
        missing = keep - {p.name for p in self.work.iterdir()}
        if missing:
            raise ResumeError(f"{self.work} lacks {sorted(missing)}; rerun without --resume to start over")
        for path in self.work.iterdir():
            if path.name not in keep:  # written after the last checkpoint: not part of the output
                path.unlink()
        self.parts, self.state = saved["parts"], saved["state"]

    def commit(self, table: pa.Table, state: dict) -> None:
        """Make `table` part of the output and record `state` as the point to resume from."""
        if table.num_rows:
            _durable_write(self._part(self.parts), lambda f: self._write_part(table.cast(self.schema), f))
            self.parts += 1
        record = {"fingerprint": self.fingerprint, "parts": self.parts, "state": state}
        _durable_write(self.work / PROGRESS, lambda f: f.write(json.dumps(record).encode("utf-8")))

    def _write_part(self, table: pa.Table, f) -> None:
        if self.format == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, f)
        elif self.format == "jsonl":
            for row in table.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        else:
            _write_csv(_escape_formulas(table) if self.escape_formulas else table, f, header=False)

    def finish(self) -> Path:
        """Concatenate the committed parts into the output and remove the work folder."""
        parts = [self._part(i) for i in range(self.parts)]
        _durable_write(self.output, lambda f: self._assemble(parts, f))
        shutil.rmtree(self.work, ignore_errors=True)
        return self.output

    def _assemble(self, parts: list[Path], f) -> None:
        if self.format == "parquet":
            self._join_parquet(parts, f)
            return
        if self.format == "csv":
            _write_csv(self.schema.empty_table(), f, header=True)
        for part in parts:  # text parts join byte for byte
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

    def _join_parquet(self, parts: list[Path], f) -> None:
        """Rewrite the parts as one file, regrouping consecutive parts into row groups of at most
        ROW_GROUP_BYTES and ROW_GROUP_ROWS. Memory: the row group being gathered plus the part
        just read; a row group is written (and let go) before the part that would overflow it
        joins, so one part larger than the limits is a row group of its own."""
        import pyarrow.parquet as pq

        with pq.ParquetWriter(f, self.schema) as writer:
            group: list[pa.Table] = []
            rows = size = 0
            for part in parts:
                table = pq.read_table(part, schema=self.schema)
                nbytes = table.get_total_buffer_size()
                if group and (rows + table.num_rows > ROW_GROUP_ROWS or size + nbytes > ROW_GROUP_BYTES):
                    writer.write_table(pa.concat_tables(group), row_group_size=ROW_GROUP_ROWS)
                    group, rows, size = [], 0, 0
                group.append(table)
                rows, size = rows + table.num_rows, size + nbytes
            # An empty run still gets a file with the schema.
            writer.write_table(pa.concat_tables(group) if group else self.schema.empty_table(),
                               row_group_size=ROW_GROUP_ROWS)


def _changed(saved, current: dict) -> str:
    """The fingerprint keys that differ, so the refusal says what changed (`model_weights`: the
    model folder was retrained in place)."""
    saved = saved if isinstance(saved, dict) else {}
    return ", ".join(sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k)))


def _escape_formulas(table: pa.Table) -> pa.Table:
    """`table` with a `'` before every string cell a spreadsheet would run as a formula (see the
    module docstring); other columns, numbers included, are returned as they are."""
    import pyarrow.compute as pc

    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(i)
            escaped = pc.replace_substring_regex(column, pattern=FORMULA_START, replacement="'\\0", max_replacements=1)
            number = pc.fill_null(pc.match_substring_regex(column, PLAIN_NUMBER), False)
            table = table.set_column(i, field, pc.if_else(number, column, escaped))
    return table


def spreadsheet_safe(value):
    """One cell escaped as `_escape_formulas` escapes a column (for CSV written row by row)."""
    if isinstance(value, str) and _FORMULA_START.match(value) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def unescape_formula(value):
    """The cell as it was before the escape: what was scored (readers of scorer CSV use this)."""
    if isinstance(value, str) and value[:1] == "'" and _FORMULA_START.match(value[1:]):
        return value[1:]
    return value


def score_cell(value) -> float | None:
    """A score read back from any output format (a number, or its text in CSV); None when it is
    missing or not a finite number (an error row)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _write_csv(table: pa.Table, f, header: bool) -> None:
    from pyarrow import csv

    csv.write_csv(table, f, csv.WriteOptions(include_header=header, quoting_style="needed"))
