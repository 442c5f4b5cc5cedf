"""NCRONTAB schedules as Azure Functions timer triggers read them (the NCrontab library, with seconds).

Six fields: ``{second} {minute} {hour} {day} {month} {day-of-week}``. Each field is ``*`` or a
comma list of values, ranges ``a-b`` and steps (``*/n``, ``a-b/n``, ``a/n`` meaning a to the
maximum). Months accept ``Jan``..``Dec``, days of week ``Sun``..``Sat`` (0 = Sunday, 0-6), in
any case, abbreviated or in full. As in NCrontab, a time matches when *every* field matches,
including day-of-month and day-of-week together (unlike Vixie cron's "either").
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

MONTHS = [m.lower() for m in calendar.month_name[1:]]
DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
SEARCH_YEARS = 8  # long enough for 29 February and rare day-of-week coincidences


class ScheduleError(ValueError):
    """An expression that is not a valid six-field NCRONTAB schedule."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()


FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day", 1, 31),
    _Field("month", 1, 12, tuple(MONTHS)),
    _Field("day-of-week", 0, 6, tuple(DAYS)),
)


def _value(text: str, field: _Field) -> int:
    if text.isdigit():
        number = int(text)
    elif field.names and len(text) >= 3 and text.isalpha():
        lowered = text.lower()
        matches = [i for i, name in enumerate(field.names) if name.startswith(lowered)]
        if not matches:
            raise ScheduleError(f"{text!r} is not a valid {field.name}")
        number = matches[0] + (1 if field.name == "month" else 0)
    else:
        raise ScheduleError(f"{text!r} is not a valid {field.name}")
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name} {number} is outside {field.low}-{field.high}")
    return number


def _parse_field(text: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise ScheduleError(f"empty list item in {field.name} field {text!r}")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"invalid step {step_text!r} in {field.name} field")
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            start, _, end = base.partition("-")
            low, high = _value(start, field), _value(end, field)
            if low > high:
                raise ScheduleError(f"range {base!r} in {field.name} field runs backwards")
        else:
            low = _value(base, field)
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != 6:
            raise ScheduleError(
                f"'{expression}' is not a valid NCRONTAB expression: it needs six fields "
                "{second} {minute} {hour} {day} {month} {day-of-week}"
            )
        fields = [_parse_field(part, field) for part, field in zip(parts, FIELDS, strict=True)]
        return cls(expression, *fields)

    def _day_matches(self, day: datetime) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday = 0; NCRONTAB: Sunday = 0
        return day.month in self.months and day.day in self.days and weekday in self.days_of_week

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (same tzinfo; sub-second part ignored)."""
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for _ in range(366 * SEARCH_YEARS):
            if self._day_matches(day):
                floor = start if day.date() == start.date() else day
                found = self._first_time_in_day(day, floor)
                if found is not None:
                    return found
            day = (day + timedelta(days=1)).replace(hour=0, minute=0, second=0)
        raise ScheduleError(f"'{self.expression}' never occurs")

    def _first_time_in_day(self, day: datetime, floor: datetime) -> datetime | None:
        for hour in sorted(self.hours):
            if hour < floor.hour:
                continue
            for minute in sorted(self.minutes):
                if (hour, minute) < (floor.hour, floor.minute):
                    continue
                for second in sorted(self.seconds):
                    candidate = day.replace(hour=hour, minute=minute, second=second)
                    if candidate >= floor:
                        return candidate
        return None

    def occurrences(self, after: datetime, count: int) -> list[datetime]:
        found, moment = [], after
        for _ in range(count):
            moment = self.next_after(moment)
            found.append(moment)
        return found
