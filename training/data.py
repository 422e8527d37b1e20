"""Reading labelled files (JSONL, CSV, Parquet) with errors that name the file and the row.

Training, evaluation and `kazstance data check` all read through `read_records`, so a user's
file that evaluates also trains. Rows are 1-based: the line number for JSONL, the data row
(header excluded) for CSV and Parquet.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Iterator

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


class DataError(ValueError):
    """A labelled file that cannot be used; the message names file, row and problem."""


def iter_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (row number, record) from a JSONL, CSV/TSV or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{n}: broken JSON line ({err.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
                yield n, record
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for n, record in enumerate(reader, 1):
                if None in record:
                    raise DataError(f"{path}:{n}: more fields than the header has")
                yield n, record
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                n += 1
                yield n, record
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUFFIXES)}")


def read_labelled(path: Path, labels: tuple[str, ...], text_field: str = "text",
                  label_field: str = "label") -> list[dict]:
    """Read a labelled file; every row must have a non-empty text and a known label."""
    records = []
    for n, record in iter_rows(path):
        for field in (text_field, label_field):
            if field not in record:
                raise DataError(f"{path}:{n}: missing column {field!r}")
        text = record[text_field]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}:{n}: empty or non-text {text_field!r}")
        if record[label_field] not in labels:
            raise DataError(f"{path}:{n}: label {record[label_field]!r} is not one of {', '.join(labels)}")
        records.append(record)
    if not records:
        raise DataError(f"{path}: the file has no rows")
    return records


def fingerprint(paths: list[Path]) -> str:
    """sha256 over the data files' bytes, in the given order: ties a model to its exact data."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()
