"""Text handling shared by training and inference: cleaning and sentence splitting.

Cleaning is deliberately light (Unicode NFC, invisible characters out, whitespace collapsed):
the tokenizer does the real normalisation, and training and serving must see identical input.
The sentence splitter knows Kazakh and Russian punctuation, «guillemet» quotes, ellipses and the
abbreviations common in news prose ("ж.", "т.б.", "млн", "г.", initials), so one quoted statement
with its "– деді министр" attribution stays one sentence.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width and BOM characters that survive copy-paste from web pages and break tokenisation.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SPACES = re.compile(r"\s+")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str) -> str:
    """Normalise a statement the same way for training and inference. Unpaired surrogates (from
    JSON escapes or undecodable bytes) cannot reach the tokenizer, so they become U+FFFD."""
    text = _LONE_SURROGATE.sub("\ufffd", text)
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE)
    return _SPACES.sub(" ", text).strip()


# Lower-cased tokens that end with a period but do not end a sentence (Kazakh, Russian, English).
ABBREVIATIONS = frozenset(
    """
    ж жж т.б т.с.с т.т б.з.д б.з а.ж ғ млн млрд мың тг теңге сағ мин см км кг пр
    г гг т.е т.д т.п др им ул обл р-н пос проф доц акад ст тыс руб напр см.
    mr mrs dr prof vs etc e.g i.e no
    """.split()
)
_OPEN_QUOTES = "«„“"
_CLOSE_QUOTES = "»”"
_TERMINATORS = ".!?…"
# A sentence may start with a capital letter, a digit, an opening quote, a dash or a bracket.
_STARTER = re.compile(r"[A-ZА-ЯЁӘҒҚҢӨҰҮҺІ0-9«„“\"'(\[–—-]")


def _is_abbreviation(text: str, dot_index: int) -> bool:
    """True when the period at dot_index closes an abbreviation or an initial, not a sentence."""
    start = dot_index
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "(«\"":
        start -= 1
    word = text[start:dot_index].lower().rstrip(".")
    if not word:
        return False
    if word in ABBREVIATIONS:
        return True
    # Single-letter initials ("А. Балаева", "Н.Ә. Назарбаев").
    last = word.split(".")[-1]
    return len(last) == 1 and last.isalpha() and text[start:dot_index].strip(".")[-1:].isupper()


def split_sentences(text: str) -> list[str]:
    """Split an article or post into sentences; quoted speech stays whole.

    Rules: a newline always ends a sentence; otherwise a run of . ! ? … (plus any closing
    quotes/brackets) followed by whitespace and a sentence starter ends one, unless we are inside
    «» quotes, or the period closes a known abbreviation or an initial.
    """
    sentences: list[str] = []
    for paragraph in text.splitlines():
        paragraph = clean(paragraph)
        if not paragraph:
            continue
        start, depth, i, n = 0, 0, 0, len(paragraph)
        while i < n:
            ch = paragraph[i]
            if ch in _OPEN_QUOTES:
                depth += 1
            elif ch in _CLOSE_QUOTES:
                depth = max(0, depth - 1)
            elif ch in _TERMINATORS and depth == 0:
                end = i
                while end + 1 < n and paragraph[end + 1] in _TERMINATORS:
                    end += 1
                while end + 1 < n and paragraph[end + 1] in _CLOSE_QUOTES + ")]\"'":
                    end += 1
                nxt = end + 1
                if nxt < n and paragraph[nxt] == " " and nxt + 1 < n and _STARTER.match(paragraph[nxt + 1]):
                    if not (ch == "." and end == i and _is_abbreviation(paragraph, i)):
                        sentences.append(paragraph[start : end + 1].strip())
                        start = nxt + 1
                i = end
            i += 1
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences
