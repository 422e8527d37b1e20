"""Streaming readers for the batch scorer: any input an analyst has, turned into `Record`s.

This module owns finding input files and reading them, and nothing else (no model, no output).
Every input yields one `Record` per statement (a JSONL line, a CSV/TSV/Parquet row, a text line,
or a whole text file with `document=True`), in a deterministic order: the paths as given, folders
walked in sorted order, archive members in archive order. A record is either readable (`text` set)
or an error row (`error` set, with the reason); nothing is dropped without a row saying why, so
rows out = rows read. `record` is the 1-based line number (JSONL, text) or data row number (CSV,
TSV, Parquet); it is None on a row that reports a whole file or member (unreadable, unsupported).
A data problem never ends a run: whatever goes wrong in a line, row, member or file becomes an
error row for that line, row, member or file, and reading goes on.

Folders: walked depth first in name order; symbolic links (to files and folders) are followed,
and a folder met again inside itself (a link loop) or that cannot be listed is an error row.
Only regular files are opened: a FIFO, socket or device is an error row (opening a FIFO blocks).

Encodings (JSONL, CSV, TSV, .txt; Parquet carries its own) are found per file or member, or
forced, by `serving.encodings`, which hands the readers UTF-8. Bytes the encoding cannot decode
make their line an error row. The first record of each text file or member carries the encoding
it was read in.

Unicode that cannot be written (unpaired surrogates: JSON escapes like "\\udcd0", undecodable
bytes in file or member names) is escaped in ids and sources with backslashes ("\\udcd0"), so they
stay visible and distinct; in texts it becomes U+FFFD and the text is scored, as the model's own
normalisation (`kazstance.text.clean`) would do. A text holding NUL characters is an error row
(binary data, or UTF-16 without a byte-order mark).

Memory is bounded whatever the input size: files, compressed streams and archives are read
incrementally (tar headers are dropped as read; Parquet is read in batches through a bounded
buffer, so what is held is a page, never a whole row group); a line longer than `MAX_LINE_BYTES` or a document longer than `MAX_DOCUMENT_BYTES`
becomes an error row instead of a buffer, and a quoted CSV field may span at most
`MAX_RECORD_LINES` lines. Archives (.zip, .tar, .tar.gz, ...) are read member by member
in-stream, never extracted: member names only ever appear in the `source` string
(`archive.zip:inner/name.jsonl`), never as a filesystem path, so `../` or absolute names are harmless.

Decompression bombs: a compressed file, tar archive or zip member is cut off (an error row; the
rows read before stay) once its output passes both `max_expanded_bytes` and `max_expansion_ratio`
times the compressed bytes it came from; a top-level input whose decompressed bytes together pass
both limits against its size on disk (nested archives) is cut off there and the rest of it is
not read.

Not records: blank lines (JSONL, CSV, text), empty files, directories, and hidden entries (names
starting with a dot, `__MACOSX/`), which folders and archives routinely carry.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import os
import re
import stat
import tarfile
import zipfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator

from kazstance.text import clean

from .encodings import BLOCK_BYTES, text_stream

MAX_LINE_BYTES = 16 * 2**20
MAX_DOCUMENT_BYTES = 16 * 2**20
# A legitimate quoted field (a long post with paragraphs) spans tens of lines; an unclosed quote
# would otherwise swallow the rest of the file. Bounds what a malformed record holds and re-reads.
MAX_RECORD_LINES = 1000
PARQUET_BATCH_ROWS = 4096
PARQUET_BUFFER_BYTES = 2**20  # read column chunks through this buffer, not whole row groups at once
# Real archives never reach both limits at once: text compresses 3-10x (gzip) and repetitive JSON
# up to ~30-50x (xz, zstd -19), Parquet barely; 200x is well above that, and below 1 GiB no stream
# is cut whatever its ratio. Bombs expand 1,000x (deflate) to 1,000,000x (bzip2) and are stopped
# after at most 1 GiB of output. Both are raised with --max-expansion-ratio / --max-expanded-bytes.
MAX_EXPANSION_RATIO = 200.0
MAX_EXPANDED_BYTES = 2**30
_BOM = codecs.BOM_UTF8
# Lone surrogates are how `surrogateescape` marks bytes that were not valid UTF-8.
_SURROGATE = re.compile("[\udc80-\udcff]")
_ANY_SURROGATE = re.compile("[\ud800-\udfff]")
# The first line of a pretty-printed JSON array: "[" alone, or "[" and the first object or string.
_JSON_ARRAY_START = re.compile(rb'\s*\[\s*($|[{"].*[^\]\s]\s*$)')

COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
TAR_SUFFIXES = {".tar": None, ".tar.gz": ".gz", ".tgz": ".gz", ".tar.bz2": ".bz2", ".tbz2": ".bz2",
                ".tar.xz": ".xz", ".txz": ".xz", ".tar.zst": ".zst"}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet", ".txt": "txt"}

csv.field_size_limit(MAX_LINE_BYTES)  # the default (128 KiB) rejects long posts; this still bounds memory


@dataclass(frozen=True, slots=True)
class Fields:
    """How to read: where the text and id live, whether a .txt file is one document or one
    statement a line, a forced encoding (None: found per file), whether TSV quotes are quoting
    (off: a TSV field is taken as it is, quotes included), and the decompression limits."""

    text: str = "text"
    id: str = "id"
    txt_documents: bool = False
    encoding: str | None = None
    tsv_quotes: bool = False
    max_expansion_ratio: float = MAX_EXPANSION_RATIO
    max_expanded_bytes: int = MAX_EXPANDED_BYTES
    keep: tuple[str, ...] = ()  # input fields carried to the output (`--keep-field`), as strings


@dataclass(slots=True)
class Record:
    source: str
    record: int | None
    id: str | None
    text: str | None
    error: str | None = None
    encoding: str | None = None  # on the first record of each text file or member: what it was read in
    kept: tuple[str | None, ...] = ()  # the `Fields.keep` values, in that order (empty on error rows)


@dataclass(frozen=True, slots=True)
class InputFile:
    """A top-level input file; `size` is -1 when the path does not exist or is not a file."""

    path: Path
    size: int
    mtime_ns: int = 0


# Finding the files.


def expand_inputs(paths: Iterable[str | Path], exclude: Iterable[Path] = ()) -> list[InputFile]:
    """Turn the given paths into files: paths in the order given, folders walked recursively in
    sorted order (hidden entries skipped, symbolic links followed). A file reached twice (given
    twice, or through a link) is read once. `exclude` keeps the scorer's own output out of its
    input when the output is written inside an input folder."""
    skip = {Path(p).resolve() for p in exclude}
    seen: set[Path] = set()
    files: list[InputFile] = []

    def add(path: Path) -> None:
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):  # a loop of file links: read_input reports it
            resolved = Path(os.path.abspath(path))
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
        for found in _walk(path) if path.is_dir() else [path]:
            add(found)
    return files


def _walk(root: Path) -> Iterator[Path]:
    """What to read under `root`: depth first in name order (the order of sorted relative paths),
    hidden entries skipped, links followed. A folder is entered once; one met again inside itself
    (a link loop) or that cannot be listed is yielded itself, so that reading it gives an error row
    rather than endless recursion or a silent gap. Iterative: a deep tree cannot overflow the stack."""
    walked: set[tuple[int, int]] = set()
    pending: list[tuple[Path, frozenset]] = [(root, frozenset())]
    while pending:
        path, ancestors = pending.pop()
        try:
            st = os.stat(path)  # follows links
        except OSError:
            yield path  # a broken link or a loop of file links
            continue
        if not stat.S_ISDIR(st.st_mode):
            yield path
            continue
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            yield path
            continue
        if key in walked:  # a second link to a folder already read: its files are in already
            continue
        walked.add(key)
        try:
            names = sorted(os.listdir(path))
        except OSError:
            yield path
            continue
        inside = ancestors | {key}
        pending += [(path / name, inside) for name in reversed(names) if not name.startswith(".")]


# ---------------------------------------------------------------------------------------------
# Reading one file: checks, compression layers, archives.


def read_input(file: InputFile, fields: Fields, on_open: Callable[[IO[bytes]], None] | None = None,
               source: str | None = None) -> Iterator[Record]:
    """All records of one top-level file. `on_open` receives the raw file handle, so a caller can
    follow its position (compressed bytes consumed) for a progress bar. `source` names the file in
    the output (default: its path as given)."""
    source = _escaped(source or str(file.path))
    reason = _not_readable(file.path)
    if reason:
        yield _error(source, reason)
        return

    def opener() -> IO[bytes]:
        raw = open(file.path, "rb")
        if on_open:
            on_open(raw)
        return raw

    budget = _Budget(fields.max_expansion_ratio, fields.max_expanded_bytes, max(file.size, 0), source)
    yield from _read_stream(opener, file.path.name, source, fields, budget)


def _not_readable(path: Path) -> str | None:
    """Why `path` must not be opened, or None. Only regular files are: opening a FIFO blocks until
    a writer comes, and a device or socket is no data file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    except OSError as err:  # a loop of links (ELOOP), no permission on the folder...
        return f"unreadable: {err.strerror}"
    if stat.S_ISDIR(mode):  # expand_inputs hands over a folder only when it cannot walk it
        try:
            os.listdir(path)
        except OSError as err:
            return f"unreadable folder: {err.strerror}"
        return "symbolic link loop: this folder contains itself; its files are read once, under their first path"
    if stat.S_ISREG(mode):
        return None
    kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
    return f"not a regular file ({kind}): not read"


