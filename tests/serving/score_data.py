"""Test data for the batch scorer: every input kind, written from the same handful of statements.

`write(kind, folder, texts)` writes `texts` as one input of that kind and returns its path, so a
test can check that any kind reads back the same statements. `read_rows` loads any output file.
"""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import io
import json
import lzma
import tarfile
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from conftest import SAMPLE_TEXTS

TEXTS = SAMPLE_TEXTS

PLAIN_KINDS = ("jsonl", "csv", "tsv", "parquet", "txt")
COMPRESSED_KINDS = ("jsonl.gz", "csv.bz2", "tsv.xz", "jsonl.zst", "parquet.gz")
ARCHIVE_KINDS = ("zip", "tar", "tar.gz", "tgz")
ALL_KINDS = PLAIN_KINDS + COMPRESSED_KINDS + ARCHIVE_KINDS


def encode(kind: str, texts: list[str], ids: list[str] | None = None) -> bytes:
    """The bytes of a plain (uncompressed, unarchived) file of `kind` holding `texts`."""
    ids = ids or [f"r{i}" for i in range(len(texts))]
    if kind == "jsonl":
        return "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in zip(ids, texts)).encode()
    if kind in ("csv", "tsv"):
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="," if kind == "csv" else "\t", lineterminator="\n")
        writer.writerow(["id", "text"])
        writer.writerows(zip(ids, texts))
        return buf.getvalue().encode()
    if kind == "parquet":
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": ids, "text": texts}), sink)
        return sink.getvalue()
    if kind == "txt":
        return "".join(t + "\n" for t in texts).encode()
    raise ValueError(kind)


COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def write(kind: str, folder: Path, texts: list[str] = TEXTS, name: str = "input") -> Path:
    """Write `texts` as an input of `kind`; archives hold a JSONL and a CSV member (half each)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{kind}"
    if kind in ARCHIVE_KINDS:
        half = len(texts) // 2
        members = {"part1.jsonl": encode("jsonl", texts[:half]), "sub/part2.csv": encode("csv", texts[half:])}
        write_archive(path, members)
        return path
    plain, _, compression = kind.partition(".")
    data = encode(plain, texts)
    path.write_bytes(COMPRESS[compression](data) if compression else data)
    return path


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A zip or tar (by extension) with the given member names, unchecked: names may be hostile."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return path
    mode = "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def read_rows(path: Path) -> list[dict]:
    """Any scorer output as a list of row dicts (CSV values come back as strings)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@functools.cache
def tiny_predictor(model_dir: Path):
    """One loaded tiny predictor per session: loading is most of a small test's time. One thread:
    a model this small gains nothing from two, and on a busy machine OpenMP's second thread
    can make every call wait."""
    from kazstance.predictor import Predictor

    return Predictor.load(model_dir, threads=1, batch_size=8)
