"""Batch scoring of files and archives: the engine behind `kazstance score` and its Python API.

This module owns the run: resolve the inputs, load the shared predictor once, stream records from
`readers`, score them chunk by chunk, and commit each chunk through `writers` with the point to
resume from. It calls the predictor in-process (never over HTTP), so scores are the ones
evaluation and the HTTP service give.

Output: one row per input record (per sentence with `unit="sentence"`): `source`, `record`,
[`sentence`], `id`, [`text`], `label`, `score_<label>` for each of the model's labels (in the
model's order), [`platform` and `platform_score`: the platform the text is about and its
probability, for a model with a platform head], `tokens` and `windows` (the text's length in tokens and the model windows read:
a text longer than the model's window is read whole, in overlapping windows, see
`kazstance.predictor`), [`sentences`, `evidence` for documents], `model`, `error` (null when
scored).
Scores are rounded to 6 places, as the HTTP service returns them. `unit="document"` splits
each record into sentences and applies the HTTP service's rule (`kazstance.documents.aggregate`).

Conservation: every record read becomes exactly one row (or one per sentence), an error row
when it cannot be scored; `Summary` counts them. A chunk is `batch_size * 16` records: the
predictor's length-sorting window, so a chunk is one sort-and-batch pass.

Notebook use:
    from serving.score import score_files
    summary = score_files(["exports/2023.zip"], "scores.parquet", model="kazstance:latest")
    pd.read_parquet(summary.output)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal

from kazstance.modeling import DEFAULT_MODEL
from kazstance.text import split_sentences

from .encodings import check_encoding
from .readers import MAX_EXPANDED_BYTES, MAX_EXPANSION_RATIO, Fields, InputFile, Record, expand_inputs, read_input
from .writers import PartWriter, output_format

if TYPE_CHECKING:
    import pyarrow as pa

    from kazstance.predictor import Prediction, Predictor

Unit = Literal["statement", "sentence", "document"]
UNITS = ("statement", "sentence", "document")
ENGINES = ("local", "ray")
NOT_UTF8_NAMED = 20
CHUNK_CHARS = 4_000_000  # a chunk of long documents is cut early, so memory stays bounded


class ModelLoadError(RuntimeError):
    """The model could not be loaded (not found, unreadable, or the backend is unavailable)."""


@dataclass(frozen=True)
class ScoreOptions:
    """What to read and how to score it; the same for the local and the Ray engine."""

    model: str = DEFAULT_MODEL
    text_field: str = "text"
    id_field: str = "id"
    unit: Unit = "statement"
    batch_size: int = 32
    keep_text: bool = False
    backend: str = "auto"
    threads: int | None = None
    escape_formulas: bool = True  # CSV output only: see serving.writers
    encoding: str | None = None  # None: found per file (see serving.readers)
    tsv_quotes: bool = False
    max_expansion_ratio: float = MAX_EXPANSION_RATIO
    max_expanded_bytes: int = MAX_EXPANDED_BYTES
    keep_fields: tuple[str, ...] = ()  # input fields carried to the output, after `id`

    @property
    def fields(self) -> Fields:
        return Fields(text=self.text_field, id=self.id_field, txt_documents=self.unit == "document",
                      encoding=self.encoding, tsv_quotes=self.tsv_quotes,
                      max_expansion_ratio=self.max_expansion_ratio, max_expanded_bytes=self.max_expanded_bytes,
                      keep=self.keep_fields)

    @property
    def chunk_records(self) -> int:
        return max(self.batch_size * 16, 16)


@dataclass
class Counts:
    """Whole-run counters; saved with every checkpoint, so a resumed run reports the whole run."""

    rows_read: int = 0     # input records, error rows included
    unreadable: int = 0    # rows that stand for a whole file or member that could not be read
    rows_written: int = 0
    scored: int = 0
    errors: int = 0
    encodings: dict[str, int] = field(default_factory=dict)  # text files and members per encoding found
    not_utf8: list[str] = field(default_factory=list)        # "source (encoding)", the first NOT_UTF8_NAMED

    def add(self, table: "pa.Table", records: int, unreadable: int) -> None:
        scored = table.column("error").null_count
        self.rows_read += records
        self.unreadable += unreadable
        self.rows_written += table.num_rows
        self.scored += scored
        self.errors += table.num_rows - scored

    def add_encodings(self, found: Iterable[tuple[str, str]]) -> None:
        """Count (source, encoding) of text files and members just read; name the first few that
        are not UTF-8 (a folder may hold thousands of files: counts say the rest)."""
        for source, encoding in found:
            self.encodings[encoding] = self.encodings.get(encoding, 0) + 1
            if encoding != "utf-8" and len(self.not_utf8) < NOT_UTF8_NAMED:
                self.not_utf8.append(f"{source} ({encoding})")


@dataclass
class Summary(Counts):
    output: Path = Path()
    files: int = 0
    seconds: float = 0.0
    resumed_rows: int = 0  # rows an interrupted run had already written

    @property
    def rows_per_second(self) -> float:
        return (self.rows_written - self.resumed_rows) / self.seconds if self.seconds else 0.0

    @property
    def nothing_read(self) -> bool:
        return self.rows_read == self.unreadable


@dataclass
class Position:
    """Where reading resumes: `record` records into `files[file]`."""

    file: int = 0
    record: int = 0


# ---------------------------------------------------------------------------------------------
# Scoring a chunk of records: shared by the local engine and the Ray actors.


def output_schema(labels: Iterable[str], unit: Unit, keep_text: bool, keep_fields: Iterable[str] = (),
                  platforms: bool = False) -> "pa.Schema":
    """The output's columns; `platforms`: the model has a platform head (`platform`, `platform_score`)."""
    import pyarrow as pa

    cols = [("source", pa.string()), ("record", pa.int64())]
    cols += [("sentence", pa.int32())] if unit == "sentence" else []
    cols += [("id", pa.string())] + [(name, pa.string()) for name in keep_fields]
    cols += [("text", pa.string())] if keep_text else []
    cols += [("label", pa.string())] + [(f"score_{label}", pa.float64()) for label in labels]
    cols += [("platform", pa.string()), ("platform_score", pa.float64())] if platforms else []
    cols += [("tokens", pa.int32()), ("windows", pa.int32())]
    if unit == "document":
        cols += [("sentences", pa.int32())] + ([("evidence", pa.string())] if keep_text else [])
    cols += [("model", pa.string()), ("error", pa.string())]
    return pa.schema(cols)


