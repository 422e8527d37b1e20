"""`kazstance data import`: bring a labelled batch from `kazstance select` back into the dataset.

A batch comes back either as the CSV `select` wrote, with its `label` (and `borderline`) column
filled, or as a Label Studio JSON export of the tasks `select --format label-studio` wrote. This
module reads both, checks every labelled row against the label contract of `data/README.md`, and
writes the rows as dataset records to `<into>/<name>.jsonl`, so that `kazstance data check`
passes on the result and a training config can list the file.

All or nothing: any invalid row stops the import with every problem listed (`file:row: reason`)
and nothing written. A half-imported batch would be worse than none, because a rerun would then
collide with its own ids. Rows left unlabelled are skipped and counted: an annotator may stop
half way through a batch.

The checks are the rules `kazstance data check` applies to a whole dataset, asked of the new
rows against the records already there (every JSONL file under the data root and the target
folder): ids unique, no exact duplicate text, no near duplicate in another split (that would be
a leak; one in the same split is only a warning), no page that is held out for evaluation, and
no page whose other statements sit in another split.

Label Studio's labelling config lives here as well (`labelling_config`), because the names of
its controls are what this module reads back from the export.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from kazstance.labels import LABELS

from .data import DataError, iter_rows
from .data_check import LANGS, NEAR_DUPLICATE, SPLITS, near_duplicates, normalise
from .sources import HELDOUT_FILES, load_heldout, normalise_url, url_hash
# `select` writes CSV cells a spreadsheet would run as a formula with a leading `'` (as
# `kazstance score` does); the import takes the `'` off again.
from serving.writers import unescape_formula

# The data card's platform values (`data/README.md`, "Files and fields").
PLATFORMS = ("tiktok", "instagram", "facebook", "meta", "telegram", "youtube", "whatsapp", "x", "vk", "threads",
             "online-games", "general")
# Record fields kept from the batch when present (provenance and the data card's optional fields).
KEPT_FIELDS = ("source_url", "outlet", "date", "context", "speaker", "register", "restriction", "source_lang")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What the annotator ticks: truthy cells in the CSV `borderline` column.
BORDERLINE_YES = {"1", "x", "y", "yes", "true", "borderline", "b", "✓", "✔"}
BORDERLINE_NO = {"", "0", "n", "no", "false", "clear"}


class LabelImportError(ValueError):
    """The batch cannot be imported; `problems` lists every `file:row: reason`."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass
class Annotated:
    """One row of the batch as the annotator left it."""

    where: str               # file:row (CSV data row, header excluded) or file:task number
    fields: dict             # the row's columns / the task's data
    label: str | None        # None: not labelled yet
    borderline: bool = False
    choices: dict = field(default_factory=dict)  # other Label Studio choices (lang, platform)
    problem: str | None = None  # a row that cannot be read as labelled or not (conflicting annotations)


@dataclass
class ImportResult:
    output: Path
    written: int
    unlabelled: int
    warnings: list[str]
    labels: dict[str, int]


def labelling_config(ask_lang: bool = False, ask_platform: bool = False) -> str:
    """Label Studio config for a batch from `select`: the stance choice, a borderline checkbox, and
    the language and platform when the batch does not carry them. The control names are the ones
    `read_label_studio` looks for."""
    def choices(name: str, values, extra: str = "") -> str:
        inner = "".join(f'\n    <Choice value="{v}"/>' for v in values)
        return f'  <Choices name="{name}" toName="text" {extra}>{inner}\n  </Choices>\n'

    parts = ['<View>\n  <Header value="$source"/>\n  <Text name="text" value="$text"/>\n',
             choices("label", LABELS, 'choice="single" showInline="true" required="true"'),
             '  <Choices name="borderline" toName="text" choice="multiple">\n'
             '    <Choice value="borderline" hint="two careful annotators could disagree"/>\n  </Choices>\n']
    if ask_lang:
        parts.append(choices("lang", LANGS, 'choice="single" showInline="true"'))
    if ask_platform:
        parts.append(choices("platform", PLATFORMS, 'choice="single" showInline="true"'))
    return "".join(parts) + "</View>\n"


