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
   simply concatenates again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa

OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
PROGRESS = "progress.json"
ROW_GROUP_ROWS = 64 * 1024  # parts are small; the final Parquet file gets row groups of a useful size


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

    def __init__(self, output: str | Path, schema: pa.Schema, fingerprint: dict, resume: bool = False):
        self.output = Path(output)
        self.format = output_format(self.output)
        self.schema = schema
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
            raise ResumeError(f"{self.output}: the interrupted run used other inputs or options "
                              f"(or the inputs changed since); rerun without --resume to start over")
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
            _write_csv(table, f, header=False)

    def finish(self) -> Path:
        """Concatenate the committed parts into the output and remove the work folder."""
        parts = [self._part(i) for i in range(self.parts)]
        _durable_write(self.output, lambda f: self._assemble(parts, f))
        shutil.rmtree(self.work, ignore_errors=True)
        return self.output

    def _assemble(self, parts: list[Path], f) -> None:
        if self.format != "parquet":
            if self.format == "csv":
                _write_csv(self.schema.empty_table(), f, header=True)
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            return
        import pyarrow.parquet as pq

        # One part at a time, regrouped into large row groups: memory stays at one row group.
        with pq.ParquetWriter(f, self.schema) as writer:
            pending: list[pa.Table] = []
            rows = 0
            for part in parts:
                table = pq.read_table(part, schema=self.schema)
                pending.append(table)
                rows += table.num_rows
                if rows >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    pending, rows = [], 0
            if pending or not parts:
                writer.write_table(pa.concat_tables(pending) if pending else self.schema.empty_table())


def _write_csv(table: pa.Table, f, header: bool) -> None:
    from pyarrow import csv

    csv.write_csv(table, f, csv.WriteOptions(include_header=header, quoting_style="needed"))
