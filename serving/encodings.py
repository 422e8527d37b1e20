"""Text encodings of the scorer's inputs: find a file's encoding and hand its bytes on as UTF-8.

A UTF-8, UTF-16 or UTF-32 byte-order mark decides. Otherwise a sample (the first `SAMPLE_BYTES`)
that is UTF-8, or mostly UTF-8 with a few damaged lines, is UTF-8; otherwise charset-normalizer
picks among the Cyrillic legacy encodings of Kazakh and Russian archives (`LEGACY_ENCODINGS`;
KZ-1048 holds the Kazakh letters cp1251 lacks). A forced encoding skips the guess. Non-UTF-8
input is transcoded a block at a time, so the readers only ever see UTF-8 and memory stays
bounded; bytes the encoding cannot decode come out as invalid UTF-8, which the readers turn into
an error row for their line.
"""

from __future__ import annotations

import codecs
import io
import re
from typing import IO

BLOCK_BYTES = 8 * 2**10  # small: a stream that fails (truncated, corrupt) loses at most this much before the error
SAMPLE_BYTES = 64 * 2**10  # what the encoding is decided on: thousands of lines of typical posts
# Lone surrogates are how `surrogateescape` marks bytes that were not valid UTF-8.
_SURROGATE = re.compile("[\udc80-\udcff]")
_LEGACY_WORD = re.compile(b"[\x80-\xff]{3}")

# Byte-order marks, UTF-32 first: the UTF-32-LE mark begins with the UTF-16-LE one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# Where Kazakh and Russian archives that are not UTF-8 come from, most common first. No PT154:
# charset-normalizer skips it as "similar" to cp1251 and then finds nothing for PT154 Kazakh.
LEGACY_ENCODINGS = ("cp1251", "kz1048", "koi8_r", "cp866", "iso8859_5", "koi8_u", "mac_cyrillic")
# Mess ratios this close are a tie (short samples of cp1251 read as mac-cyrillic score a hair apart).
_CHAOS_TIE = 0.05
# Bytes that are Kazakh letters in KZ-1048 and Serbian/Ukrainian ones in cp1251 (the rest agree).
_KZ1048_ONLY = [bytes([b]) for b in range(0x80, 0x100)
                if bytes([b]).decode("cp1251", "replace") != bytes([b]).decode("kz1048", "replace")]


def _mark_undecodable(err: UnicodeError) -> tuple[str, int]:
    # Stands for bytes the file's encoding cannot decode: a lone surrogate, which becomes an
    # invalid byte again on the UTF-8 side, so that line is an error row as invalid UTF-8 is.
    return "\udcff", err.end


codecs.register_error("kazstance-undecodable", _mark_undecodable)


