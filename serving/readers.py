"""Streaming readers for the batch scorer: any input an analyst has, turned into `Record`s.

This module owns finding input files and reading them, and nothing else (no model, no output).
Every input yields one `Record` per statement (a JSONL line, a CSV/TSV/Parquet row, a text line,
or a whole text file with `document=True`), in a deterministic order: the paths as given, folders
walked in sorted order, archive members in archive order. A record is either readable (`text` set)
or an error row (`error` set, with the reason); nothing is dropped without a row saying why, so
rows out = rows read. `record` is the 1-based line number (JSONL, text) or data row number (CSV,
TSV, Parquet); it is None on a row that reports a whole file or member (unreadable, unsupported).

Memory is bounded whatever the input size: files, compressed streams and archives are read
incrementally; a line longer than `MAX_LINE_BYTES` or a document longer than `MAX_DOCUMENT_BYTES`
becomes an error row instead of a buffer. Archives (.zip, .tar, .tar.gz, ...) are read member by
member in-stream, never extracted: member names only ever appear in the `source` string
(`archive.zip:inner/name.jsonl`), never as a filesystem path, so `../` or absolute names are harmless.

Not records: blank lines (JSONL, CSV, text), directories, and hidden entries (names starting with
a dot, `__MACOSX/`), which folders and archives routinely carry.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator

from kazstance.text import clean

MAX_LINE_BYTES = 16 * 2**20
MAX_DOCUMENT_BYTES = 16 * 2**20
PARQUET_BATCH_ROWS = 4096
_BOM = b"\xef\xbb\xbf"
# Lone surrogates are how `surrogateescape` marks bytes that were not valid UTF-8.
_SURROGATE = re.compile("[\udc80-\udcff]")

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}

csv.field_size_limit(MAX_LINE_BYTES)  # the default (128 KiB) rejects long posts; this still bounds memory


@dataclass(frozen=True, slots=True)
class Fields:
    """Where the text and id live, and whether a .txt file is one document or one statement a line."""

    text: str = "text"
    id: str = "id"
    txt_documents: bool = False


@dataclass(slots=True)
class Record:
    source: str
    record: int | None
    id: str | None
    text: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class InputFile:
    """A top-level input file; `size` is -1 when the path does not exist or is not a file."""

    path: Path
    size: int
    mtime_ns: int = 0


def expand_inputs(paths: Iterable[str | Path], exclude: Iterable[Path] = ()) -> list[InputFile]:
    """Turn the given paths into files: paths in the order given, folders walked recursively in
    sorted order (hidden entries skipped). A path given twice is read once. `exclude` keeps the
    scorer's own output out of its input when the output is written inside an input folder."""
    skip = {Path(p).resolve() for p in exclude}
    seen: set[Path] = set()
    files: list[InputFile] = []

    def add(path: Path) -> None:
        resolved = path.resolve()
        if resolved in seen or resolved in skip or any(parent in skip for parent in resolved.parents):
            return
        seen.add(resolved)
        try:
            st = path.stat()
            files.append(InputFile(path, st.st_size, st.st_mtime_ns))
        except OSError:
            files.append(InputFile(path, -1))

    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            add(path)
            continue
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(root) / name for name in names if not name.startswith(".")]
        for file in sorted(found, key=lambda p: p.relative_to(path).parts):
            add(file)
    return files


def read_input(file: InputFile, fields: Fields, on_open: Callable[[IO[bytes]], None] | None = None,
               source: str | None = None) -> Iterator[Record]:
    """All records of one top-level file. `on_open` receives the raw file handle, so a caller can
    follow its position (compressed bytes consumed) for a progress bar. `source` names the file in
    the output (default: its path as given)."""
    source = source or str(file.path)
    if file.size < 0:
        yield _error(source, "no such file")
        return

    def opener() -> IO[bytes]:
        raw = open(file.path, "rb")
        if on_open:
            on_open(raw)
        return raw

    yield from _read_stream(opener, file.path.name, source, fields)


def _error(source: str, reason: str, record: int | None = None) -> Record:
    return Record(source=source, record=record, id=None, text=None, error=reason)