def score_records(predictor: "Predictor", records: list[Record], unit: Unit, keep_text: bool,
                  keep_fields: tuple[str, ...] = ()) -> tuple["pa.Table", list[int]]:
    """Score a chunk; returns its output table (input order) and, per output row, the index of
    the record it came from (several rows per record with unit="sentence")."""
    import pyarrow as pa

    from kazstance.documents import aggregate, aggregate_platform
    from kazstance.predictor import Prediction

    labels = predictor.labels
    # 1. The texts the model sees: the statement itself, or its sentences.
    units: list[list[str]] = []
    for r in records:
        if r.error is not None:
            units.append([])
        elif unit == "statement":
            units.append([r.text])
        else:
            units.append(split_sentences(r.text))
    flat = [t for texts in units for t in texts]
    predicted, failures = _predict(predictor, flat)

    # 2. One row per record (statement, document) or per sentence.
    schema = output_schema(labels, unit, keep_text, keep_fields, platforms=bool(predictor.platforms))
    rows: dict[str, list] = {name: [] for name in schema.names}
    origin: list[int] = []

    def emit(i: int, r: Record, text=None, prediction: "Prediction | None" = None, error=None, **extra) -> None:
        origin.append(i)
        values = {**dict(zip(keep_fields, r.kept)), "source": r.source, "record": r.record, "id": r.id,
                  "text": text, "model": predictor.name, "error": error, **extra}
        if prediction is not None:
            values.update(label=prediction.label, tokens=prediction.tokens, windows=prediction.windows)
            values.update({f"score_{lab}": prediction.scores[lab] for lab in labels})
            if prediction.platform is not None:
                values.update(platform=prediction.platform, platform_score=prediction.platform_scores[prediction.platform])
        for name in schema.names:
            rows[name].append(values.get(name))

    offset = 0
    for i, (r, texts) in enumerate(zip(records, units)):
        span = range(offset, offset + len(texts))
        offset += len(texts)
        if r.error is not None or not texts:
            emit(i, r, error=r.error or "empty text")
            continue
        predictions = [predicted[j] for j in span]
        failed = [failures[j] for j in span if j in failures]
        kept = r.text if keep_text else None
        if unit == "sentence":
            for k, (j, text, p) in enumerate(zip(span, texts, predictions), start=1):
                emit(i, r, text if keep_text else None, p, failures.get(j), sentence=k)
        elif unit == "statement":
            emit(i, r, kept, predictions[0], failed[0] if failed else None)
        elif failed:
            emit(i, r, kept, error=failed[0], sentences=len(texts))
        else:
            label, scores, evidence = aggregate(predictions, labels)
            platform, platform_scores = aggregate_platform(predictions)
            total = Prediction(label, scores, tokens=_sum(p.tokens for p in predictions),
                               windows=sum(p.windows for p in predictions), platform=platform,
                               platform_scores=platform_scores)
            emit(i, r, kept, total, sentences=len(texts),
                 evidence="\n".join(texts[k] for k in evidence) or None)
    return pa.table(rows, schema=schema), origin


