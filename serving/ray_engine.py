"""Scale-out on Ray Data: the same readers, the same predictor, the same output as the local engine.

This module owns running a scoring job on Ray (`kazstance score --engine ray`). The pipeline:
1. one read task per input file runs `readers.read_input` and yields record tables;
2. `map_batches` with `_Scorer`, a callable class on an actor pool, loads the shared predictor
   once per actor and scores each batch with `score.score_records` (the local engine's code);
3. the driver receives the scored rows in input order (`preserve_order`) and commits them
   through the same resumable writer, so the output file, its schema and its checkpoints are
   the local engine's, and a run can even be resumed with the other engine.

Every row carries its position (`_file`, `_n`: input file index, record index in that file);
the driver only commits whole records (a record's sentences may arrive split across batches)
and saves the position after the last one, which is where a resumed run starts reading.

On a cluster (`--ray-address`), every node needs kazstance installed (`pip install
kazstance[ray]`) and must see the input files and the model (a shared filesystem, or a BentoML
tag present on each node); only scored rows travel back to the driver.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .readers import Fields, InputFile, Record, read_input
from .score import Position, ScoreOptions, output_schema, score_records

if TYPE_CHECKING:
    import pyarrow as pa

    from kazstance.predictor import Predictor

READ_ROWS = 1024  # records per block leaving a read task
POSITION = ("_file", "_n")
ENCODING = "_encoding"  # set on the first record of each text file or member (see readers)
KEPT = "_kept"  # the `--keep-field` values of each record


def run_ray(files: list[InputFile], options: ScoreOptions, predictor: "Predictor", start: Position,
            commit: Callable, ray_address: str | None = None) -> None:
    """Score `files` from `start` on a Ray cluster, committing in input order through `commit`.
    `predictor` (the driver's) only gives the output schema: each actor loads `options.model`,
    which `score_files` sets to what the driver loaded (a concrete version, never
    `kazstance:latest`, which may move during the run; a folder as its absolute path)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        empty = output_schema(predictor.labels, options.unit, options.keep_text, options.keep_fields,
                              platforms=bool(predictor.platforms)).empty_table()
        _drive(_dataset(files, options, start), options, len(files), commit, empty)
    finally:
        if started:
            ray.shutdown()


def _dataset(files: list[InputFile], options: ScoreOptions, start: Position):
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # the output must be in input order
    context.enable_progress_bars = False  # the driver shows its own
    context.print_on_execution_start = False

    # Absolute paths for the workers (their working folder is not ours); `source` keeps the path
    # as given, so the rows match the local engine's.
    specs = [{"index": i, "path": str(f.path.absolute()), "source": str(f.path), "size": f.size,
              "skip": start.record if i == start.file else 0}
             for i, f in enumerate(files) if i >= start.file]
    if not specs:
        return None
    model = str(Path(options.model).resolve()) if Path(options.model).is_dir() else options.model
    threads = options.threads or 1
    cpus = ray.cluster_resources().get("CPU", 1)
    # Leave one CPU for the read tasks, so the actors can never starve them.
    actors = max(1, int((cpus - 1) // threads))
    return (
        ray.data.from_items(specs, override_num_blocks=len(specs))
        .map_batches(_read_files, batch_size=1, batch_format="pyarrow", fn_kwargs={"fields": options.fields})
        .map_batches(_Scorer, batch_size=options.chunk_records, batch_format="pyarrow",
                     compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=min(threads, max(cpus - 1, 0.5)),
                     fn_constructor_kwargs={"model": model, "options": options, "threads": threads})
    )


def _read_files(specs: "pa.Table", fields: Fields) -> Iterator["pa.Table"]:
    """Read task: the records of each file, with their position, in blocks of READ_ROWS."""
    for spec in specs.to_pylist():
        file = InputFile(Path(spec["path"]), spec["size"])
        block: list[tuple[int, Record]] = []
        for n, record in enumerate(read_input(file, fields, source=spec["source"])):
            if n < spec["skip"]:
                continue
            block.append((n, record))
            if len(block) >= READ_ROWS:
                yield _records_table(spec["index"], block)
                block = []
        if block:
            yield _records_table(spec["index"], block)


def _records_table(index: int, block: list[tuple[int, Record]]) -> "pa.Table":
    import pyarrow as pa

    return pa.table({
        "_file": pa.array([index] * len(block), pa.int64()),
        "_n": pa.array([n for n, _ in block], pa.int64()),
        "source": pa.array([r.source for _, r in block], pa.string()),
        "record": pa.array([r.record for _, r in block], pa.int64()),
        "id": pa.array([r.id for _, r in block], pa.string()),
        "text": pa.array([r.text for _, r in block], pa.string()),
        "error": pa.array([r.error for _, r in block], pa.string()),
        ENCODING: pa.array([r.encoding for _, r in block], pa.string()),  # for the run summary
        KEPT: pa.array([list(r.kept) for _, r in block], pa.list_(pa.string())),
    })


class _Scorer:
    """Actor: one predictor per actor, loaded once; scores record tables into output tables."""

    def __init__(self, model: str, options: ScoreOptions, threads: int):
        from kazstance.predictor import Predictor

        self.options = options
        self.predictor = Predictor.load(model, backend=options.backend, threads=threads,
                                        batch_size=options.batch_size)

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        columns = ("source", "record", "id", "text", "error")
        records = [Record(**{c: row[c] for c in columns}, kept=tuple(row[KEPT]))
                   for row in batch.select([*columns, KEPT]).to_pylist()]
        table, origin = score_records(self.predictor, records, self.options.unit, self.options.keep_text,
                                      self.options.keep_fields)
        for name in POSITION + (ENCODING,):
            table = table.append_column(name, batch.column(name).take(origin))
        return table


def _drive(dataset, options: ScoreOptions, n_files: int, commit: Callable, empty: "pa.Table") -> None:
    """Commit the scored rows in order, whole records only, about a chunk at a time."""
    import pyarrow as pa

    pending: list[pa.Table] = []
    rows = 0
    if dataset is not None:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= options.chunk_records:
                table = pa.concat_tables(pending)
                done, rest = _split_last_record(table)
                if done.num_rows:
                    _commit(done, commit)
                pending, rows = [rest], rest.num_rows
    table = pa.concat_tables(pending) if pending else None
    if table is not None and table.num_rows:
        _commit(table, commit, end=Position(n_files, 0))
    else:  # still record that every file is done
        commit(empty, Position(n_files, 0), 0, 0)


def _split_last_record(table: "pa.Table") -> tuple["pa.Table", "pa.Table"]:
    """(rows of every record but the last, rows of the last record): the last may be incomplete."""
    files, ns = table.column("_file").to_numpy(), table.column("_n").to_numpy()
    last = table.num_rows
    while last > 0 and files[last - 1] == files[-1] and ns[last - 1] == ns[-1]:
        last -= 1
    return table.slice(0, last), table.slice(last)


def _commit(table: "pa.Table", commit: Callable, end: Position | None = None) -> None:
    files, ns = table.column("_file").to_numpy(), table.column("_n").to_numpy()
    records = 1 + int(((files[1:] != files[:-1]) | (ns[1:] != ns[:-1])).sum())
    position = end or Position(int(files[-1]), int(ns[-1]) + 1)
    # A row that stands for a whole file or member has no record number (see readers).
    unreadable = table.column("record").null_count
    # A record scored by sentence has several rows: count its file's encoding once.
    found = {(f, n): (source, encoding) for f, n, source, encoding in
             zip(files, ns, table.column("source").to_pylist(), table.column(ENCODING).to_pylist()) if encoding}
    commit(table.drop_columns([*POSITION, ENCODING]), position, records, unreadable, list(found.values()))
