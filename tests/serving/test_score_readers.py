"""Specification of the scorer's readers: every input kind, every bad-input kind, safe archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from score_data import ALL_KINDS, TEXTS, encode, write, write_archive
from serving.readers import Fields, expand_inputs, read_input


def read_all(*paths, fields: Fields = Fields()):
    return [r for f in expand_inputs(paths) for r in read_input(f, fields)]


def texts_of(records):
    return [r.text for r in records]


# --- every input kind reads back the same statements --------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_input_kind_yields_its_statements_in_order(tmp_path, kind):
    records = read_all(write(kind, tmp_path))
    assert texts_of(records) == TEXTS
    assert all(r.error is None for r in records)


def test_records_are_numbered_by_line_or_row_and_carry_their_ids(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"id": 7, "text": "бір"}\n\n{"id": "x", "text": "екі"}\n', encoding="utf-8")
    assert [(r.record, r.id) for r in read_all(jsonl)] == [(1, "7"), (3, "x")]  # line numbers: the blank line counts
    rows = read_all(write("csv", tmp_path))
    assert [r.record for r in rows] == list(range(1, len(TEXTS) + 1))  # data rows, header excluded
    assert rows[0].id == "r0"


def test_archive_members_are_named_in_the_source_column(tmp_path):
    records = read_all(write("zip", tmp_path))
    assert {r.source for r in records} == {f"{tmp_path / 'input.zip'}:part1.jsonl",
                                           f"{tmp_path / 'input.zip'}:sub/part2.csv"}


def test_a_folder_is_read_recursively_in_sorted_order_skipping_hidden_files(tmp_path):
    write("jsonl", tmp_path / "b", TEXTS[:2], name="x")
    write("csv", tmp_path / "a" / "deep", TEXTS[2:4], name="y")
    write("txt", tmp_path / "a", TEXTS[4:6], name="z")
    (tmp_path / ".hidden.jsonl").write_text('{"text": "secret"}\n')
    records = read_all(tmp_path)
    assert [Path(r.source).relative_to(tmp_path).as_posix() for r in records] == [
        "a/deep/y.csv", "a/deep/y.csv", "a/z.txt", "a/z.txt", "b/x.jsonl", "b/x.jsonl"]
    assert texts_of(records) == TEXTS[2:4] + TEXTS[4:6] + TEXTS[:2]


def test_mixed_inputs_are_read_in_the_order_given_and_a_repeated_path_once(tmp_path):
    a, b, c = write("parquet", tmp_path, TEXTS[:3], "a"), write("tgz", tmp_path, TEXTS[3:7], "b"), write("txt", tmp_path, TEXTS[7:], "c")
    assert texts_of(read_all(c, a, b, a)) == TEXTS[7:] + TEXTS[:3] + TEXTS[3:7]


def test_text_and_id_fields_are_configurable_and_json_may_use_a_dotted_path(tmp_path):
    path = tmp_path / "posts.jsonl"
    path.write_text(json.dumps({"post": {"body": "мәтін"}, "uid": 3}, ensure_ascii=False) + "\n", encoding="utf-8")
    [record] = read_all(path, fields=Fields(text="post.body", id="uid"))
    assert (record.text, record.id) == ("мәтін", "3")


def test_with_documents_a_txt_file_is_one_record(tmp_path):
    path = write("txt", tmp_path)
    [record] = read_all(path, fields=Fields(txt_documents=True))
    assert record.record == 1 and record.text.split("\n")[:-1] == TEXTS


# --- bad input becomes error rows with a reason; reading goes on --------------------------------


def reasons(records):
    return [(r.record, r.error) for r in records if r.error]


def test_bad_jsonl_lines_become_error_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n{not json\n[1, 2]\n{"id": 1}\n{"text": "  \\u200b "}\n'
                     b'{"text": 42}\n{"text": "also ok"}\n')
    records = read_all(path)
    assert texts_of(records)[0] == "ok" and texts_of(records)[-1] == "also ok"
    got = dict(reasons(records))
    assert got[2].startswith("invalid UTF-8")
    assert got[3].startswith("malformed JSON")
    assert got[4].startswith("malformed JSON: a line must be an object")
    assert got[5] == "missing text field 'text'"
    assert got[6] == "empty text"
    assert got[7] == "text field 'text' is not a string"
    assert len(records) == 8  # one record per non-blank line, good or bad


def test_bad_csv_rows_become_error_rows(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b'id,text\n1,fine\n2,"broken"quote\n3,\xff\n4,too,many\n5,\n6,"multi\nline"\n7,last\n')
    records = read_all(path)
    assert [r.record for r in records] == [1, 2, 3, 4, 5, 6, 7]
    got = dict(reasons(records))
    assert got[2].startswith("malformed CSV row")
    assert got[3] == "invalid UTF-8"
    assert got[4] == "malformed CSV row: 3 fields, the header has 2"
    assert got[5] == "empty text"
    assert texts_of(records)[5:] == ["multi\nline", "last"]


def test_a_missing_text_column_gives_one_error_row_per_row(tmp_path):
    for kind in ("csv", "parquet"):
        path = write(kind, tmp_path)
        records = read_all(path, fields=Fields(text="body"))
        assert len(records) == len(TEXTS)
        assert {r.error for r in records} == {"missing text field 'body'"}


def test_invalid_utf8_in_a_text_file_is_an_error_row(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("бір\n".encode() + b"\xc3\x28\n" + "екі\n".encode())
    assert [(r.record, r.text, r.error) for r in read_all(path)] == [
        (1, "бір", None), (2, None, "invalid UTF-8 at byte 0"), (3, "екі", None)]


def test_a_corrupt_member_is_an_error_row_and_the_other_members_are_read(tmp_path):
    path = tmp_path / "dump.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("good1.jsonl", encode("jsonl", TEXTS[:2]))
        archive.writestr("bad.jsonl.gz", b"\x1f\x8b\x08\x00 this is not gzip")
        archive.writestr("good2.csv", encode("csv", TEXTS[2:4]))
        archive.writestr("readme.md", b"# not data")
    records = read_all(path)
    assert texts_of(records) == TEXTS[:2] + [None] + TEXTS[2:4] + [None]  # archive order
    bad, unsupported = records[2], records[5]
    assert bad.source.endswith(":bad.jsonl.gz") and bad.error.startswith("unreadable:") and bad.record is None
    assert unsupported.error == "unsupported file type: 'readme.md'"


def test_a_truncated_compressed_file_keeps_what_was_read_and_reports_the_rest(tmp_path):
    data = gzip.compress(encode("jsonl", TEXTS))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) - 20])
    records = read_all(path)
    assert records[-1].error.startswith("unreadable:")
    assert all(r.error is None for r in records[:-1])


def test_a_corrupt_zip_a_missing_path_and_an_unsupported_file_are_error_rows(tmp_path):
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 garbage")
    other = tmp_path / "image.png"
    other.write_bytes(b"\x89PNG")
    records = read_all(corrupt, tmp_path / "missing.jsonl", other)
    assert [r.error.split(":")[0] for r in records] == ["unreadable", "no such file", "unsupported file type"]
    assert all(r.record is None for r in records)


def test_an_over_long_line_is_an_error_row_not_a_buffer(tmp_path, monkeypatch):
    import serving.readers as readers

    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 100)
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"text": "x" * 500}) + "\n" + json.dumps({"text": "short"}) + "\n")
    records = read_all(path)
    assert records[0].error.startswith("line longer than") and records[1].text == "short"


# --- archives are read in-stream and member names never become paths ---------------------------


@pytest.mark.parametrize("suffix", ["zip", "tar", "tgz"])
def test_member_names_that_try_to_escape_are_only_labels(tmp_path, suffix):
    work = tmp_path / "work"
    work.mkdir()
    hostile = {"../escape.jsonl": encode("jsonl", TEXTS[:1]), "/etc/absolute.jsonl": encode("jsonl", TEXTS[1:2]),
               "a/../../up.txt": encode("txt", TEXTS[2:3])}
    path = write_archive(work / f"evil.{suffix}", hostile)
    before = sorted(p for p in tmp_path.rglob("*"))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        records = read_all(path.name)
    finally:
        os.chdir(cwd)
    assert texts_of(records) == TEXTS[:3]
    assert [r.source for r in records] == [f"evil.{suffix}:{name}" for name in hostile]
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing was extracted anywhere
    assert not Path("/etc/absolute.jsonl").exists()


def test_nested_archives_and_compressed_members_are_read(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("inner.jsonl", encode("jsonl", TEXTS[:2]))
    path = write_archive(tmp_path / "outer.zip", {"inner.zip": inner.getvalue(),
                                                  "more.jsonl.gz": gzip.compress(encode("jsonl", TEXTS[2:4]))})
    records = read_all(path)
    assert texts_of(records) == TEXTS[:4]
    assert records[0].source == f"{path}:inner.zip:inner.jsonl"


def test_the_output_file_is_never_read_as_input(tmp_path):
    write("jsonl", tmp_path)
    out = tmp_path / "scores.jsonl"
    out.write_text('{"text": "a previous output"}\n')
    assert [f.path for f in expand_inputs([tmp_path], exclude=[out])] == [tmp_path / "input.jsonl"]


def test_parquet_members_are_read_where_the_archive_allows_random_access(tmp_path):
    members = {"rows.parquet": encode("parquet", TEXTS[:3])}
    for name in ("a.zip", "b.tgz", "c.tar"):
        assert texts_of(read_all(write_archive(tmp_path / name, members))) == TEXTS[:3]
    import zstandard

    tar_zst = tmp_path / "d.tar.zst"
    tar_zst.write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "c.tar").read_bytes()))
    [record] = read_all(tar_zst)
    assert record.error.startswith("unreadable: Parquet needs random access")


def test_a_json_array_file_is_one_error_row_not_one_per_line(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"text": t} for t in TEXTS], ensure_ascii=False, indent=2), encoding="utf-8")
    [record] = read_all(path)
    assert record.error.startswith("a JSON array, not JSON Lines")