def _error(source: str, reason: str, record: int | None = None) -> Record:
    return Record(source=source, record=record, id=None, text=None, error=_escaped(reason))


def _escaped(value: str) -> str:
    """`value`, writable as UTF-8: unpaired surrogates become visible backslash escapes."""
    if _ANY_SURROGATE.search(value):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _classify(name: str) -> tuple[str | None, list[str]]:
    """(kind, compression layers outermost first) from a file name; kind None = unsupported."""
    lower = PurePosixPath(name).name.lower()
    layers: list[str] = []
    while True:
        if lower.endswith(".zip"):
            return "zip", layers
        tar = next((s for s in TAR_SUFFIXES if lower.endswith(s)), None)
        if tar:
            # We undo the tar's compression ourselves (not tarfile) so that it is bounded too.
            return "tar", layers + ([TAR_SUFFIXES[tar]] if TAR_SUFFIXES[tar] else [])
        if not lower.endswith(COMPRESSIONS):
            break
        suffix = lower[lower.rfind("."):]
        layers.append(suffix)  # the last suffix is the outermost layer
        lower = lower[: -len(suffix)]
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


class _CutOff(Exception):
    """A stream expanded past the limits: the reason for the error row of `source`, the file or
    member whose stream it is (an archive's, when a member is being read when the archive's own
    stream passes the limits)."""

    def __init__(self, source: str, reason: str):
        super().__init__(reason)
        self.source = source