# ---------------------------------------------------------------------------------------------
# Reading a batch.


def read_batch(path: Path) -> list[Annotated]:
    """The rows of a filled `select` CSV (.csv) or a Label Studio JSON export (.json)."""
    path = Path(path)
    if not path.is_file():
        raise LabelImportError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        return read_label_studio(path)
    raise LabelImportError(f"{path}: expected a .csv from `kazstance select` or a Label Studio .json export")


def read_csv(path: Path) -> list[Annotated]:
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets save a byte-order mark
        reader = csv.DictReader(f)
        missing = {"id", "text", "label"} - set(reader.fieldnames or ())
        if missing:
            raise LabelImportError(f"{path}: no column {', '.join(sorted(missing))}; expected the CSV `kazstance select` wrote")
        for n, row in enumerate(reader, 1):
            where = f"{path}:{n}"
            if None in row:
                rows.append(Annotated(where, {}, None, problem="more cells than the header has"))
                continue
            fields = {k: unescape_formula(v) for k, v in row.items()}
            label = (fields.pop("label") or "").strip().lower() or None
            flag = (fields.pop("borderline", "") or "").strip().lower()
            problem = None
            if flag not in BORDERLINE_YES | BORDERLINE_NO:
                problem = f"borderline {flag!r}: leave it empty (clear) or put 1/x/yes (borderline)"
            rows.append(Annotated(where, fields, label, flag in BORDERLINE_YES, problem=problem))
    return rows