def _classify(name: str) -> tuple[str | None, list[str]]:
    """(kind, compression layers outermost first) from a file name; kind None = unsupported."""
    lower = PurePosixPath(name).name.lower()
    if lower.endswith(".zip"):
        return "zip", []
    if lower.endswith(TAR_SUFFIXES):
        # tarfile undoes gzip/bz2/xz itself; zstd it does not know.
        return "tar", [".zst"] if lower.endswith(".tar.zst") else []
    layers: list[str] = []
    while lower.endswith(COMPRESSIONS):
        suffix = lower[lower.rfind("."):]
        layers.insert(0, suffix)
        lower = lower[: -len(suffix)]
    if lower.endswith(".zip") or lower.endswith(TAR_SUFFIXES):
        return ("zip" if lower.endswith(".zip") else "tar"), layers
    return FORMATS.get(lower[lower.rfind("."):] if "." in lower else ""), layers


def _decompress(stream: IO[bytes], layer: str) -> IO[bytes]:
    if layer == ".gz":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if layer == ".bz2":
        return bz2.BZ2File(stream)
    if layer == ".xz":
        return lzma.LZMAFile(stream)
    import zstandard

    # BufferedReader adds the readline() the line readers need; zstd streams are forward-only.
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True))


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return stream.seekable()
    except AttributeError:  # a member of a tar read as a stream asks a stream that cannot say
        return False


