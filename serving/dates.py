"""Dates as archives write them, read into `datetime.date` for `kazstance report`.

News exports and social-media dumps carry dates in whatever form their system printed: ISO
(`2024-03-05`, `2024-03-05T14:20:00+05:00`), Kazakhstani and Russian day-first forms
(`05.03.2024`, `05/03/2024 14:20`), month names in Kazakh, Russian or English (`5 наурыз 2024 ж.`,
`5 марта 2024 г.`, `March 5, 2024`), Unix timestamps in seconds or milliseconds, and Parquet's
own date and timestamp types. `parse_date` reads all of these and returns None for anything
else, so the report can count and name what it could not place in time instead of guessing.

Rules that decide ambiguous cases:
- slashed and dotted all-number dates are day first (`05/03/2024` is 5 March), as in Kazakhstan
  and Russia; an ISO year-first date is always year, month, day;
- a time zone is kept as written: the date is the one the outlet printed, not its UTC date;
- a date with no day (`2024-03`, `март 2024`) is not a date: a weekly or monthly period could
  not place it honestly, so it counts as unparseable.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timezone

from dateutil import parser as dateutil_parser

# Month names (nominative, genitive, abbreviated; Kazakh and Russian) next to dateutil's English ones.
_MONTHS = [
    ("қаңтар", "январь", "января", "янв"),
    ("ақпан", "февраль", "февраля", "фев"),
    ("наурыз", "март", "марта", "мар"),
    ("сәуір", "апрель", "апреля", "апр"),
    ("мамыр", "май", "мая"),
    ("маусым", "июнь", "июня", "июн"),
    ("шілде", "июль", "июля", "июл"),
    ("тамыз", "август", "августа", "авг"),
    ("қыркүйек", "сентябрь", "сентября", "сен", "сент"),
    ("қазан", "октябрь", "октября", "окт"),
    ("қараша", "ноябрь", "ноября", "ноя"),
    ("желтоқсан", "декабрь", "декабря", "дек"),
]
# Kazakh month names take case endings in running text ("наурызда", "5 наурыздағы"): cut them off.
_KAZAKH_MONTH_CASE = re.compile(r"\b(%s)(дағы|дегі|тағы|тегі|ғы|гі|да|де|та|те|ның|нің|дың|дің|тың|тің)\b"
                                % "|".join(names[0] for names in _MONTHS), re.IGNORECASE)
# Words around a date that name no part of it: "ж." / "жылы" (year, Kazakh), "г." / "года" (Russian).
_NOISE = re.compile(r"(?<!\w)(жылғы|жылы|жыл|ж|года|год|г)\.?(?!\w)", re.IGNORECASE)
_EPOCH = re.compile(r"^\d{9,13}(\.\d+)?$")
_YEAR_FIRST = re.compile(r"^\d{4}\D")
# A day, a month and a year: three numbers, or a day and a year around a month's name.
_HAS_DAY = re.compile(r"\d{1,2}\D+\d{1,2}\D+\d{2,4}|\d{4}\D+\d{1,2}\D+\d{1,2}|^\d{8}$"
                      r"|\d{1,2}[\s\-./]*[^\W\d_]+\.?[\s\-./,]*\d{2,4}|[^\W\d_]+\.?\s*\d{1,2},?\s*\d{4}"
                      r"|\d{4}\s+\d{1,2}\s+[^\W\d_]+")


class _Parserinfo(dateutil_parser.parserinfo):
    MONTHS = [(*english, *ours) for english, ours in zip(dateutil_parser.parserinfo.MONTHS, _MONTHS)]


_DAY_FIRST = _Parserinfo(dayfirst=True)
_YEAR_FIRST_INFO = _Parserinfo(yearfirst=True)


def parse_date(value) -> date | None:
    """The calendar date `value` names, or None when it names none (see the module docstring)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_epoch(float(value))
    text = str(value).strip()
    if not text:
        return None
    if _EPOCH.match(text):
        return _from_epoch(float(text))
    try:  # the common case, and the only one where year-first is certain
        return datetime.fromisoformat(text).date()
    except ValueError:
        pass
    words = _NOISE.sub(" ", _KAZAKH_MONTH_CASE.sub(r"\1", text)).strip()
    if not _HAS_DAY.search(words):
        return None
    info = _YEAR_FIRST_INFO if _YEAR_FIRST.match(words) else _DAY_FIRST
    try:
        return dateutil_parser.parse(words, parserinfo=info, default=datetime(1, 1, 1)).date()
    except (ValueError, OverflowError, TypeError):
        return None


def _from_epoch(seconds: float) -> date | None:
    """Seconds since 1970, or milliseconds when the number is too large to be seconds."""
    if not math.isfinite(seconds):
        return None
    if seconds > 1e11:  # 1e11 seconds is the year 5138; 1e11 ms is 1973
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).date()
    except (OverflowError, OSError, ValueError):
        return None


def period_start(day: date, period: str) -> date:
    """The first day of the week (Monday, ISO) or month that `day` falls in."""
    if period == "week":
        return date.fromordinal(day.toordinal() - day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"period must be week or month, not {period!r}")


def period_label(start: date, period: str) -> str:
    """`2024-W10` for a week, `2024-03` for a month."""
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{start.year}-{start.month:02d}"
