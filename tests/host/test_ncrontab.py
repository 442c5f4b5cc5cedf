"""The NCRONTAB parser: six fields, lists, ranges, steps, names, and NCrontab's AND of day fields."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from sandbox.host.ncrontab import Schedule, ScheduleError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def nexts(expression: str, after: str, count: int = 3) -> list[str]:
    return [d.strftime("%Y-%m-%d %H:%M:%S") for d in Schedule.parse(expression).occurrences(at(after), count)]


def test_every_fifteen_minutes_like_the_sweep_timer() -> None:
    assert nexts("0 */15 * * * *", "2026-01-01T10:07:30") == [
        "2026-01-01 10:15:00",
        "2026-01-01 10:30:00",
        "2026-01-01 10:45:00",
    ]


def test_next_is_strictly_after_the_given_moment() -> None:
    assert nexts("0 0 * * * *", "2026-01-01T10:00:00", 1) == ["2026-01-01 11:00:00"]
    assert nexts("* * * * * *", "2026-01-01T10:00:00.500000", 2) == ["2026-01-01 10:00:01", "2026-01-01 10:00:02"]


def test_lists_ranges_and_steps() -> None:
    assert nexts("5,10 0 9-10 * * *", "2026-03-02T00:00:00", 4) == [
        "2026-03-02 09:00:05",
        "2026-03-02 09:00:10",
        "2026-03-02 10:00:05",
        "2026-03-02 10:00:10",
    ]
    assert nexts("0 0 8-18/5 * * *", "2026-03-02T00:00:00", 3) == [
        "2026-03-02 08:00:00",
        "2026-03-02 13:00:00",
        "2026-03-02 18:00:00",
    ]
    assert nexts("50/5 0 0 * * *", "2026-03-02T00:00:00", 3) == [
        "2026-03-02 00:00:50",
        "2026-03-02 00:00:55",
        "2026-03-03 00:00:50",
    ]


def test_day_of_week_and_names() -> None:
    # 2026-03-02 is a Monday. Weekdays at 09:30.
    assert nexts("0 30 9 * * 1-5", "2026-03-06T12:00:00", 2) == ["2026-03-09 09:30:00", "2026-03-10 09:30:00"]
    assert nexts("0 30 9 * * Mon-Fri", "2026-03-06T12:00:00", 1) == ["2026-03-09 09:30:00"]
    assert nexts("0 0 0 * * sun", "2026-03-02T00:00:00", 1) == ["2026-03-08 00:00:00"]
    assert nexts("0 0 0 1 jan,July *", "2026-03-02T00:00:00", 2) == ["2026-07-01 00:00:00", "2027-01-01 00:00:00"]
    assert nexts("0 0 0 * * Monday-FRIDAY", "2026-03-06T12:00:00", 2) == ["2026-03-09 00:00:00", "2026-03-10 00:00:00"]
    assert nexts("0 0 0 * 3 wed/2", "2026-03-02T00:00:00", 3) == [
        "2026-03-04 00:00:00",
        "2026-03-06 00:00:00",
        "2026-03-11 00:00:00",
    ]


def test_day_of_month_and_day_of_week_must_both_match_as_in_ncrontab() -> None:
    # Friday the 13th: 2026-02-13, 2026-03-13, 2026-11-13.
    assert nexts("0 0 0 13 * 5", "2026-01-01T00:00:00", 3) == [
        "2026-02-13 00:00:00",
        "2026-03-13 00:00:00",
        "2026-11-13 00:00:00",
    ]


def test_leap_day() -> None:
    assert nexts("0 0 12 29 2 *", "2026-01-01T00:00:00", 1) == ["2028-02-29 12:00:00"]
    assert nexts("0 0 0 29 2 Mon", "2026-01-01T00:00:00", 1) == ["2044-02-29 00:00:00"]  # 18 years away


def test_wall_clock_time_in_the_schedule_zone_across_a_dst_change() -> None:
    rome = ZoneInfo("Europe/Rome")  # summer time starts on 2026-03-29
    found = Schedule.parse("0 0 9 * * *").occurrences(datetime(2026, 3, 28, 10, 0, tzinfo=rome), 2)
    assert [(d.isoformat(), d.tzinfo) for d in found] == [
        ("2026-03-29T09:00:00+02:00", rome),
        ("2026-03-30T09:00:00+02:00", rome),
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "*/5 * * * *",  # five fields: Functions requires seconds
        "* * * * * * *",
        "60 * * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * * 13 *",
        "* * * * * 7",
        "*/0 * * * * *",
        "5-1 * * * * *",
        "a * * * * *",
        "1,,2 * * * * *",
        "* * * * Foo *",
        "* * * * * 5-7",
        "* * * * * sa",  # a name needs three letters at least
        # croniter's extensions that NCrontab does not know
        "0 0 0 L * *",
        "0 0 0 1W * *",
        "0 0 0 ? * *",
        "0 0 0 * * 1#2",
        "H * * * * *",
        "0 0 0 1 1 * 2030",
    ],
)
def test_invalid_expressions_are_rejected(expression: str) -> None:
    with pytest.raises(ScheduleError):
        Schedule.parse(expression)


@pytest.mark.parametrize("expression", ["0 0 0 31 2 *", "0 0 0 30 2 Mon"])
def test_impossible_date_never_occurs(expression: str) -> None:
    with pytest.raises(ScheduleError, match="never occurs"):
        Schedule.parse(expression).next_after(at("2026-01-01T00:00:00"))