def _is_hidden(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return any(p.startswith(".") and p not in (".", "..") for p in parts) or "__MACOSX" in parts


def _read_stream(opener: Callable[[], IO[bytes]], name: str, source: str, fields: Fields) -> Iterator[Record]:
    """Read one file or archive member. Any failure (corrupt compression, bad CRC, truncated
    archive, encrypted member...) becomes an error row for this file or member and reading goes on
    with the next one: one bad member must not cost the rest of an archive."""
    kind, layers = _classify(name)
    if kind is None:
        yield _error(source, f"unsupported file type: {PurePosixPath(name).name!r}")
        return
    try:
        with opener() as stream:
            for layer in layers:
                stream = _decompress(stream, layer)
            yield from _READERS[kind](stream, source, fields)
    except Exception as err:  # noqa: BLE001 - see the docstring: report and go on
        yield _error(source, f"unreadable: {type(err).__name__}: {err}")


def _read_zip(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    if not _seekable(stream):
        yield _error(source, "unreadable: a zip inside a compressed stream or a tar cannot be read in-stream")
        return
    with zipfile.ZipFile(stream) as archive:
        for info in archive.infolist():
            if info.is_dir() or _is_hidden(info.filename):
                continue
            yield from _read_stream(lambda info=info: archive.open(info), info.filename,
                                    f"{source}:{info.filename}", fields)


def _read_tar(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    # Random-access mode where the stream allows it (members are then seekable, so Parquet members
    # work); forward-only stream mode otherwise (tar inside tar, .tar.zst).
    mode = "r:*" if _seekable(stream) else "r|*"
    with tarfile.open(fileobj=stream, mode=mode) as archive:
        for member in archive:
            if member.isdir() or _is_hidden(member.name):
                continue
            member_source = f"{source}:{member.name}"
            if not member.isfile():
                yield _error(member_source, "not a regular file (link or device): not read")
                continue
            yield from _read_stream(lambda member=member: archive.extractfile(member), member.name,
                                    member_source, fields)


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, raw line) pairs; None in place of a line over MAX_LINE_BYTES, which is
    drained in pieces rather than held."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        if len(line) > MAX_LINE_BYTES:
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_LINE_BYTES)
            yield number, None
            continue
        yield number, line


def _too_long(source: str, number: int) -> Record:
    return _error(source, f"line longer than {MAX_LINE_BYTES // 2**20} MiB", number)


def _as_id(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return json.dumps(value, ensure_ascii=False)


def _make(source: str, number: int, text: object, record_id: object, fields: Fields) -> Record:
    """A record, or the error row explaining why its text cannot be scored."""
    record = Record(source=source, record=number, id=_as_id(record_id), text=None)
    if text is None:
        record.error = f"missing text field {fields.text!r}"
    elif not isinstance(text, str):
        record.error = f"text field {fields.text!r} is not a string"
    elif not clean(text):  # the predictor refuses empty text, so catch it here, per row
        record.error = "empty text"
    else:
        record.text = text
    return record


def _lookup(obj: dict, key: str) -> object:
    """obj[key], or a dotted path into nested objects ("meta.text") when no such key exists."""
    if key in obj or "." not in key:
        return obj.get(key)
    for part in key.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _read_jsonl(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    first = True
    for number, line in _lines(stream):
        if line is None:
            yield _too_long(source, number)
            continue
        if not line.strip():
            continue
        if first and line.lstrip().startswith(b"[") and not line.rstrip().endswith(b"]"):
            # A pretty-printed JSON array would give an error row per line; say it once instead.
            yield _error(source, "a JSON array, not JSON Lines: convert it first (jq -c '.[]')")
            return
        first = False
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield _error(source, f"invalid UTF-8 at byte {err.start}", number)
            continue
        except json.JSONDecodeError as err:
            yield _error(source, f"malformed JSON: {err}", number)
            continue
        if not isinstance(obj, dict):
            yield _error(source, f"malformed JSON: a line must be an object, not {type(obj).__name__}", number)
            continue
        yield _make(source, number, _lookup(obj, fields.text), _lookup(obj, fields.id), fields)


def _read_delimited(stream: IO[bytes], source: str, fields: Fields, delimiter: str) -> Iterator[Record]:
    too_long = False

    def text_lines() -> Iterator[str]:
        # Decoding with surrogateescape defers UTF-8 errors to the row that holds them; an
        # over-long line becomes a NUL line, which the csv module rejects as a malformed row.
        nonlocal too_long
        for _, line in _lines(stream):
            if line is None:
                too_long = True
                yield "\0\n"
            else:
                yield line.decode("utf-8", errors="surrogateescape")

    reader = csv.reader(text_lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        yield _error(source, f"malformed CSV header: {err}")
        return
    text_col = header.index(fields.text) if fields.text in header else None
    id_col = header.index(fields.id) if fields.id in header else None
    number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            number += 1
            reason = f"line longer than {MAX_LINE_BYTES // 2**20} MiB" if too_long else f"malformed CSV row: {err}"
            too_long = False
            yield _error(source, reason, number)
            continue
        if not row:
            continue
        number += 1
        if len(row) != len(header):
            yield _error(source, f"malformed CSV row: {len(row)} fields, the header has {len(header)}", number)
        elif any(_SURROGATE.search(field) for field in row):
            yield _error(source, "invalid UTF-8", number)
        else:
            yield _make(source, number, row[text_col] if text_col is not None else None,
                        row[id_col] if id_col is not None else None, fields)


def _read_csv(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    return _read_delimited(stream, source, fields, ",")


def _read_tsv(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    return _read_delimited(stream, source, fields, "\t")


def _read_parquet(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    import pyarrow.parquet as pq

    if not _seekable(stream):
        yield _error(source, "unreadable: Parquet needs random access, which this compressed stream or tar does not give")
        return
    parquet = pq.ParquetFile(stream)
    names = parquet.schema_arrow.names
    columns = [c for c in dict.fromkeys((fields.text, fields.id)) if c in names]
    number = 0
    if not columns:  # still one (error) row per Parquet row, so nothing vanishes
        for group in range(parquet.num_row_groups):
            for _ in range(parquet.metadata.row_group(group).num_rows):
                number += 1
                yield _make(source, number, None, None, fields)
        return
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        texts = batch.column(fields.text).to_pylist() if fields.text in names else [None] * batch.num_rows
        ids = batch.column(fields.id).to_pylist() if fields.id in names else [None] * batch.num_rows
        for text, record_id in zip(texts, ids):
            number += 1
            yield _make(source, number, text, record_id, fields)


def _read_txt(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    if fields.txt_documents:
        data = stream.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            yield _error(source, f"document larger than {MAX_DOCUMENT_BYTES // 2**20} MiB", 1)
            return
        try:
            yield _make(source, 1, data.removeprefix(_BOM).decode("utf-8"), None, fields)
        except UnicodeDecodeError as err:
            yield _error(source, f"invalid UTF-8 at byte {err.start}", 1)
        return
    for number, line in _lines(stream):
        if line is None:
            yield _too_long(source, number)
        elif line.strip():
            try:
                yield _make(source, number, line.rstrip(b"\r\n").decode("utf-8"), None, fields)
            except UnicodeDecodeError as err:
                yield _error(source, f"invalid UTF-8 at byte {err.start}", number)


_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_tsv, "parquet": _read_parquet,
            "txt": _read_txt, "zip": _read_zip, "tar": _read_tar}