def check_encoding(name: str) -> str:
    """The canonical name of a text encoding Python knows (for --encoding), or ValueError."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}: give a Python codec name such as "
                         f"utf-8, utf-16, cp1251, kz1048, koi8-r or cp866") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, rot13, zlib...: not a text encoding
        raise ValueError(f"{name!r} is not a text encoding")
    if info.name.endswith("-escape"):  # unicode_escape makes surrogates out of plain text
        raise ValueError(f"{name!r} decodes Python escapes, not text: give the file's encoding")
    return info.name




class _Recoded(io.RawIOBase):
    """`head`, then the rest of `raw`, decoded from `encoding` and given out as UTF-8 (`encoding`
    None: as they are). A block at a time, so memory stays bounded; the incremental decoder keeps
    a character split between blocks whole."""

    def __init__(self, raw: IO[bytes], head: bytes, encoding: str | None, error: Exception | None = None):
        self.raw, self.head, self.error = raw, head, error  # error: what ended reading the head
        self.decoder = codecs.getincrementaldecoder(encoding)("kazstance-undecodable") if encoding else None
        self.out = memoryview(b"")
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.out and not self.done:
            if not self.head and self.error:
                raise self.error
            block = self.head or self.raw.read1(BLOCK_BYTES)
            self.head = b""
            self.done = not block
            if self.decoder:
                block = self.decoder.decode(block, final=self.done).encode("utf-8", "surrogateescape")
            self.out = memoryview(block)
        n = min(len(buffer), len(self.out))
        buffer[:n] = self.out[:n]
        self.out = self.out[n:]
        return n


def text_stream(stream: IO[bytes], forced: str | None) -> tuple[IO[bytes], str]:
    """The stream as UTF-8 bytes, and the encoding it is in (forced, or found from a sample)."""
    head, error = (b"", None) if forced else _read_up_to(stream, SAMPLE_BYTES)
    encoding = forced or _detect(head, complete=error is None and len(head) < SAMPLE_BYTES)
    # UTF-8 passes through untouched (`_lines` drops a UTF-8 BOM); the rest is transcoded.
    recode = None if encoding == "utf-8" else encoding
    return io.BufferedReader(_Recoded(stream, head, recode, error), BLOCK_BYTES), encoding


def _read_up_to(stream: IO[bytes], size: int) -> tuple[bytes, Exception | None]:
    """Up to `size` bytes, in blocks, and the error that stopped reading if any: the records
    before a truncated end still count, and the error comes when the reader gets there."""
    chunks: list[bytes] = []
    got = 0
    try:
        while got < size:  # a decompressor may return less than asked before the end
            chunk = stream.read1(min(BLOCK_BYTES, size - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except Exception as err:  # noqa: BLE001 - raised again, in its place, by _Recoded
        return b"".join(chunks), err
    return b"".join(chunks), None


def _detect(sample: bytes, complete: bool) -> str:
    """The encoding of a file that starts with `sample` (`complete`: the whole file)."""
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    # Incremental: a character cut at the end of the sample is not an error.
    text = codecs.getincrementaldecoder("utf-8")("surrogateescape").decode(sample, final=complete)
    if not _SURROGATE.search(text) or _mostly_utf8(text):
        return "utf-8"
    from charset_normalizer import from_bytes

    matches = from_bytes(sample, cp_isolation=list(LEGACY_ENCODINGS))
    best = matches.best()
    if best is None:  # no legacy encoding reads it either (binary?): say so line by line
        return "utf-8"
    # A tie goes to the encoding more common in Kazakh and Russian archives.
    tied = [m.encoding for m in matches if m.chaos <= best.chaos + _CHAOS_TIE and m.encoding in LEGACY_ENCODINGS]
    name = codecs.lookup(min(tied, key=LEGACY_ENCODINGS.index, default=best.encoding)).name
    # cp1251 and KZ-1048 read Russian alike; where they differ, the sample's letters are Kazakh
    # (ә ғ қ ң ө ұ ү һ) far more likely than Serbian or Ukrainian (љ ђ ќ ћ ў ј ґ є).
    if name == "cp1251" and any(b in sample for b in _KZ1048_ONLY):
        return "kz1048"
    return name


def _mostly_utf8(text: str) -> bool:
    """UTF-8 with a few damaged lines, not a legacy encoding: legacy Cyrillic text has bytes that
    are invalid UTF-8 in most lines, hardly ever a valid multi-byte character, and words (runs of
    bytes over 0x7f); a stray byte or two is damage. Doubt falls to UTF-8, whose errors are rows
    that say so, where a wrong legacy guess would score garbage."""
    invalid = len(_SURROGATE.findall(text))
    valid = len(text) - len(text.encode("ascii", "ignore")) - invalid  # non-ASCII characters decoded
    lines = [line for line in text.split("\n") if line.strip()]
    damaged = [line for line in lines if _SURROGATE.search(line)]
    if valid > invalid or len(damaged) * 2 < len(lines):
        return True
    return not any(_LEGACY_WORD.search(line.encode("utf-8", "surrogateescape")) for line in damaged)