@dataclass
class _Budget:
    """The decompression limits, and the decompressed bytes of one whole top-level input against
    its size on disk: nested archives (zips of zips of gzips) can each stay under the limits and
    still add up to a bomb."""

    ratio: float
    limit: int
    size: int
    source: str
    out: int = 0

    def over(self, out: int, compressed: int) -> bool:
        return out > self.limit and out > self.ratio * max(compressed, 1)

    def limits(self) -> str:
        return f"{self.limit:,} bytes and {self.ratio:g}x"


class _Limited(io.RawIOBase):
    """A decompressed stream that raises `_CutOff` once its output passes both limits against the
    compressed bytes consumed (`compressed()`), or the whole input's does against its size. Seeks
    pass through (zip and tar members, Parquet need them); the output counted is the furthest
    offset reached, which decompression had to produce."""

    def __init__(self, inner: IO[bytes], compressed: Callable[[], int], budget: _Budget, name: str):
        self.inner, self.compressed, self.budget, self.name = inner, compressed, budget, name
        self.pos = self.reached = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # gzip, bz2 and lzma streams seek backwards by decompressing again from the start: a
        # Parquet file inside one is read in a few passes, each within the limits.
        return _seekable(self.inner)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = self.inner.seek(offset, whence)
        self._count()
        return self.pos

    def readinto(self, buffer) -> int:
        data = self.inner.read1(len(buffer))  # one step: what came before a failure is kept
        n = len(data)
        buffer[:n] = data
        self.pos += n
        self._count()
        return n

    def close(self) -> None:
        self.inner.close()
        super().close()

    def _count(self) -> None:
        if self.pos <= self.reached:
            return
        self.budget.out += self.pos - self.reached
        self.reached = self.pos
        hint = "raise --max-expanded-bytes / --max-expansion-ratio if this is real data"
        if self.budget.over(self.reached, self.compressed()):
            raise _CutOff(self.name, f"cut off: {self.name} expanded past {self.budget.limits()} its compressed "
                                     f"size (a decompression bomb?); rows before stay; {hint}")
        if self.budget.over(self.budget.out, self.budget.size):
            source = self.budget.source
            raise _CutOff(source, f"cut off: {source} expanded past {self.budget.limits()} its size in all "
                                  f"(a decompression bomb?); the rest of it is not read; {hint}")