def _predict(predictor: "Predictor", texts: list[str]) -> tuple[list["Prediction | None"], dict[int, str]]:
    """Predictions for all texts (long ones read as several windows); a text that cannot be
    scored becomes one error row instead of taking its chunk down."""
    predicted = predictor.predict_each(texts) if texts else []
    failures = {j: f"scoring failed: {type(p).__name__}: {p}" for j, p in enumerate(predicted) if isinstance(p, Exception)}
    return [None if j in failures else p for j, p in enumerate(predicted)], failures


def _kept(names: Iterable[str]) -> tuple[str, ...]:
    """The fields to carry, checked: a name the output has (or may have) would be ambiguous."""
    names = tuple(dict.fromkeys(names))
    taken = set().union(*(output_schema((), u, True, platforms=True).names for u in UNITS))
    clash = [n for n in names if n in taken or n.startswith("score_")]
    if clash:
        raise ValueError(f"--keep-field {', '.join(clash)}: the output has such a column already; "
                         f"rename the field in the input")
    return names


def _sum(values: Iterable[int | None]) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


# ---------------------------------------------------------------------------------------------
# The run.


def fingerprint(files: list[InputFile], options: ScoreOptions, predictor: "Predictor", output: Path) -> dict:
    """What must not change between an interrupted run and its resumption (batch size and engine
    may: they do not change which rows are written). The model counts by its weights' hash, not
    its name: a folder retrained in place keeps its name. A predictor built by hand has no folder
    to hash, and counts by name only."""
    from kazstance.modeling import content_hash

    csv = output_format(output) == "csv"
    return {"inputs": [[str(f.path), f.size, f.mtime_ns] for f in files], "model": predictor.name,
            "model_weights": content_hash(predictor.path) if predictor.path else None,
            "labels": list(predictor.labels), "backend": predictor.backend_name, "unit": options.unit,
            "text_field": options.text_field, "id_field": options.id_field, "keep_text": options.keep_text,
            "format": output_format(output), "escape_formulas": options.escape_formulas and csv,
            # How the inputs are read decides which rows exist and what they hold.
            "encoding": options.encoding, "tsv_quotes": options.tsv_quotes,
            "max_expansion_ratio": options.max_expansion_ratio, "max_expanded_bytes": options.max_expanded_bytes,
            "keep_fields": list(options.keep_fields)}


