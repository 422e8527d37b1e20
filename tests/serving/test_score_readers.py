"""Specification of the scorer's readers: every input kind, every bad-input kind, safe archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
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
    assert len(records) > 1 and all(r.error is None for r in records[:-1])


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


def test_compression_layers_are_undone_outermost_first(tmp_path):
    import bz2
    import lzma

    double = tmp_path / "twice.jsonl.gz.bz2"
    double.write_bytes(bz2.compress(gzip.compress(encode("jsonl", TEXTS[:2]))))
    tar = write_archive(tmp_path / "t.tar.gz", {"a.jsonl": encode("jsonl", TEXTS[2:4])})
    tar_xz = tmp_path / "t.tar.gz.xz"
    tar_xz.write_bytes(lzma.compress(tar.read_bytes()))
    assert texts_of(read_all(double, tar_xz)) == TEXTS[:4]


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


# --- encodings: legacy Cyrillic files and byte-order marks are read as text, not as errors ------

RUSSIAN = [t for t in TEXTS if not any(letter in t for letter in "әғқңөұүһіӘҒҚҢӨҰҮҺІ")]
KAZAKH = [t for t in TEXTS if t not in RUSSIAN]


def encoded(kind: str, texts: list[str], encoding: str) -> bytes:
    return encode(kind, texts).decode("utf-8").encode(encoding)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "tsv", "txt"])
@pytest.mark.parametrize("encoding, texts", [("cp1251", RUSSIAN), ("koi8-r", RUSSIAN), ("cp866", RUSSIAN),
                                             ("kz1048", TEXTS)])
def test_a_legacy_cyrillic_file_is_found_out_and_read_as_text(tmp_path, kind, encoding, texts):
    path = tmp_path / f"legacy.{kind}"
    path.write_bytes(encoded(kind, texts, encoding))
    records = read_all(path)
    assert texts_of(records) == texts
    assert records[0].encoding == encoding and all(r.encoding is None for r in records[1:])


def test_kazakh_letters_choose_kz1048_over_cp1251_even_in_one_short_line(tmp_path):
    path = tmp_path / "one.txt"
    path.write_bytes("Бұғаттау керек.\n".encode("kz1048"))  # cp1251 would read ұ, ғ as ў, є
    [record] = read_all(path)
    assert (record.text, record.encoding) == ("Бұғаттау керек.", "kz1048")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_byte_order_mark_decides_and_rows_out_equal_rows_in(tmp_path, encoding):
    data = encode("jsonl", TEXTS).decode("utf-8")
    if encoding == "utf-16-be":
        data = "\ufeff" + data  # the -be codec writes no mark of its own
    path = tmp_path / "bom.jsonl"
    path.write_bytes(data.encode(encoding))
    records = read_all(path)
    assert texts_of(records) == TEXTS and all(r.error is None for r in records)
    assert records[0].encoding in ("utf-16", "utf-32", "utf-8")


def test_each_member_of_a_mixed_archive_and_each_compressed_file_gets_its_own_encoding(tmp_path):
    members = {"a.jsonl": encoded("jsonl", RUSSIAN, "cp1251"), "b.csv": encoded("csv", KAZAKH, "kz1048"),
               "c.txt": encoded("txt", TEXTS, "utf-16"), "d.tsv": encode("tsv", TEXTS)}
    archive = write_archive(tmp_path / "mixed.tgz", members)
    gz = tmp_path / "legacy.txt.gz"
    gz.write_bytes(gzip.compress(encoded("txt", RUSSIAN, "koi8-r")))
    records = read_all(archive, gz)
    assert texts_of(records) == RUSSIAN + KAZAKH + TEXTS + TEXTS + RUSSIAN
    assert [r.encoding for r in records if r.encoding] == ["cp1251", "kz1048", "utf-16", "utf-8", "koi8-r"]


def test_a_forced_encoding_is_used_as_is(tmp_path):
    cyrillic = [t for t in RUSSIAN if not t.isascii()]
    path = tmp_path / "legacy.txt"
    path.write_bytes(encoded("txt", cyrillic, "iso8859-5"))
    assert texts_of(read_all(path, fields=Fields(encoding="iso8859-5"))) == cyrillic
    forced_utf8 = read_all(path, fields=Fields(encoding="utf-8"))
    assert [r.error.split(" at ")[0] for r in forced_utf8] == ["invalid UTF-8"] * len(cyrillic)


def test_an_unknown_or_non_text_encoding_name_is_refused():
    from serving.encodings import check_encoding

    assert check_encoding("CP1251") == "cp1251" and check_encoding("koi8_r") == "koi8-r"
    for bad in ("cp9999", "base64", "unicode_escape"):
        with pytest.raises(ValueError, match=repr(bad)):
            check_encoding(bad)


def test_an_undecodable_line_in_a_mostly_utf8_file_is_one_error_row(tmp_path):
    path = tmp_path / "mostly.jsonl"
    lines = encode("jsonl", TEXTS).splitlines(keepends=True)
    lines[3] = lines[3].decode("utf-8").encode("cp1251", errors="replace")  # one line saved wrongly
    path.write_bytes(b"".join(lines))
    records = read_all(path)
    assert len(records) == len(TEXTS) and records[0].encoding == "utf-8"
    assert [(r.record, r.error.split(" at ")[0]) for r in records if r.error] == [(4, "invalid UTF-8")]


def test_bytes_the_encoding_cannot_decode_cost_only_their_line(tmp_path):
    cp1251 = tmp_path / "legacy.txt"
    cp1251.write_bytes(encoded("txt", RUSSIAN[:1], "cp1251") + b"\x98 undefined in cp1251\n"
                       + encoded("txt", RUSSIAN[1:], "cp1251"))
    records = read_all(cp1251, fields=Fields(encoding="cp1251"))
    assert texts_of(records) == RUSSIAN[:1] + [None] + RUSSIAN[1:]
    assert records[1].error == "invalid cp1251"
    utf16 = tmp_path / "utf16.txt"
    lone_surrogate = b"\x00\xd8" + "\n".encode("utf-16-le")  # a high surrogate with no low one
    utf16.write_bytes(encoded("txt", TEXTS[:1], "utf-16") + lone_surrogate + encoded("txt", TEXTS[1:], "utf-16-le"))
    records = read_all(utf16)
    assert texts_of(records) == TEXTS[:1] + [None] + TEXTS[1:]
    assert records[1].error == "invalid utf-16"


def test_the_sample_and_the_blocks_may_end_inside_a_character(tmp_path, monkeypatch):
    import serving.encodings as encodings

    monkeypatch.setattr(encodings, "SAMPLE_BYTES", 7)  # ends inside a two-byte Cyrillic letter
    monkeypatch.setattr(encodings, "BLOCK_BYTES", 3)   # splits UTF-16 code units and surrogate pairs
    utf8, utf16 = tmp_path / "a.txt", tmp_path / "b.txt"
    utf8.write_bytes(encode("txt", TEXTS))
    utf16.write_bytes(encoded("txt", TEXTS + ["эмодзи 😀"], "utf-16"))
    assert texts_of(read_all(utf8)) == TEXTS
    assert texts_of(read_all(utf16)) == TEXTS + ["эмодзи 😀"]


# --- values that are not valid Unicode can always be written -----------------------------------


def test_unpaired_surrogates_are_escaped_in_ids_and_replaced_in_texts(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "\\udcd0", "text": "cut emoji \\ud83d"}\n{"id": "\\udcd1", "text": "ok"}\n')
    records = read_all(path)
    assert [(r.id, r.text) for r in records] == [("\\udcd0", "cut emoji \ufffd"), ("\\udcd1", "ok")]


def test_file_and_member_names_that_are_not_utf8_are_escaped_in_the_source(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    name = "Отчет".encode("cp1251")  # what unzipping a Windows archive leaves behind
    with open(os.path.join(os.fsencode(folder), name + b".jsonl"), "wb") as f:
        f.write(encode("jsonl", TEXTS[:1]))
    tar = tmp_path / "win.tar"
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as archive:
        data = encode("jsonl", TEXTS[1:2])
        info = tarfile.TarInfo(os.fsdecode(name + b".jsonl"))
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    records = read_all(folder, tar)
    assert texts_of(records) == TEXTS[:2]
    for record in records:
        record.source.encode("utf-8")  # writable
        assert "\\udcce\\udcf2\\udcf7\\udce5\\udcf2.jsonl" in record.source


# --- one bad line or record is one error row ----------------------------------------------------


def test_a_line_the_json_parser_chokes_on_is_one_error_row(tmp_path):
    path = tmp_path / "hostile.jsonl"
    path.write_text('{"text": "before"}\n' + "[" * 100_000 + "\n" + '{"text": 1' + "0" * 5000 + "}\n"
                    + '{"id": ' + "[" * 5000 + "]" * 5000 + ', "text": "deep id"}\n{"text": "after"}\n')
    records = read_all(path)
    assert len(records) == 5 and texts_of(records)[0] == "before" and texts_of(records)[-1] == "after"
    assert records[1].error.startswith("malformed JSON: RecursionError")
    assert records[2].error.startswith("malformed JSON: ValueError")
    assert records[3].error.startswith("malformed JSON: RecursionError")


def test_an_unterminated_quote_costs_one_csv_row_not_the_rest_of_the_file(tmp_path):
    path = tmp_path / "quote.csv"
    path.write_text('id,text\n1,first\n2,"never closed\n3,third\n4,fourth\n5,fifth\n', encoding="utf-8")
    records = read_all(path)
    assert [(r.record, r.id, r.text) for r in records] == [
        (1, "1", "first"), (2, None, None), (3, "3", "third"), (4, "4", "fourth"), (5, "5", "fifth")]
    assert records[1].error == "malformed CSV row: unexpected end of data"


def test_a_quoted_field_may_span_only_so_many_lines_and_legitimate_ones_still_read(tmp_path, monkeypatch):
    import serving.readers as readers

    monkeypatch.setattr(readers, "MAX_RECORD_LINES", 3)
    path = tmp_path / "long.csv"
    path.write_text('id,text\n1,"three\nline\npost"\n2,"opens here\na\nb\n3,c\n', encoding="utf-8")
    records = read_all(path)
    assert [(r.record, r.text) for r in records] == [(1, "three\nline\npost"), (2, None), (3, None), (4, None), (5, "c")]
    assert records[1].error.startswith("malformed CSV row: a quoted field not closed within 3 lines")
    assert [r.error for r in records[2:4]] == ["malformed CSV row: 1 fields, the header has 2"] * 2


def test_a_well_quoted_multi_line_record_with_the_wrong_field_count_is_one_error_row(tmp_path):
    path = tmp_path / "fields.csv"
    path.write_text('id,text\n1,"a\nb",extra\n2,fine\n', encoding="utf-8")
    records = read_all(path)
    assert [r.record for r in records] == [1, 2]  # its second line is not read again as a record
    assert records[0].error == "malformed CSV row: 3 fields, the header has 2"
    assert records[1].text == "fine"


def test_tsv_quotes_are_text_unless_tsv_quotes_is_set(tmp_path):
    path = tmp_path / "quotes.tsv"
    path.write_text('id\ttext\n1\t"Нет" - сказал он\n2\t"қос\nжол"\n', encoding="utf-8")
    plain = read_all(path)
    assert [(r.record, r.text) for r in plain] == [(1, '"Нет" - сказал он'), (2, '"қос'), (3, None)]
    quoted = read_all(path, fields=Fields(tsv_quotes=True))
    assert [(r.record, r.text) for r in quoted] == [(1, None), (2, "қос\nжол")]
    assert quoted[0].error.startswith("malformed CSV row")


def test_nul_characters_in_a_text_make_it_an_error_row(tmp_path):
    path = tmp_path / "nul.txt"
    path.write_bytes(b"fine\nbin\x00ary\n")
    assert [r.error for r in read_all(path)] == [
        None, "text contains NUL characters (binary data, or UTF-16 without a byte-order mark?)"]


# --- decompression bombs are cut off; ordinary compression never is ------------------------------

BOMB_LIMITS = Fields(max_expanded_bytes=200_000, max_expansion_ratio=10)
BOMB_LINE = json.dumps({"text": "бұғаттау " * 8}, ensure_ascii=False).encode() + b"\n"


def bomb(kind: str, folder: Path, lines: int = 4000) -> Path:
    """A highly compressible input of `kind` (~600 KB expanded from ~1 KB)."""
    data = BOMB_LINE * lines
    if kind in ("zip", "tar.gz"):
        return write_archive(folder / f"bomb.{kind}", {"big.jsonl": data})
    if kind == "tar:gz-member":
        return write_archive(folder / "bomb.tar", {"big.jsonl.gz": gzip.compress(data)})
    from score_data import COMPRESS

    path = folder / f"bomb.jsonl.{kind}"
    path.write_bytes(COMPRESS[kind](data))
    return path


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst", "zip", "tar.gz", "tar:gz-member"])
def test_a_stream_expanding_past_both_limits_is_cut_off_keeping_the_rows_before(tmp_path, kind):
    records = read_all(bomb(kind, tmp_path), fields=BOMB_LIMITS)
    *read, last = records
    assert last.error.startswith("cut off: ") and "expanded past 200,000 bytes and 10x" in last.error
    assert 0 < len(read) < 4000 and all(r.error is None for r in read)


@pytest.mark.parametrize("limits", [Fields(max_expanded_bytes=200_000, max_expansion_ratio=10_000),
                                    Fields(max_expanded_bytes=10**9, max_expansion_ratio=10)])
def test_a_stream_under_either_limit_is_read_whole(tmp_path, limits):
    records = read_all(bomb("gz", tmp_path), bomb("zip", tmp_path), fields=limits)
    assert len(records) == 8000 and all(r.error is None for r in records)


def test_nested_streams_each_under_the_limits_are_cut_off_together(tmp_path):
    small = gzip.compress(BOMB_LINE * 100)  # 15 KB each: under 200,000 bytes alone
    path = write_archive(tmp_path / "nested.zip", {f"part{i}.jsonl.gz": small for i in range(20)})
    records = read_all(path, fields=BOMB_LIMITS)
    assert records[-1].error.endswith("the rest of it is not read; "
                                      "raise --max-expanded-bytes / --max-expansion-ratio if this is real data")
    *read, last = records
    assert last.source == str(path) and all(r.error is None for r in read)  # one row, for the whole zip
    assert 0 < len(read) < 2000


# --- folders: only regular files are opened; links are followed, loops reported ----------------


def test_a_fifo_or_socket_in_a_folder_is_an_error_row_and_never_opened(tmp_path):
    import signal
    import socket

    write("jsonl", tmp_path, TEXTS[:1], name="a")
    os.mkfifo(tmp_path / "b.jsonl")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "c.jsonl"))

    def hung(*_):
        raise TimeoutError("opened the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        records = read_all(tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        server.close()
    assert [r.error for r in records] == [None, "not a regular file (FIFO): not read",
                                          "not a regular file (socket): not read"]


def test_linked_files_and_folders_are_followed_once_and_a_loop_is_an_error_row(tmp_path):
    data = tmp_path / "data"
    write("jsonl", data, TEXTS[:2], name="x")
    walk = tmp_path / "walk"
    (walk / "sub").mkdir(parents=True)
    (walk / "sub" / "linked").symlink_to(data)          # a linked folder: read
    (walk / "sub" / "again").symlink_to(data)           # the same folder again: its files once
    (walk / "sub" / "y.jsonl").symlink_to(data / "x.jsonl")  # the same file through a link: once
    (walk / "sub" / "loop").symlink_to(walk)            # contains itself
    (walk / "z1.jsonl").symlink_to(walk / "z2.jsonl")   # a loop of file links
    (walk / "z2.jsonl").symlink_to(walk / "z1.jsonl")
    (walk / "zz.jsonl").symlink_to(tmp_path / "gone.jsonl")
    files = expand_inputs([walk])
    assert [f.path.relative_to(walk).as_posix() for f in files] == [
        "sub/again/x.jsonl", "sub/loop", "z1.jsonl", "z2.jsonl", "zz.jsonl"]
    assert files[0].size == (data / "x.jsonl").stat().st_size  # the resume fingerprint sees the target
    records = [r for f in files for r in read_input(f, Fields())]
    assert texts_of(records[:2]) == TEXTS[:2]
    assert [r.error.split(":")[0] for r in records[2:]] == [
        "symbolic link loop", "unreadable", "unreadable", "broken symbolic link"]


# --- memory stays flat ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["many.tar", "many.tar.zst"])
def test_tar_headers_are_dropped_as_they_are_read(tmp_path, monkeypatch, name):
    import zstandard

    held = []
    next_member = tarfile.TarFile.next

    def spy(self):
        held.append(len(self.members))
        return next_member(self)

    monkeypatch.setattr(tarfile.TarFile, "next", spy)
    path = write_archive(tmp_path / "many.tar", {f"m{i}.txt": b"line\n" for i in range(300)})
    if name.endswith(".zst"):
        path = tmp_path / name
        path.write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "many.tar").read_bytes()))
    assert len(read_all(path)) == 300
    assert len(held) > 300 and max(held) <= 1


def test_a_huge_parquet_row_group_is_read_in_bounded_pieces(tmp_path, monkeypatch):
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    import serving.readers as readers

    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 64)
    monkeypatch.setattr(readers, "PARQUET_BUFFER_BYTES", 128 * 2**10)
    path = tmp_path / "one-group.parquet"
    texts = [f"{i:06d} " * 400 for i in range(1000)]  # 2.8 MB of text in one row group
    # Pages (the unit a reader must hold whole) of the usual size; the row group is what is huge.
    pq.write_table(pa.table({"text": texts}), path, row_group_size=len(texts), compression="NONE",
                   use_dictionary=False, data_page_size=64 * 2**10, write_batch_size=16)
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_all_lazily(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(texts)
    assert peak < path.stat().st_size / 4  # a whole-row-group read holds all of it at once


def read_all_lazily(path: Path):
    for file in expand_inputs([path]):
        yield from read_input(file, Fields())


def test_a_text_over_the_document_limit_is_an_error_row_whatever_the_format(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    import serving.readers as readers

    monkeypatch.setattr(readers, "MAX_DOCUMENT_BYTES", 1000)
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.table({"text": ["ә" * 1001, "ok"], "id": ["big", "small"]}), path)
    big, small = read_all(path)
    assert big.error == "text longer than 1,000 characters" and small.text == "ok"