def _tell(stream: IO[bytes], default: int) -> int:
    try:
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return default


def _expand(stream: IO[bytes], layers: list[str], source: str, budget: _Budget) -> IO[bytes]:
    """`stream` with its compression layers undone, bounded by the decompression limits."""
    if not layers:
        return stream
    raw = stream
    for layer in layers:
        stream = _decompress(stream, layer)
    return io.BufferedReader(_Limited(stream, lambda: _tell(raw, budget.size), budget, source), BLOCK_BYTES)


def _read_stream(opener: Callable[[], IO[bytes]], name: str, source: str, fields: Fields,
                 budget: _Budget) -> Iterator[Record]:
    """Read one file or archive member. Any failure (corrupt compression, bad CRC, truncated
    archive, encrypted member, a decompression bomb...) becomes an error row for this file or member
    and reading goes on with the next one: one bad member must not cost the rest of an archive."""
    kind, layers = _classify(name)
    if kind is None:
        yield _error(source, f"unsupported file type: {PurePosixPath(name).name!r}")
        return
    try:
        with opener() as stream:
            stream = _expand(stream, layers, source, budget)
            if kind in _TEXT_READERS:
                stream, encoding = text_stream(stream, fields.encoding)
                yield from _tagged(_TEXT_READERS[kind](stream, source, fields, encoding), encoding)
            elif kind == "parquet":
                yield from _read_parquet(stream, source, fields)
            else:
                yield from _ARCHIVE_READERS[kind](stream, source, fields, budget)
    except _CutOff as err:
        if err.source != source:  # an enclosing archive's stream: reported once, by the archive
            raise
        yield _error(source, str(err))
    except Exception as err:  # noqa: BLE001 - see the docstring: report and go on
        yield _error(source, f"unreadable: {type(err).__name__}: {err}")