def score_files(inputs: Iterable[str | Path], output: str | Path, *, model: str | None = None,
                text_field: str = "text", id_field: str = "id", unit: Unit = "statement", batch_size: int = 32,
                keep_text: bool = False, resume: bool = False, engine: str = "local",
                ray_address: str | None = None, backend: str = "auto", threads: int | None = None,
                predictor: "Predictor | None" = None, progress: bool = False,
                escape_formulas: bool = True, encoding: str | None = None, tsv_quotes: bool = False,
                max_expansion_ratio: float = MAX_EXPANSION_RATIO,
                max_expanded_bytes: int = MAX_EXPANDED_BYTES, keep_fields: Iterable[str] = (),
                progress_file: str | Path | None = None) -> Summary:
    """Score every record of `inputs` (files, folders, archives) into `output` (.parquet, .jsonl
    or .csv); `model` defaults to kazstance:latest. Pass a loaded `predictor` to reuse it across
    calls in a notebook (with engine="ray" the actors load their own copy: pass `model` too, as
    a folder or a concrete version, since each actor resolves `kazstance:latest` for itself).
    `escape_formulas=False` writes CSV cells that start like a spreadsheet formula unchanged
    (see serving.writers). `encoding` forces the input encoding (default: found per file),
    `tsv_quotes` reads TSV quotes as quoting, and the `max_expan*` limits cut off decompression
    bombs (see serving.readers). `keep_fields` copies those input fields (JSON keys or dotted
    paths, CSV/TSV/Parquet columns) into the output as text columns after `id`, e.g. a date and
    an outlet to group the scores by. `progress_file`, when given, is rewritten atomically (a small
    JSON: rows, error rows, input bytes done and total) at the start, after every committed chunk
    and at the end, for a caller in another process (the HTTP jobs, `serving/jobs.py`)."""
    import dataclasses

    from kazstance.modeling import resolve
    from kazstance.predictor import Predictor

    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {unit!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "ray" and predictor is not None and model is None:
        raise ValueError("with engine='ray' each actor loads its own model: pass model= as well as predictor=")
    model = model or DEFAULT_MODEL
    output = Path(output)
    output_format(output)  # fail on an unknown extension before loading anything
    options = ScoreOptions(model=model, text_field=text_field, id_field=id_field, unit=unit,
                           batch_size=batch_size, keep_text=keep_text, backend=backend, threads=threads,
                           escape_formulas=escape_formulas,
                           encoding=check_encoding(encoding) if encoding else None,  # fail before loading
                           tsv_quotes=tsv_quotes, max_expansion_ratio=max_expansion_ratio,
                           max_expanded_bytes=max_expanded_bytes, keep_fields=_kept(keep_fields))
    files = expand_inputs(inputs, exclude=[output])
    if predictor is None:
        _single_interop_thread()
        try:
            ref = resolve(model)
            predictor = Predictor.from_ref(ref, backend=backend, threads=threads, batch_size=batch_size)
        except Exception as err:  # a missing tag, a broken folder, an unknown backend: all "cannot load"
            raise ModelLoadError(f"cannot load model {model!r}: {err}") from err
        # Ray actors load exactly this model: a tag as the version resolved here (another
        # `kazstance:latest` may be registered during the run), a folder as its absolute path.
        options = dataclasses.replace(options, model=str(ref.path) if Path(model).is_dir() else ref.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = PartWriter(output, output_schema(predictor.labels, unit, keep_text, options.keep_fields,
                                              platforms=bool(predictor.platforms)),
                        fingerprint(files, options, predictor, output), resume=resume,
                        escape_formulas=options.escape_formulas)
    saved = writer.state or {}
    start, counts = Position(**saved.get("position", {})), Counts(**saved.get("counts", {}))
    summary = Summary(output=output, files=len(files), resumed_rows=counts.rows_written)

    tracker = _ByteTracker(files)
    display = _Display(progress, tracker.total, tracker.at(start), counts.rows_written)
    reporter = _ProgressFile(Path(progress_file), tracker.total, tracker.at(start)) if progress_file else None

    def commit(table: "pa.Table", position: Position, records: int, unreadable: int, encodings=()) -> None:
        counts.add(table, records, unreadable)
        counts.add_encodings(encodings)  # before the checkpoint, so a resumed run counts each file once
        writer.commit(table, {"position": asdict(position), "counts": asdict(counts)})
        display.update(counts.rows_written, tracker.at(position))
        if reporter:
            reporter.write(counts, tracker.at(position))

    if reporter:
        reporter.write(counts, tracker.at(start))
    began = time.perf_counter()
    with display:
        if engine == "ray":
            from .ray_engine import run_ray

            run_ray(files, options, predictor, start, commit, ray_address=ray_address)
        else:
            run_local(files, options, predictor, start, commit, tracker)
    writer.finish()
    if reporter:
        reporter.write(counts, tracker.total or 0, finished=True)
    for key, value in asdict(counts).items():
        setattr(summary, key, value)
    summary.seconds = time.perf_counter() - began
    return summary


def run_local(files: list[InputFile], options: ScoreOptions, predictor: "Predictor", start: Position,
              commit: Callable, tracker: "_ByteTracker | None" = None) -> None:
    """Read, score and commit chunk by chunk in this process."""
    chunk: list[Record] = []
    chars = 0
    for position, record in _positioned(files, options.fields, start, tracker):
        chunk.append(record)
        chars += len(record.text or "")
        if len(chunk) >= options.chunk_records or chars >= CHUNK_CHARS:
            _commit_chunk(predictor, options, chunk, position, commit)
            chunk, chars = [], 0
    _commit_chunk(predictor, options, chunk, Position(len(files), 0), commit)


def _commit_chunk(predictor, options: ScoreOptions, chunk: list[Record], position: Position, commit: Callable) -> None:
    table, _ = score_records(predictor, chunk, options.unit, options.keep_text, options.keep_fields)
    commit(table, position, len(chunk), sum(r.record is None for r in chunk),
           [(r.source, r.encoding) for r in chunk if r.encoding])


def _positioned(files: list[InputFile], fields: Fields, start: Position,
                tracker: "_ByteTracker | None" = None) -> Iterator[tuple[Position, Record]]:
    """Records from `start` on, each with the position just after it (where a resume would begin).
    Files before `start.file` are not even opened; in that file, the first records are skipped."""
    for index in range(start.file, len(files)):
        skip = start.record if index == start.file else 0
        on_open = tracker.opened if tracker else None
        for n, record in enumerate(read_input(files[index], fields, on_open=on_open)):
            if n >= skip:
                yield Position(index, n + 1), record
        if tracker:
            tracker.closed(index)


def _single_interop_thread() -> None:
    """Inference parallelises inside ops; extra inter-op threads would only compete for the cores."""
    import torch

    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started: keep what is there
        pass


# ---------------------------------------------------------------------------------------------
# Progress: rows per second always; a bar and ETA from the input bytes consumed.


class _ByteTracker:
    """Input bytes consumed at a position: the files before it, plus how far the reader is into
    the open file (compressed bytes, so the ETA holds for archives too)."""

    def __init__(self, files: list[InputFile]):
        self.sizes = [max(f.size, 0) for f in files]
        self.total = sum(self.sizes) or None
        self.handle = None

    def opened(self, handle) -> None:
        self.handle = handle

    def closed(self, index: int) -> None:
        self.handle = None

    def at(self, position: Position) -> int:
        done = sum(self.sizes[: position.file])
        try:
            return done + (self.handle.tell() if self.handle else 0)
        except (ValueError, OSError):  # the handle was just closed
            return done


class _ProgressFile:
    """The run's progress as a small JSON file, replaced atomically (never read half-written):
    whole-run counters, input bytes done and total, and where this run (not the interrupted one
    before it) started, so a reader can work out the rate and an ETA."""

    def __init__(self, path: Path, total_bytes: int | None, start_bytes: int):
        self.path, self.total, self.start_bytes = path, total_bytes, start_bytes
        self.started_at = time.time()

    def write(self, counts: Counts, bytes_done: int, finished: bool = False) -> None:
        import json
        import os

        record = {"rows_read": counts.rows_read, "rows_written": counts.rows_written, "scored": counts.scored,
                  "errors": counts.errors, "bytes_done": bytes_done, "bytes_total": self.total,
                  "run_start_bytes": self.start_bytes, "run_started_at": self.started_at,
                  "updated_at": time.time(), "finished": finished}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, self.path)


class _Display:
    """A rich progress bar with rows per second (and an ETA from the input bytes), or nothing."""

    def __init__(self, enabled: bool, total_bytes: int | None, start_bytes: int, start_rows: int):
        self.enabled, self.total, self.start_bytes, self.start_rows = enabled, total_bytes, start_bytes, start_rows
        self.began = time.perf_counter()

    def __enter__(self) -> "_Display":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.fields[rows]}"),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     console=Console(stderr=True))  # stdout carries the summary
            self.task = self.progress.add_task("score", total=self.total, completed=self.start_bytes, rows="")
            self.progress.start()
        self.began = time.perf_counter()
        return self

    def update(self, rows: int, bytes_done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.began
        rate = (rows - self.start_rows) / elapsed if elapsed > 0 else 0.0
        self.progress.update(self.task, completed=bytes_done, rows=f"{rows:,} rows  {rate:,.1f} rows/s")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()
