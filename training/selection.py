"""`kazstance select`: pick the statements worth labelling next from `kazstance score` output.

Labelling is the expensive step of improving the model, so each batch should hold the statements
the model is least sure of (they teach it most) and not a hundred reposts of one viral comment
or one outlet's week. Strategies (all deterministic for a given seed):

- `uncertainty`: highest predictive entropy of the `score_<label>` columns;
- `margin`: smallest gap between the two highest scores;
- `diverse`: a seeded random sample spread over sources and periods: round-robin over the
  source groups (`outlet` when the scored files carry it, else the scorer's `source`), and
  inside each group over the months of a `date` column when there is one;
- `default`: by entropy, but no source group and no month takes more than its fair share
  (the smallest per-group cap that still lets the groups fill the batch); if the caps and the
  duplicate rule leave the batch short, it is topped up by entropy without caps.

Every strategy skips exact and near duplicates (character 5-gram Jaccard >= 0.8, the rule of
`kazstance data check`) of a statement already picked: the import refuses duplicate texts, and
an annotator gains nothing from labelling one twice.

Memory: the scored files are read row by row (Parquet in batches through pyarrow) and only the
best `POOL_FACTOR * n` rows by the strategy's own priority are kept (a random sample for
`diverse`); the duplicate and diversity passes work on that pool.

Output: a CSV for annotators (id, text, model_label, score_*, uncertainty, source, the scored
files' extra columns, then empty `label` and `borderline` columns, with `lang` and `platform`
columns to fill when the scored files do not carry them), or a Label Studio import JSON with the
model's label as a pre-annotation plus the labelling config beside it. `kazstance data import`
reads either back.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .data import DataError, iter_rows
from .data_check import near_duplicates, normalise
from .data_check import NEAR_DUPLICATE
from .label_import import labelling_config
from serving.writers import score_cell, spreadsheet_safe, unescape_formula  # the scorer's CSV escape, and its inverse

STRATEGIES = ("default", "uncertainty", "margin", "diverse")
FORMATS = ("csv", "label-studio")
POOL_FACTOR = 20  # candidates kept per statement asked for: room for the duplicate and diversity passes
# The scorer's own columns; any other column of a scored file is carried to the batch.
# (`platform`, the model's guess at what the statement is about, is carried: it pre-fills the
# annotator's platform column.)
SCORER_COLUMNS = {"source", "record", "sentence", "id", "text", "label", "tokens", "windows", "sentences", "evidence",
                  "model", "error", "platform_score"}
ANNOTATOR_COLUMNS = ("lang", "platform")  # added empty when not carried: the import needs them
MONTH = re.compile(r"^\d{4}-\d{2}")


class SelectionError(ValueError):
    """The scored files cannot be selected from (not scorer output, or scored without the text)."""


@dataclass
class Candidate:
    """A scored statement that could go into the batch."""

    id: str
    text: str
    source: str
    model_label: str
    scores: dict[str, float]
    model: str
    extra: dict            # the scored file's extra columns (date, outlet, platform, lang, ...)
    tiebreak: float        # seeded, in [0, 1): breaks ties and orders the random strategies

    @property
    def uncertainty(self) -> float:
        """Predictive entropy, divided by its maximum: 0 when certain, 1 when all labels are equal."""
        total = sum(self.scores.values()) or 1.0
        probs = [p / total for p in self.scores.values() if p > 0]
        return -sum(p * math.log(p) for p in probs) / math.log(len(self.scores))

    @property
    def margin(self) -> float:
        top = sorted(self.scores.values(), reverse=True)
        return top[0] - top[1]

    @property
    def group(self) -> str:
        """The source group the caps and round-robin spread over: the outlet, else the scored file."""
        return str(self.extra.get("outlet") or self.source)

    @property
    def period(self) -> str:
        """The month of the `date` column ('' when there is none)."""
        match = MONTH.match(str(self.extra.get("date") or ""))
        return match.group(0) if match else ""


@dataclass
class Selection:
    picked: list[Candidate]
    labels: list[str]          # score columns, in the scored files' order
    carried: list[str]         # extra columns, in first-seen order
    rows_read: int = 0
    error_rows: int = 0
    pool: int = 0
    duplicates_skipped: int = 0
    groups: int = 0
    strategy: str = "default"


def priority(candidate: Candidate, strategy: str) -> float:
    """Higher is picked first."""
    if strategy == "margin":
        return -candidate.margin
    if strategy == "diverse":
        return candidate.tiebreak
    return candidate.uncertainty


def seeded(seed: int, *key) -> float:
    """A fraction in [0, 1) fixed by the seed and the key (Python's hash() changes per process)."""
    digest = hashlib.blake2b(repr((seed, *key)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# ---------------------------------------------------------------------------------------------
# Reading scored files.


@dataclass
class _Reading:
    labels: list[str] = field(default_factory=list)
    carried: dict[str, None] = field(default_factory=dict)  # an ordered set
    rows: int = 0
    errors: int = 0


def read_scored(paths: Iterable[Path], seed: int, reading: _Reading) -> Iterator[Candidate]:
    """Candidates from scorer output files (.parquet, .jsonl, .csv), row by row; error rows and
    rows without a text are counted in `reading`, not yielded."""
    for path in paths:
        path = Path(path)
        try:
            for k, (_, row) in enumerate(iter_rows(path)):
                if k == 0:
                    _check_columns(path, row, reading)
                reading.rows += 1
                if row.get("error") not in (None, "") or not str(row.get("text") or "").strip():
                    reading.errors += 1
                    continue
                scores = {label: score_cell(row.get(f"score_{label}")) for label in reading.labels}
                if any(v is None for v in scores.values()):
                    reading.errors += 1
                    continue
                extra = {k: v for k, v in row.items() if k not in SCORER_COLUMNS and not k.startswith("score_")}
                reading.carried.update(dict.fromkeys(k for k, v in extra.items() if v not in (None, "")))
                source = unescape_formula(str(row.get("source") or path.name))
                key = (source, row.get("record"), row.get("sentence"), row.get("id"))
                identity = row.get("id") or f"{source}:{row.get('record')}"
                if row.get("sentence") not in (None, ""):
                    identity = f"{identity}:{row['sentence']}"  # --unit sentence: one row per sentence
                yield Candidate(id=unescape_formula(str(identity)), text=unescape_formula(str(row["text"])), source=source,
                                model_label=str(row.get("label") or max(scores, key=scores.get)), scores=scores,
                                model=str(row.get("model") or ""), extra={k: unescape_formula(v) for k, v in extra.items()},
                                tiebreak=seeded(seed, *map(str, key)))
        except DataError as err:
            raise SelectionError(str(err)) from None


def _check_columns(path: Path, row: dict, reading: _Reading) -> None:
    if "text" not in row:
        raise SelectionError(f"{path}: no `text` column; score with `kazstance score ... --keep-text` "
                             "so the batch can show annotators the statements")
    labels = [k[len("score_"):] for k in row if k.startswith("score_")]
    if len(labels) < 2:
        raise SelectionError(f"{path}: no score_<label> columns; expected the output of `kazstance score`")
    if reading.labels and labels != reading.labels:
        raise SelectionError(f"{path}: scores for {', '.join(labels)}, but the first file has "
                             f"{', '.join(reading.labels)}: select from one model's output at a time")
    reading.labels = labels


# ---------------------------------------------------------------------------------------------
# Picking.


def select(paths: Iterable[Path], n: int = 200, strategy: str = "default", seed: int = 13) -> Selection:
    """Pick up to `n` statements from scored files with `strategy` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise SelectionError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if n < 1:
        raise SelectionError("--n must be at least 1")
    reading = _Reading()
    pool = bounded_pool(read_scored(paths, seed, reading), POOL_FACTOR * n, strategy)
    neighbours = duplicate_neighbours([c.text for c in pool])
    if strategy == "diverse":
        order = round_robin(pool)
    else:
        order = list(range(len(pool)))
    caps = fair_caps(pool, n) if strategy == "default" else None
    chosen, skipped = pick(order, pool, neighbours, n, caps)
    return Selection(picked=[pool[i] for i in chosen], labels=reading.labels, carried=list(reading.carried),
                     rows_read=reading.rows, error_rows=reading.errors, pool=len(pool), duplicates_skipped=skipped,
                     groups=len({c.group for c in pool}), strategy=strategy)


def bounded_pool(candidates: Iterable[Candidate], size: int, strategy: str) -> list[Candidate]:
    """The `size` best candidates by priority (ties by the seeded tiebreak), best first; memory
    holds `size` candidates whatever the input's length."""
    heap: list[tuple[float, float, int, Candidate]] = []
    for k, c in enumerate(candidates):
        item = (priority(c, strategy), c.tiebreak, -k, c)
        if len(heap) < size:
            heapq.heappush(heap, item)
        elif item[:3] > heap[0][:3]:
            heapq.heapreplace(heap, item)
    return [item[3] for item in sorted(heap, key=lambda item: item[:3], reverse=True)]


def duplicate_neighbours(texts: list[str]) -> list[set[int]]:
    """For each text, the others that are the same once normalised or near duplicates of it."""
    neighbours: list[set[int]] = [set() for _ in texts]
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        j = first.setdefault(normalise(text), i)
        if j != i:
            neighbours[i].add(j)
            neighbours[j].add(i)
    for i, j, _ in near_duplicates(texts, NEAR_DUPLICATE) if len(texts) > 1 else []:
        neighbours[i].add(j)
        neighbours[j].add(i)
    return neighbours


def fair_cap(sizes: list[int], n: int) -> int:
    """The smallest per-group cap with which the groups still hold `n` (water-filling): with
    groups of 100, 100 and 5 candidates and n = 60, the cap is 28 (28 + 28 + 5 >= 60)."""
    low, high = 1, max(n, 1)
    while low < high:
        cap = (low + high) // 2
        if sum(min(s, cap) for s in sizes) >= n:
            high = cap
        else:
            low = cap + 1
    return low


def fair_caps(pool: list[Candidate], n: int) -> dict[str, tuple[Callable[[Candidate], str], int]]:
    """Per dimension (source group, month): how a candidate's group is read, and the fair cap."""
    caps = {}
    for name, key in (("group", lambda c: c.group), ("period", lambda c: c.period)):
        sizes: dict[str, int] = {}
        for c in pool:
            sizes[key(c)] = sizes.get(key(c), 0) + 1
        caps[name] = (key, fair_cap(list(sizes.values()), n))
    return caps


def round_robin(pool: list[Candidate]) -> list[int]:
    """Pool indices interleaved over source groups, and inside each group over months; groups and
    months take turns in the order they first appear in the (seeded) pool order."""
    by_group: dict[str, dict[str, list[int]]] = {}
    for i, c in enumerate(pool):
        by_group.setdefault(c.group, {}).setdefault(c.period, []).append(i)
    return _interleave([_interleave(list(months.values())) for months in by_group.values()])


def _interleave(queues: list[list[int]]) -> list[int]:
    out = []
    for turn in range(max((len(q) for q in queues), default=0)):
        out += [q[turn] for q in queues if turn < len(q)]
    return out


def pick(order: list[int], pool: list[Candidate], neighbours: list[set[int]], n: int, caps: dict | None
         ) -> tuple[list[int], int]:
    """Walk `order`, taking candidates that are no duplicate of one taken and (with caps) whose
    groups are under their caps; then, if short, walk again without caps. Returns the picked
    indices and how many were skipped as duplicates."""
    chosen: list[int] = []
    taken: set[int] = set()
    duplicates: set[int] = set()
    counts: dict[tuple[str, str], int] = {}
    for capped in ([True, False] if caps else [False]):
        for i in order:
            if len(chosen) >= n:
                break
            if i in taken:
                continue
            if neighbours[i] & taken:
                duplicates.add(i)
                continue
            if capped:
                keys = [(name, key(pool[i])) for name, (key, _) in caps.items()]
                if any(counts.get(k, 0) >= caps[k[0]][1] for k in keys):
                    continue
                for k in keys:
                    counts[k] = counts.get(k, 0) + 1
            chosen.append(i)
            taken.add(i)
    return chosen, len(duplicates)


# ---------------------------------------------------------------------------------------------
# Writing the batch.


def unique_ids(picked: list[Candidate]) -> list[str]:
    """Ids for the batch, unique (a repeated id gets `~2`, `~3`): the import refuses repeats."""
    seen: dict[str, int] = {}
    out = []
    for c in picked:
        seen[c.id] = seen.get(c.id, 0) + 1
        out.append(c.id if seen[c.id] == 1 else f"{c.id}~{seen[c.id]}")
    return out


def batch_rows(selection: Selection) -> list[dict]:
    """One dict per picked statement, columns in the batch's order, annotator columns empty."""
    rows = []
    for rid, c in zip(unique_ids(selection.picked), selection.picked):
        row = {"id": rid, "text": c.text, "model_label": c.model_label}
        row.update({f"score_{label}": c.scores[label] for label in selection.labels})
        row.update(uncertainty=round(c.uncertainty, 6), source=c.source)
        row.update({k: _plain(c.extra.get(k)) for k in selection.carried})
        row.update({k: "" for k in ANNOTATOR_COLUMNS if k not in selection.carried})
        row.update(label="", borderline="")
        rows.append(row)
    return rows


def _plain(value):
    """A cell value CSV and JSON both hold: dates and other objects as text."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def write_csv(selection: Selection, out: Path) -> None:
    rows = batch_rows(selection)
    columns = list(rows[0]) if rows else ["id", "text", "model_label", "uncertainty", "source", "label", "borderline"]
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})



def label_studio_tasks(selection: Selection) -> list[dict]:
    """Label Studio import tasks: `data` holds the text and metadata (what `$text`, `$source` in the
    config refer to), `predictions` the model's label as a pre-annotation the annotator corrects."""
    tasks = []
    for row, c in zip(batch_rows(selection), selection.picked):
        data = {k: v for k, v in row.items() if k not in ("label", "borderline") and v not in ("", None)}
        tasks.append({"data": data, "predictions": [{
            "model_version": c.model or "kazstance", "score": round(max(c.scores.values()), 6),
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": [c.model_label]}}]}]})
    return tasks


def config_path(out: Path) -> Path:
    """Where the labelling config goes: beside the tasks, `batch.json` -> `batch.config.xml`."""
    return out.with_suffix(".config.xml")


def write_label_studio(selection: Selection, out: Path) -> Path:
    out.write_text(json.dumps(label_studio_tasks(selection), ensure_ascii=False, indent=1), encoding="utf-8")
    config = config_path(out)
    config.write_text(labelling_config(ask_lang="lang" not in selection.carried,
                                       ask_platform="platform" not in selection.carried), encoding="utf-8")
    return config


def write_batch(selection: Selection, out: Path, fmt: str = "csv") -> list[Path]:
    """Write the batch; returns the files written."""
    if fmt not in FORMATS:
        raise SelectionError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        write_csv(selection, out)
        return [out]
    return [out, write_label_studio(selection, out)]