def _read_zip(stream: IO[bytes], source: str, fields: Fields, budget: _Budget) -> Iterator[Record]:
    if not _seekable(stream):
        yield _error(source, "unreadable: a zip inside a compressed stream or a tar cannot be read in-stream")
        return
    with zipfile.ZipFile(stream) as archive:
        for info in archive.infolist():
            if info.is_dir() or _is_hidden(info.filename):
                continue
            member = f"{source}:{_escaped(info.filename)}"

            def opener(info=info, member=member) -> IO[bytes]:
                # A member is a compressed stream of its own (deflate, bzip2, lzma): bound it too.
                limited = _Limited(archive.open(info), lambda: info.compress_size, budget, member)
                return io.BufferedReader(limited, BLOCK_BYTES)

            yield from _read_stream(opener, info.filename, member, fields, budget)


def _read_tar(stream: IO[bytes], source: str, fields: Fields, budget: _Budget) -> Iterator[Record]:
    # Random-access mode where the stream allows it (members are then seekable, so Parquet members
    # work); forward-only stream mode otherwise (tar inside tar, .tar.zst). No compression here:
    # _expand has undone it.
    mode = "r:" if _seekable(stream) else "r|"
    with tarfile.open(fileobj=stream, mode=mode) as archive:
        while (member := archive.next()) is not None:
            # tarfile keeps every header it reads (archive.members); we never look back, and a
            # tar of millions of small files would otherwise grow without bound.
            archive.members.clear()
            if member.isdir() or _is_hidden(member.name):
                continue
            member_source = f"{source}:{_escaped(member.name)}"
            if not member.isfile():
                yield _error(member_source, "not a regular file (link or device): not read")
                continue
            yield from _read_stream(lambda member=member: archive.extractfile(member), member.name,
                                    member_source, fields, budget)


def _tagged(records: Iterator[Record], encoding: str) -> Iterator[Record]:
    """The records, the first carrying the encoding they were read in (for the run summary)."""
    for record in records:
        record.encoding = encoding
        yield record
        break
    yield from records


def _invalid(encoding: str, err: UnicodeDecodeError | None = None) -> str:
    """The error for bytes the file's encoding cannot decode. Byte offsets only for UTF-8: a
    transcoded line's offsets are not the file's."""
    if encoding != "utf-8":
        return f"invalid {encoding}"
    return f"invalid UTF-8 at byte {err.start}" if err else "invalid UTF-8"


# ---------------------------------------------------------------------------------------------
# Records.


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
    return _error(source, _too_long_reason(), number)


def _too_long_reason() -> str:
    return f"line longer than {_size(MAX_LINE_BYTES)}"


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit:,} bytes"


def _as_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str)  # default: dates, decimals from Parquet
    return _escaped(value) or None


def _as_text(value: object) -> str | None:
    """A kept field's value as text: dates and times in ISO 8601 (Parquet gives date objects),
    other non-strings as JSON."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return _as_id(value)


def _make(source: str, number: int, text: object, record_id: object, fields: Fields,
          kept: Iterable[object] = ()) -> Record:
    """A record, or the error row explaining why its text cannot be scored. `kept`: the values of
    `fields.keep` (strings as they are, numbers and objects as JSON, absent ones None)."""
    record = Record(source=source, record=number, id=_as_id(record_id), text=None,
                    kept=tuple(_as_text(v) for v in kept) or (None,) * len(fields.keep))
    if text is None:
        record.error = f"missing text field {fields.text!r}"
    elif not isinstance(text, str):
        record.error = f"text field {fields.text!r} is not a string"
    elif len(text) > MAX_DOCUMENT_BYTES:  # a Parquet cell or JSON string has no line limit of its own
        record.error = f"text longer than {MAX_DOCUMENT_BYTES:,} characters"
    elif "\0" in text:
        record.error = "text contains NUL characters (binary data, or UTF-16 without a byte-order mark?)"
    else:
        text = _ANY_SURROGATE.sub("\ufffd", text)  # what clean() gives the model anyway; now writable
        if not clean(text):  # the predictor refuses empty text, so catch it here, per row
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


def _read_jsonl(stream: IO[bytes], source: str, fields: Fields, encoding: str) -> Iterator[Record]:
    first = True
    for number, line in _lines(stream):
        if line is None:
            yield _too_long(source, number)
            continue
        if not line.strip():
            continue
        if first and _JSON_ARRAY_START.match(line):
            # A pretty-printed JSON array would give an error row per line; say it once instead.
            yield _error(source, "a JSON array, not JSON Lines: convert it first (jq -c '.[]')")
            return
        first = False
        yield _json_record(line, number, source, fields, encoding)


def _json_record(line: bytes, number: int, source: str, fields: Fields, encoding: str) -> Record:
    """One JSON line's record. Any failure is this line's error row: beside malformed JSON, the
    parser raises RecursionError (deep nesting) and ValueError (an integer of 5,000 digits)."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        return _error(source, _invalid(encoding, err), number)
    except json.JSONDecodeError as err:
        return _error(source, f"malformed JSON: {err}", number)
    except (RecursionError, ValueError) as err:
        return _error(source, f"malformed JSON: {type(err).__name__}: {err}", number)
    if not isinstance(obj, dict):
        return _error(source, f"malformed JSON: a line must be an object, not {type(obj).__name__}", number)
    try:
        return _make(source, number, _lookup(obj, fields.text), _lookup(obj, fields.id), fields,
                     [_lookup(obj, name) for name in fields.keep])
    except (RecursionError, ValueError) as err:  # an id nested too deep to write back as JSON
        return _error(source, f"unusable JSON: {type(err).__name__}: {err}", number)


