"""Dates as archives print them: `serving.dates.parse_date` and the report's periods."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from serving.dates import parse_date, period_label, period_start

MARCH_5 = date(2024, 3, 5)


@pytest.mark.parametrize("text", [
    "2024-03-05", "2024-03-05T14:20:00", "2024-03-05T14:20:00+05:00", "2024-03-05 14:20:00Z", "20240305",
    "2024/03/05", "2024.03.05",
    "05.03.2024", "5.3.2024", "05/03/2024 14:20", "05-03-2024",
    "5 наурыз 2024", "5 наурыз 2024 ж.", "2024 жылғы 5 наурыз", "2024 жылы 5 наурызда", "5 НАУРЫЗ 2024",
    "5 марта 2024", "5 марта 2024 г.", "5 марта 2024 года", "5 мар. 2024", "5-мар-2024",
    "March 5, 2024", "5 Mar 2024", "Tue, 05 Mar 2024 10:00:00 GMT",
])
def test_common_formats_name_the_same_day(text):
    assert parse_date(text) == MARCH_5


def test_slashed_and_dotted_dates_are_day_first():
    assert parse_date("04/03/2024") == date(2024, 3, 4)
    assert parse_date("04.03.2024") == date(2024, 3, 4)


def test_kazakh_and_russian_months_all_read():
    kazakh = ["қаңтар", "ақпан", "наурыз", "сәуір", "мамыр", "маусым", "шілде", "тамыз", "қыркүйек", "қазан",
              "қараша", "желтоқсан"]
    russian = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
               "ноября", "декабря"]
    for month, (kk, ru) in enumerate(zip(kazakh, russian), start=1):
        assert parse_date(f"12 {kk} 2023 ж.") == date(2023, month, 12)
        assert parse_date(f"12 {ru} 2023 г.") == date(2023, month, 12)


def test_unix_seconds_and_milliseconds():
    moment = datetime(2024, 3, 5, 12, tzinfo=timezone.utc).timestamp()
    assert parse_date(int(moment)) == MARCH_5
    assert parse_date(str(int(moment))) == MARCH_5
    assert parse_date(str(int(moment * 1000))) == MARCH_5


def test_typed_dates_pass_through():
    assert parse_date(datetime(2024, 3, 5, 23, 59)) == MARCH_5
    assert parse_date(MARCH_5) == MARCH_5


@pytest.mark.parametrize("text", [None, "", "   ", "yesterday", "2024-03", "март 2024", "қазан 2024", "31.02.2024",
                                  "32.01.2024", "2024-13-01", "n/a", "0", float("nan"), "12 апельсинов 2024"])
def test_what_names_no_day_is_none(text):
    assert parse_date(text) is None


def test_a_time_zone_keeps_the_printed_day():
    assert parse_date("2024-03-05T23:30:00-05:00") == MARCH_5


def test_weeks_start_on_monday_and_carry_the_iso_year():
    assert period_start(date(2024, 3, 7), "week") == date(2024, 3, 4)
    assert period_label(date(2024, 3, 4), "week") == "2024-W10"
    monday = period_start(date(2025, 1, 1), "week")
    assert monday == date(2024, 12, 30) and period_label(monday, "week") == "2025-W01"


def test_months_start_on_the_first():
    assert period_start(date(2024, 2, 29), "month") == date(2024, 2, 1)
    assert period_label(date(2024, 2, 1), "month") == "2024-02"


def test_every_day_of_a_year_falls_in_its_own_week_and_month():
    day = date(2023, 1, 1)
    while day.year == 2023:
        week = period_start(day, "week")
        assert week <= day < week + timedelta(days=7) and week.weekday() == 0
        assert period_start(day, "month") == date(day.year, day.month, 1)
        day += timedelta(days=1)


def test_an_unknown_period_is_refused():
    with pytest.raises(ValueError, match="week or month"):
        period_start(MARCH_5, "year")
