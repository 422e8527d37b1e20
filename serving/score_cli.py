"""The `kazstance score` command: options in, `serving.score.score_files` out, a summary printed.

This module owns only the command-line surface (options, exit codes, the end-of-run summary).
Its module-level imports stay light (typer, stdlib) because `kazstance.cli` imports it for every
command; pyarrow, torch and ray load inside the command.

Exit codes: 0 when the run finished (error rows included), 1 when nothing could be read,
2 when the model cannot load or the options are wrong (unknown output format or --encoding, a resume
that does not match the interrupted run), 130 when interrupted (rerun with --resume to continue).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from serving.readers import MAX_EXPANDED_BYTES, MAX_EXPANSION_RATIO  # stdlib only at import

# CSV injection: a scored text such as `=HYPERLINK(...)` would run when the CSV is opened.
OUTPUT_HELP = ("Output file: .parquet, .jsonl or .csv. In CSV, text cells starting with =, +, -, @, tab or CR "
               "get a leading ' so spreadsheets show them as text, not run them as formulas "
               "(--no-escape-formulas turns this off); numbers are never changed.")
ENCODING_HELP = ("Read every text input (JSONL, CSV, TSV, .txt) in this encoding, e.g. cp1251, kz1048, utf-16. "
                 "Default: per file, from its byte-order mark, else UTF-8, else the likeliest Cyrillic legacy "
                 "encoding; the summary lists what was found.")
BOMB_HELP = ("Cut off a compressed file or archive member (an error row; rows before it stay) once its output "
             "passes both --max-expanded-bytes and --max-expansion-ratio times its compressed size.")
UNIT_HELP = ("statement: one prediction per record; sentence: one per sentence; "
             "document: a record (or a whole .txt file) is a document, with the HTTP service's aggregation.")


def score(
    inputs: List[Path] = typer.Argument(..., help="Files, folders or archives: JSONL, CSV, TSV, Parquet, .txt; "
                                             ".gz/.bz2/.xz/.zst; .zip/.tar/.tar.gz/.tgz."),
    output: Path = typer.Option(..., "--output", "-o", help=OUTPUT_HELP),
    model: str = typer.Option("kazstance:latest", help="A model folder or a BentoML tag."),
    text_field: str = typer.Option("text", help="Field or column holding the text (JSON may use a dotted path)."),
    id_field: str = typer.Option("id", help="Field or column holding the record id."),
    unit: str = typer.Option("statement", help=UNIT_HELP),
    batch_size: int = typer.Option(32, min=1, help="Texts per model call."),
    keep_text: bool = typer.Option(False, "--keep-text", help="Copy the text into the output."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run into the same output."),
    engine: str = typer.Option("local", help="local (this process) or ray (Ray Data actor pool)."),
    ray_address: Optional[str] = typer.Option(None, help="Address of an existing Ray cluster (default: start a local one)."),
    backend: str = typer.Option("auto", help="Inference backend: torch (fp32), bf16, int8 (ONNX Runtime), or auto "
                                              "(the default: the fastest backend whose parity with fp32 held on validation and on this CPU)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Torch threads (default: one per core; with --engine ray, per actor, default 1)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    escape_formulas: bool = typer.Option(True, "--escape-formulas/--no-escape-formulas",
                                         help="CSV only: prefix ' to text cells a spreadsheet would run as formulas."),
    encoding: Optional[str] = typer.Option(None, help=ENCODING_HELP),
    tsv_quotes: bool = typer.Option(False, "--tsv-quotes",
                                    help="Read quotes in TSV as quoting (Excel style); by default a TSV field is taken as it is."),
    max_expansion_ratio: float = typer.Option(MAX_EXPANSION_RATIO, min=1, help=BOMB_HELP),
    max_expanded_bytes: int = typer.Option(MAX_EXPANDED_BYTES, min=0, help=BOMB_HELP),
    keep_field: List[str] = typer.Option([], "--keep-field", help="Copy this input field into the output (repeatable), "
                                                                 "e.g. --keep-field date --keep-field outlet."),
    progress_file: Optional[Path] = typer.Option(None, hidden=True, help="Rewrite this JSON file with the run's "
                                                 "progress after every chunk (used by the HTTP jobs)."),
) -> None:
    """Score files and archives in a stream, one output row per record; resumable after a kill."""
    from rich.console import Console

    from serving.score import ModelLoadError, score_files
    from serving.writers import ResumeError

    console = Console(stderr=True)

    def fail(message: str, code: int) -> None:
        console.print(f"[bold red]error:[/] {message}")
        raise typer.Exit(code)

    try:  # score_files checks --unit, --engine and the output format before loading anything
        summary = score_files(inputs, output, model=model, text_field=text_field, id_field=id_field, unit=unit,
                              batch_size=batch_size, keep_text=keep_text, resume=resume, engine=engine,
                              ray_address=ray_address, backend=backend, threads=threads, progress=progress,
                              escape_formulas=escape_formulas, encoding=encoding, tsv_quotes=tsv_quotes,
                              max_expansion_ratio=max_expansion_ratio, max_expanded_bytes=max_expanded_bytes,
                              keep_fields=keep_field, progress_file=progress_file)
    except (ModelLoadError, ResumeError, ValueError, OSError) as err:
        fail(str(err), 2)
    except KeyboardInterrupt:
        fail(f"interrupted; rerun the same command with --resume to continue into {output}", 130)

    typer.echo(f"files: {summary.files}  rows read: {summary.rows_read}  scored: {summary.scored}  "
               f"errors: {summary.errors}  rows written: {summary.rows_written}  "
               f"rows/s: {summary.rows_per_second:.1f}  time: {summary.seconds:.1f}s")
    note = f" (resumed after {summary.resumed_rows} rows)" if summary.resumed_rows else \
        " (no interrupted run to resume: scored from the start)" if resume else ""
    typer.echo(f"output: {summary.output}{note}")
    _echo_encodings(summary)
    if summary.nothing_read:
        fail("nothing could be read from the inputs", 1)


def _echo_encodings(summary) -> None:
    """How many text files and members were in each encoding, and the first few not in UTF-8:
    a folder of thousands of files stays a few lines."""
    if not summary.encodings:
        return
    counts = sorted(summary.encodings.items(), key=lambda item: (-item[1], item[0]))
    typer.echo("encodings: " + ", ".join(f"{name} {count}" for name, count in counts))
    others = sum(count for name, count in counts if name != "utf-8")
    if others:
        more = others - len(summary.not_utf8)
        typer.echo("not UTF-8: " + ", ".join(summary.not_utf8) + (f" and {more} more" if more > 0 else ""))