class _RecordTooLong(Exception):
    """A quoted field ran past MAX_RECORD_LINES lines or MAX_LINE_BYTES characters."""


class _LineTooLong(Exception):
    """A line over MAX_LINE_BYTES."""


class _RecordLines:
    """The lines the csv module parses, remembering those of the record being parsed so that a
    malformed multi-line record (a stray quote) can give all but its first line back, to be parsed
    again as records of their own: a broken quote costs one row, not the rest of the file. What a
    record may span is capped, which bounds both what is held and what is parsed twice."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None]]):
        self.lines = lines
        self.given_back: deque[str | None] = deque()
        self.taken: list[str | None] = []
        self.chars = 0

    def __iter__(self) -> "_RecordLines":
        return self

    def __next__(self) -> str:
        if len(self.taken) >= MAX_RECORD_LINES or self.chars > MAX_LINE_BYTES:
            raise _RecordTooLong
        line = self.given_back.popleft() if self.given_back else self._read()
        self.taken.append(line)
        if line is None:
            raise _LineTooLong
        self.chars += len(line)
        return line

    def _read(self) -> str | None:
        _, raw = next(self.lines)  # StopIteration: the end of the input, for the csv reader too
        # surrogateescape defers UTF-8 errors to the row that holds them.
        return None if raw is None else raw.decode("utf-8", errors="surrogateescape")

    def new_record(self) -> None:
        self.taken, self.chars = [], 0

    def give_back(self) -> None:
        """All lines of the record but its first, to be read again."""
        self.given_back.extendleft(reversed(self.taken[1:]))


def _read_delimited(stream: IO[bytes], source: str, fields: Fields, encoding: str, delimiter: str,
                    quoting: bool) -> Iterator[Record]:
    lines = _RecordLines(_lines(stream))
    reader = csv.reader(lines, delimiter=delimiter, strict=True,
                        quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    header: list[str] | None = None
    number = 0
    while True:
        lines.new_record()
        try:
            row = next(reader)
            reason = None
        except StopIteration:
            return
        except (csv.Error, _RecordTooLong, _LineTooLong) as err:
            row, reason = None, _row_error(err, len(lines.taken))
        if row == []:  # a blank line
            continue
        if header is None:
            if reason:
                yield _error(source, reason.replace("malformed CSV row", "malformed CSV header", 1))
                return
            header = row
            text_col = header.index(fields.text) if fields.text in header else None
            id_col = header.index(fields.id) if fields.id in header else None
            kept_cols = [header.index(name) if name in header else None for name in fields.keep]
            continue
        number += 1
        if reason:
            lines.give_back()  # a broken quote: only its first line is lost; the next ones are records again
            yield _error(source, reason, number)
        elif len(row) != len(header):  # parsed as one record: it is one error row, lines and all
            yield _error(source, f"malformed CSV row: {len(row)} fields, the header has {len(header)}", number)
        elif any(_SURROGATE.search(field) for field in row):
            yield _error(source, _invalid(encoding), number)
        else:
            yield _make(source, number, row[text_col] if text_col is not None else None,
                        row[id_col] if id_col is not None else None, fields,
                        [row[c] if c is not None else None for c in kept_cols])


def _row_error(err: Exception, lines_taken: int) -> str:
    if isinstance(err, _LineTooLong) and lines_taken == 1:
        return _too_long_reason()
    if isinstance(err, (_RecordTooLong, _LineTooLong)):
        return f"malformed CSV row: a quoted field not closed within {MAX_RECORD_LINES} lines or the line limit"
    return f"malformed CSV row: {err}"


def _read_csv(stream: IO[bytes], source: str, fields: Fields, encoding: str) -> Iterator[Record]:
    return _read_delimited(stream, source, fields, encoding, ",", quoting=True)


def _read_tsv(stream: IO[bytes], source: str, fields: Fields, encoding: str) -> Iterator[Record]:
    # TSV has no quoting as written by most tools: `"Нет" - сказал он` is a field, quotes included.
    return _read_delimited(stream, source, fields, encoding, "\t", quoting=fields.tsv_quotes)


def _read_parquet(stream: IO[bytes], source: str, fields: Fields) -> Iterator[Record]:
    import pyarrow.parquet as pq

    if not _seekable(stream):
        yield _error(source, "unreadable: Parquet needs random access, which this compressed stream or tar does not give")
        return
    # A buffered, unprefetched read: a whole row group (which can be gigabytes) is never loaded.
    parquet = pq.ParquetFile(stream, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
    names = parquet.schema_arrow.names
    columns = [c for c in dict.fromkeys((fields.text, fields.id, *fields.keep)) if c in names]
    number = 0
    if not columns:  # still one (error) row per Parquet row, so nothing vanishes
        for group in range(parquet.num_row_groups):
            for _ in range(parquet.metadata.row_group(group).num_rows):
                number += 1
                yield _make(source, number, None, None, fields)
        return
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        def column(name: str) -> list:
            return batch.column(name).to_pylist() if name in names else [None] * batch.num_rows

        kept = list(zip(*(column(name) for name in fields.keep))) or [()] * batch.num_rows
        for text, record_id, values in zip(column(fields.text), column(fields.id), kept):
            number += 1
            yield _make(source, number, text, record_id, fields, values)


def _read_txt(stream: IO[bytes], source: str, fields: Fields, encoding: str) -> Iterator[Record]:
    if fields.txt_documents:
        data = stream.read(MAX_DOCUMENT_BYTES + 1)
        if len(data) > MAX_DOCUMENT_BYTES:
            yield _error(source, f"document larger than {_size(MAX_DOCUMENT_BYTES)}", 1)
            return
        try:
            yield _make(source, 1, data.removeprefix(_BOM).decode("utf-8"), None, fields)
        except UnicodeDecodeError as err:
            yield _error(source, _invalid(encoding, err), 1)
        return
    for number, line in _lines(stream):
        if line is None:
            yield _too_long(source, number)
        elif line.strip():
            try:
                yield _make(source, number, line.rstrip(b"\r\n").decode("utf-8"), None, fields)
            except UnicodeDecodeError as err:
                yield _error(source, _invalid(encoding, err), number)


_TEXT_READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "tsv": _read_tsv, "txt": _read_txt}
_ARCHIVE_READERS = {"zip": _read_zip, "tar": _read_tar}