def read_label_studio(path: Path) -> list[Annotated]:
    """Tasks of a Label Studio JSON export: `data` holds the text and metadata; each annotation's
    `result` holds choices results like `{"from_name": "label", "type": "choices",
    "value": {"choices": ["support"]}}`. Cancelled (skipped) annotations do not count; the
    remaining ones must agree on the label."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelImportError(f"{path}: not a JSON file ({err})") from None
    if isinstance(tasks, dict):  # a single task
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise LabelImportError(f"{path}: expected a Label Studio JSON export (a list of tasks)")
    rows = []
    for n, task in enumerate(tasks, 1):
        where = f"{path}:{n}" + (f" (task {task['id']})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            rows.append(Annotated(where, {}, None, problem="not a Label Studio task (no `data` object)"))
            continue
        annotations = [a for a in task.get("annotations") or task.get("completions") or []
                       if isinstance(a, dict) and not a.get("was_cancelled")]
        found = [_choices(a.get("result") or []) for a in annotations]
        found = [c for c in found if c.get("label")]  # an annotation without a stance is no label
        row = Annotated(where, dict(task["data"]), None)
        if found:
            labels = sorted({c["label"] for c in found})
            if len(labels) > 1:
                row.problem = f"annotations disagree ({' vs '.join(labels)}): settle the label in Label Studio first"
            row.label = labels[0]
            row.borderline = any(c.get("borderline") for c in found)
            row.choices = {k: v for c in found for k, v in c.items() if k in ("lang", "platform")}
        rows.append(row)
    return rows


def _choices(result: list) -> dict:
    """{label, borderline, lang, platform} from one annotation's result list. The stance is the
    `label` control's choice, or the one choices control not otherwise known (configs written
    by hand may call it `stance` or `sentiment`)."""
    picked: dict[str, str] = {}
    for item in result:
        if not isinstance(item, dict) or item.get("type", "choices") != "choices":
            continue
        values = (item.get("value") or {}).get("choices") or []
        if values:
            picked[str(item.get("from_name", ""))] = values
    out: dict = {"borderline": bool(picked.pop("borderline", None))}
    for name in ("lang", "platform"):
        if name in picked:
            out[name] = str(picked.pop(name)[0]).strip()
    stance = picked.pop("label", None) or (next(iter(picked.values())) if len(picked) == 1 else None)
    if stance:
        out["label"] = str(stance[0]).strip().lower()
    return out


# ---------------------------------------------------------------------------------------------
# From rows to records, with the checks.


def to_record(row: Annotated, source: str, split: str, lang: str | None, platform: str | None
              ) -> tuple[dict, list[str]]:
    """A dataset record for a labelled row, and what is wrong with it (empty when valid)."""
    f = row.fields
    problems = [row.problem] if row.problem else []
    record = {
        "id": str(f.get("id") or "").strip(),
        "text": str(f.get("text") or "").strip(),
        "label": row.label,
        "lang": str(row.choices.get("lang") or f.get("lang") or lang or "").strip(),
        "platform": str(row.choices.get("platform") or f.get("platform") or platform or "").strip().lower(),
        "source": source,
        "clarity": "borderline" if row.borderline else "clear",
        "split": split,
    }
    record.update({k: f[k] for k in KEPT_FIELDS if f.get(k) not in (None, "")})
    if f.get("source"):
        record["origin"] = str(f["source"])  # where `kazstance score` read it: file or archive:member
    if not record["id"]:
        problems.append("empty id")
    if not record["text"]:
        problems.append("empty text")
    if record["label"] not in LABELS:
        problems.append(f"label {record['label']!r} is not one of {', '.join(LABELS)}")
    if not record["lang"]:
        problems.append("no language: fill the lang column or pass --lang")
    elif record["lang"] not in LANGS:
        problems.append(f"lang {record['lang']!r} is not one of {', '.join(LANGS)}")
    if not record["platform"]:
        problems.append("no platform: fill the platform column or pass --platform")
    elif record["platform"] not in PLATFORMS:
        problems.append(f"platform {record['platform']!r} is not one of {', '.join(PLATFORMS)}")
    return record, problems


@dataclass
class Existing:
    """The records already in the dataset, as the checks need them."""

    where: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)        # id -> where
    normalised: dict[str, str] = field(default_factory=dict)  # normalised text -> where
    pages: dict[str, tuple[str, str]] = field(default_factory=dict)  # normalised url -> (split, where)


def read_existing(folders: list[Path]) -> Existing:
    """Every JSONL record under the folders (recursively), each file once."""
    existing = Existing()
    files = sorted({p.resolve(): p for folder in folders if Path(folder).is_dir()
                    for p in Path(folder).rglob("*.jsonl") if p.is_file()}.items())
    for _, path in files:
        for n, f in iter_rows(path):
            where = f"{path}:{n}"
            text = str(f.get("text") or "")
            split = f.get("split") or path.stem
            existing.where.append(where)
            existing.texts.append(text)
            existing.splits.append(split)
            existing.ids.setdefault(str(f.get("id", "")), where)
            existing.normalised.setdefault(normalise(text), where)
            if f.get("source_url"):
                existing.pages.setdefault(normalise_url(f["source_url"]), (split, where))
    return existing


def import_labels(path: Path, into: Path, data_root: Path = Path("data"), name: str | None = None,
                  lang: str | None = None, platform: str | None = None, split: str = "train",
                  append: bool = False, id_prefix: str = "",
                  heldout_files: tuple[Path, ...] | list[Path] = HELDOUT_FILES) -> ImportResult:
    """Check a labelled batch and write its labelled rows to `<into>/<name>.jsonl`; raises
    LabelImportError (nothing written) if any row breaks the contract."""
    path, into = Path(path), Path(into)
    name = name or path.stem
    if not NAME.match(name):
        raise LabelImportError(f"source name {name!r}: use letters, digits, '.', '_' or '-' (it names the file)")
    if split not in SPLITS[:3]:
        raise LabelImportError(f"split {split!r} is not one of {', '.join(SPLITS[:3])}")
    if lang is not None and lang not in LANGS:
        raise LabelImportError(f"--lang {lang!r} is not one of {', '.join(LANGS)}")
    output = into / f"{name}.jsonl"
    if output.exists() and not append:
        raise LabelImportError(f"{output} exists: pass --append to add to it, or --source to name another file")

    rows = read_batch(path)
    labelled = [r for r in rows if r.label is not None or r.problem]
    problems: list[str] = []
    records: list[tuple[str, dict]] = []
    for row in labelled:
        record, wrong = to_record(row, f"import:{name}", split, lang, platform)
        if id_prefix and record["id"]:
            record["id"] = id_prefix + record["id"]
        problems += [f"{row.where}: {p}" for p in wrong]
        records.append((row.where, record))
    if not records:
        raise LabelImportError(f"{path}: none of its {len(rows)} rows is labelled; nothing to import")

    try:
        existing = read_existing([data_root, into])
    except DataError as err:
        raise LabelImportError(f"cannot read the existing data: {err}") from None
    warnings: list[str] = []
    problems += _against_existing(records, existing, split, warnings, load_heldout(heldout_files))
    if problems:
        raise LabelImportError(f"{path}: {len(problems)} problem(s); nothing written", problems)

    into.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for _, r in records)
    with output.open("a" if append else "x", encoding="utf-8") as f:
        if append and output.stat().st_size and not output.read_bytes().endswith(b"\n"):
            f.write("\n")
        f.write(lines)
    counts = {label: sum(r["label"] == label for _, r in records) for label in LABELS}
    return ImportResult(output, len(records), len(rows) - len(labelled), warnings, counts)


def _against_existing(records: list[tuple[str, dict]], existing: Existing, split: str, warnings: list[str],
                      heldout: set[str]) -> list[str]:
    """The `kazstance data check` rules, asked of the new records against the dataset and each other."""
    problems = []
    ids: dict[str, str] = {}
    texts: dict[str, str] = {}
    for where, r in records:
        if r["id"] and r["id"] in existing.ids:
            problems.append(f"{where}: id {r['id']!r} already used at {existing.ids[r['id']]} "
                            "(rename it, or pass --id-prefix)")
        elif r["id"] and r["id"] in ids:
            problems.append(f"{where}: id {r['id']!r} repeats {ids[r['id']]}")
        ids.setdefault(r["id"], where)
        key = normalise(r["text"])
        if key and key in existing.normalised:
            problems.append(f"{where}: same text as {existing.normalised[key]}")
        elif key and key in texts:
            problems.append(f"{where}: same text as {texts[key]}")
        texts.setdefault(key, where)
        url = str(r.get("source_url") or "").strip()
        if url:
            if url_hash(url) in heldout:
                problems.append(f"{where}: source_url {url} is a page held out for evaluation; drop this row")
            page = existing.pages.get(normalise_url(url))
            if page and page[0] != split:
                problems.append(f"{where}: page {url} already feeds split {page[0]!r} ({page[1]}); "
                                f"import into that split")
    # Near duplicates of what is already there: in another split a leak, in the same one a warning.
    n_old = len(existing.texts)
    pairs = near_duplicates(existing.texts + [r["text"] for _, r in records], NEAR_DUPLICATE)
    for i, j, jaccard in pairs:
        if j < n_old:
            continue  # two existing records: data check's business, not this import's
        where = records[j - n_old][0]
        if i < n_old:
            if normalise(existing.texts[i]) == normalise(records[j - n_old][1]["text"]):
                continue  # reported above as the same text
            message = f"near duplicate (Jaccard {jaccard:.2f}) of {existing.where[i]}"
            if existing.splits[i] != split:
                problems.append(f"{where}: {message} in split {existing.splits[i]!r} (a leak)")
            else:
                warnings.append(f"{where}: {message}")
    return problems
