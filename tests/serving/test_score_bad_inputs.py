"""Specification of `kazstance score` on bad input: a matrix of cases, each run through the real CLI
on the tiny model. A case writes its inputs and states what must come out: one row per input
record, error rows included (rows out = rows in), the exit code, and the error of each error row in
output order. A data problem never ends a run: the exit code is 0 unless nothing at all could be
read (1) or an option is wrong (2)."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from score_data import COMPRESS, TEXTS, encode, read_rows, write_archive
from serving.readers import Fields, expand_inputs, read_input

runner = CliRunner()

RUSSIAN = [t for t in TEXTS if not any(letter in t for letter in "әғқңөұүһіӘҒҚҢӨҰҮҺІ")]
GOOD = {"id": "good", "text": TEXTS[0]}
BOMB_ARGS = ("--max-expanded-bytes", "200000", "--max-expansion-ratio", "10")
BOMB_FIELDS = Fields(max_expanded_bytes=200_000, max_expansion_ratio=10)
BOMB_DATA = json.dumps({"text": "бұғаттау " * 8}, ensure_ascii=False).encode() + b"\n"  # x 4000: 600 KB


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[Path]]  # writes the inputs into a folder, returns the paths to pass
    rows: int | None  # input records = output rows; None: as many as the readers yield (cut-off streams)
    errors: list[str]  # the error of each error row, in output order (the start of it)
    exit_code: int = 0
    args: tuple[str, ...] = ()
    patch: dict = field(default_factory=dict)  # serving.readers limits, made small


def jsonl(*objects: dict) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objects).encode()  # ASCII: lone surrogates as escapes


def in_encoding(kind: str, texts: list[str], encoding: str) -> bytes:
    return encode(kind, texts).decode("utf-8").encode(encoding)


def files(**named: bytes) -> Callable[[Path], list[Path]]:
    """Inputs given by name (`__` in a keyword stands for the dot of its extension)."""
    def build(folder: Path) -> list[Path]:
        paths = []
        for name, data in named.items():
            paths.append(folder / name.replace("__", "."))
            paths[-1].write_bytes(data)
        return paths
    return build


def archive(name: str, members: dict[str, bytes], compress: str | None = None) -> Callable[[Path], list[Path]]:
    def build(folder: Path) -> list[Path]:
        path = write_archive(folder / name, members)
        if compress:  # e.g. .tar.zst, which write_archive does not make
            path = path.rename(folder / f"{name}.{compress}")
            path.write_bytes(COMPRESS[compress](path.read_bytes()))
        return [path]
    return build


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def tar_with_link(folder: Path) -> list[Path]:
    path = folder / "links.tar"
    with tarfile.open(path, "w") as tar:
        link = tarfile.TarInfo("link.jsonl")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        data = jsonl(GOOD)
        info = tarfile.TarInfo("good.jsonl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return [path]


def folder_with(*extras: str) -> Callable[[Path], list[Path]]:
    """A folder holding one good file, plus a FIFO, a socket, a link loop or a linked folder."""
    def build(folder: Path) -> list[Path]:
        root = folder / "walk"
        root.mkdir()
        (root / "a.jsonl").write_bytes(jsonl(GOOD))
        if "fifo" in extras:
            os.mkfifo(root / "b.jsonl")
        if "socket" in extras:
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(root / "c.jsonl"))
            server.close()  # the socket file stays
        if "loop" in extras:
            (root / "loop").symlink_to(root)
        if "linked" in extras:
            (folder / "elsewhere").mkdir()
            (folder / "elsewhere" / "x.jsonl").write_bytes(jsonl(GOOD, GOOD))
            (root / "linked").symlink_to(folder / "elsewhere")
        return [root]
    return build


def bomb(kind: str) -> Callable[[Path], list[Path]]:
    data = BOMB_DATA * 4000
    if kind == "zip":
        return archive("bomb.zip", {"big.jsonl": data})
    if kind == "tar.gz":
        return archive("bomb.tar.gz", {"big.jsonl": data})
    if kind == "nested":  # 20 members of 15 KB each: each under the limits, together over them
        return archive("nested.zip", {f"p{i}.jsonl.gz": gzip.compress(BOMB_DATA * 100) for i in range(20)})
    return files(**{f"bomb__jsonl__{kind}": COMPRESS[kind](data)})


CUT_OFF = "cut off: "
CASES = [
    # empty and invisible
    Case("empty file", files(empty__jsonl=b""), 0, [], exit_code=1),
    Case("blank lines only", files(blank__txt=b"\n \n\t\r\n"), 0, [], exit_code=1),
    Case("only invisible characters", files(inv__jsonl=jsonl({"text": "\u200b\u00ad"}, GOOD)), 2, ["empty text"]),
    # JSON Lines
    Case("missing text field", files(m__jsonl=jsonl({"id": 1, "body": "мәтін"}, GOOD)), 2,
         ["missing text field 'text'"]),
    Case("non-string text", files(n__jsonl=jsonl({"text": 42}, {"text": {"a": "b"}}, GOOD)), 3,
         ["text field 'text' is not a string"] * 2),
    Case("malformed JSON lines", files(b__jsonl=b'{"text": "ok"}\n{not json\n[1, 2]\n'), 3,
         ["malformed JSON: Expecting property name", "malformed JSON: a line must be an object, not list"]),
    Case("a JSON array file", files(export__json=json.dumps([GOOD] * 3, indent=2).encode()), 1,
         ["a JSON array, not JSON Lines"], exit_code=1),
    Case("JSON nested 100,000 levels deep", files(deep__jsonl=b"[" * 100_000 + b"\n" + jsonl(GOOD)), 2,
         ["malformed JSON: RecursionError"]),
    Case("an integer of 5,000 digits", files(int__jsonl=b'{"text": 1' + b"0" * 5000 + b"}\n" + jsonl(GOOD)), 2,
         ["malformed JSON: ValueError: Exceeds the limit"]),
    Case("an invalid UTF-8 line", files(u__jsonl=encode("jsonl", TEXTS) + b'{"text": "\xff\xfe"}\n'), 9,
         ["invalid UTF-8 at byte 10"]),
    Case("NUL bytes in a text", files(nul__txt=b"ok\nbin\x00ary\n"), 2, ["text contains NUL characters"]),
    Case("a lone surrogate escape in a text is scored", files(s__jsonl=jsonl({"text": "cut emoji \ud83d"})), 1, []),
    Case("a line over the length limit", files(long__jsonl=jsonl({"text": "x" * 500}, {"text": "ok"})), 2,
         ["line longer than 100 bytes"], patch={"MAX_LINE_BYTES": 100}),
    Case("a document over the size limit", files(doc__txt=("мәтін " * 100).encode()), 1,
         ["document larger than 100 bytes"], args=("--unit", "document"), patch={"MAX_DOCUMENT_BYTES": 100}),
    # CSV and TSV
    Case("CSV rows with the wrong field count", files(f__csv=b"id,text\n1,a,b\n2,ok\n3\n"), 3,
         ["malformed CSV row: 3 fields, the header has 2", "malformed CSV row: 1 fields, the header has 2"]),
    Case("CSV with an unterminated quote", files(q__csv='id,text\n1,a\n2,"never closed\n3,c\n4,d\n5,e\n'.encode()),
         5, ["malformed CSV row: unexpected end of data"]),
    Case("CSV quoted field past the line cap", files(cap__csv=b'id,text\n1,"' + b"\n" * 10 + b'x"\n2,ok\n'), 3,
         ["malformed CSV row: a quoted field not closed within 5 lines", "malformed CSV row: 1 fields"],
         patch={"MAX_RECORD_LINES": 5}),
    Case("CSV without the text column", files(c__csv=b"id,body\n1,a\n2,b\n"), 2, ["missing text field 'text'"] * 2),
    Case("CSV with a header only", files(h__csv=b"id,text\n"), 0, [], exit_code=1),
    Case("CSV with a UTF-8 BOM and CRLF", files(w__csv="\ufeffid,text\r\n1,а\r\n2,б\r\n".encode()), 2, []),
    Case("TSV quotes are text by default", files(t__tsv='id\ttext\n1\t"Нет" - сказал он\n'.encode()), 1, []),
    Case("TSV quotes with --tsv-quotes", files(t__tsv='id\ttext\n1\t"Нет" - сказал он\n'.encode()), 1,
         ["malformed CSV row: '\t' expected after '\"'"], args=("--tsv-quotes",)),
    # encodings
    Case("a cp1251 file", files(ru__jsonl=in_encoding("jsonl", RUSSIAN, "cp1251")), len(RUSSIAN), []),
    Case("a KZ-1048 CSV", files(kz__csv=in_encoding("csv", TEXTS, "kz1048")), len(TEXTS), []),
    Case("a UTF-16 file with a BOM", files(u16__jsonl=in_encoding("jsonl", TEXTS, "utf-16")), len(TEXTS), []),
    Case("a UTF-32 text file", files(u32__txt=in_encoding("txt", TEXTS, "utf-32")), len(TEXTS), []),
    Case("a forced encoding and a byte it cannot decode",
         files(f__txt="Вопрос\n".encode("cp1251") + b"\x98\n"), 2, ["invalid cp1251"], args=("--encoding", "cp1251")),
    Case("an unknown --encoding", files(g__jsonl=jsonl(GOOD)), None, [], exit_code=2, args=("--encoding", "klingon")),
    Case("a mixed-encoding archive", archive("mixed.tgz", {
        "a.jsonl": in_encoding("jsonl", RUSSIAN, "cp1251"), "b.csv": in_encoding("csv", TEXTS, "utf-16"),
        "c.txt": in_encoding("txt", TEXTS, "kz1048"), "d.tsv": encode("tsv", TEXTS)}), len(RUSSIAN) + 3 * len(TEXTS), []),
    # compression and archives
    Case("a truncated gzip", files(cut__jsonl__gz=gzip.compress(encode("jsonl", TEXTS))[:-8]), len(TEXTS) + 1,
         ["unreadable: EOFError"]),
    Case("a corrupt zip", files(c__zip=b"PK\x03\x04 garbage"), 1, ["unreadable: BadZipFile"], exit_code=1),
    Case("a corrupt member in a zip", archive("m.zip", {"good.jsonl": jsonl(GOOD), "bad.jsonl.gz": b"\x1f\x8b\x08\x00 no"}),
         2, ["unreadable: "]),
    Case("a zip inside a tar", archive("t.tar", {"inner.zip": zip_bytes({"in.jsonl": jsonl(GOOD, GOOD)})}), 2, []),
    Case("a zip inside a .tar.zst", archive("t.tar", {"inner.zip": zip_bytes({"in.jsonl": jsonl(GOOD)})}, "zst"), 1,
         ["unreadable: a zip inside a compressed stream or a tar cannot be read in-stream"], exit_code=1),
    Case("Parquet inside a .tar.zst", archive("p.tar", {"p.parquet": parquet_bytes(pa.table({"text": ["a"]}))}, "zst"),
         1, ["unreadable: Parquet needs random access"], exit_code=1),
    Case("a corrupt Parquet file", files(p__parquet=b"PAR1 garbage PAR1"), 1, ["unreadable: "], exit_code=1),
    Case("a Parquet text column of numbers", files(n__parquet=parquet_bytes(pa.table({"text": [1, 2]}))), 2,
         ["text field 'text' is not a string"] * 2),
    Case("a link member in a tar", tar_with_link, 2, ["not a regular file (link or device): not read"]),
    Case("an unsupported extension", files(a__pdf=b"%PDF-1.4", g__jsonl=jsonl(GOOD)), 2,
         ["unsupported file type: 'a.pdf'"]),
    Case("a nonexistent path", lambda folder: [folder / "missing.jsonl"], 1, ["no such file"], exit_code=1),
    # folders
    Case("a FIFO and a socket in a folder", folder_with("fifo", "socket"), 3,
         ["not a regular file (FIFO): not read", "not a regular file (socket): not read"]),
    Case("a link loop in a folder", folder_with("loop"), 2, ["symbolic link loop"]),
    Case("a linked folder", folder_with("linked"), 3, []),
    # decompression bombs: the rows before the cut stay, then one error row
    *[Case(f"a {kind} bomb", bomb(kind), None, [CUT_OFF], args=BOMB_ARGS)
      for kind in ("gz", "bz2", "xz", "zst", "zip", "tar.gz", "nested")],
]


def score(inputs: list[Path], out: Path, model: Path, *args: str):
    return runner.invoke(app, ["score", *map(str, inputs), "--output", str(out), "--model", str(model),
                               "--no-progress", "--threads", "1", "--batch-size", "8", *args])


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case: Case, tmp_path, tiny_model_dir, monkeypatch):
    import serving.readers as readers

    for name, value in case.patch.items():
        monkeypatch.setattr(readers, name, value)
    inputs = case.build(tmp_path)
    out = tmp_path / "scores.parquet"
    result = score(inputs, out, tiny_model_dir, *case.args)
    assert result.exit_code == case.exit_code, result.output
    if case.rows is None and not case.errors:  # refused before anything was read
        assert not out.exists()
        return
    rows = read_rows(out)
    if case.rows is None:
        fields = BOMB_FIELDS if case.args == BOMB_ARGS else Fields()
        records = sum(1 for f in expand_inputs(inputs) for _ in read_input(f, fields))
        assert 1 < records < 4000  # cut off mid-way
        assert len(rows) == records
    else:
        assert len(rows) == case.rows
    errors = [r["error"] for r in rows if r["error"] is not None]
    assert len(errors) == len(case.errors), errors
    for got, expected in zip(errors, case.errors):
        assert got.startswith(expected), got


def test_an_unknown_encoding_is_refused_with_a_message(tmp_path, tiny_model_dir):
    (tmp_path / "a.jsonl").write_bytes(jsonl(GOOD))
    result = score([tmp_path / "a.jsonl"], tmp_path / "o.jsonl", tiny_model_dir, "--encoding", "klingon")
    assert result.exit_code == 2 and "unknown encoding 'klingon'" in result.output


# --- values that are not valid Unicode are written in every output format -----------------------


def not_utf8_inputs(folder: Path) -> Path:
    """A folder whose file and tar member names are cp1251 bytes, with a lone-surrogate id and text."""
    root = folder / "in"
    root.mkdir()
    name = "Отчет".encode("cp1251")
    with open(os.path.join(os.fsencode(root), name + b".jsonl"), "wb") as f:
        f.write(jsonl({"id": "\udcd0", "text": "cut emoji \ud83d"}))
    data = jsonl(GOOD)
    with tarfile.open(root / "win.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(os.fsdecode(name + b".jsonl"))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return root


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_names_ids_and_texts_that_are_not_valid_unicode_are_written(tmp_path, tiny_model_dir, suffix):
    out = tmp_path / f"scores{suffix}"
    result = score([not_utf8_inputs(tmp_path)], out, tiny_model_dir, "--keep-text")
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    escaped = "\\udcce\\udcf2\\udcf7\\udce5\\udcf2.jsonl"
    in_tar, in_folder = rows  # sorted by name: "w" comes before the escaped bytes
    assert in_tar["source"].endswith("win.tar:" + escaped) and in_folder["source"].endswith("in/" + escaped)
    assert (in_folder["id"], in_folder["text"]) == ("\\udcd0", "cut emoji \ufffd")


def test_a_run_over_names_that_are_not_utf8_resumes(tmp_path, tiny_model_dir, monkeypatch):
    from serving.writers import PartWriter

    finish = PartWriter.finish
    calls = []

    def interrupted_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return finish(self)

    monkeypatch.setattr(PartWriter, "finish", interrupted_once)
    inputs, out = [not_utf8_inputs(tmp_path)], tmp_path / "scores.parquet"
    assert score(inputs, out, tiny_model_dir).exit_code == 130
    result = score(inputs, out, tiny_model_dir, "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed after 2 rows" in result.output and len(read_rows(out)) == 2


# --- the summary says which encodings were found ----------------------------------------------


def test_the_summary_counts_encodings_and_names_the_first_files_not_in_utf8(tmp_path, tiny_model_dir, monkeypatch):
    import serving.score

    monkeypatch.setattr(serving.score, "NOT_UTF8_NAMED", 2)
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        (root / f"ru{i}.txt").write_bytes(in_encoding("txt", RUSSIAN, "cp1251"))
    for i in range(2):
        (root / f"u{i}.txt").write_bytes(encode("txt", TEXTS))
    (root / "w.txt").write_bytes(in_encoding("txt", TEXTS, "utf-16"))
    result = score([root], tmp_path / "o.jsonl", tiny_model_dir)
    assert result.exit_code == 0, result.output
    assert "encodings: cp1251 3, utf-8 2, utf-16 1" in result.stdout
    assert f"not UTF-8: {root / 'ru0.txt'} (cp1251), {root / 'ru1.txt'} (cp1251) and 2 more" in result.stdout
