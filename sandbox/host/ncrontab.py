"""NCRONTAB schedules as Azure Functions timer triggers read them (the NCrontab library, with seconds).

Six fields: ``{second} {minute} {hour} {day} {month} {day-of-week}``. Each field is ``*`` or a
comma list of values, ranges ``a-b`` and steps (``*/n``, ``a-b/n``, ``a/n`` meaning a to the
maximum). Months accept ``Jan``..``Dec``, days of week ``Sun``..``Sat`` (0 = Sunday, 0-6), in
any case, abbreviated or in full. As in NCrontab, a time matches when *every* field matches,
including day-of-month and day-of-week together (unlike Vixie cron's "either").

croniter finds the occurrences (``second_at_beginning``: seconds come first; ``day_or=False``: the AND).
This module only keeps croniter to NCrontab's grammar, which is narrower: exactly six fields, names
written in full too, no backwards ranges, no day of week 7, none of croniter's extensions (``L``,
``W``, ``#``, ``?``, ``H``, a year field).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

MONTHS = tuple(m.lower() for m in calendar.month_name[1:])
DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
BOUNDS = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 6),
}
FIELDS = tuple(BOUNDS)  # in NCRONTAB's order
NAMES = {"month": MONTHS, "day-of-week": DAYS}
SEARCH_YEARS = 28  # the calendar repeats every 28 years (1901-2099): a day and weekday that ever meet, meet by then
_ITEM = re.compile(r"(?:\*|(?P<low>\d+|[a-z]+)(?:-(?P<high>\d+|[a-z]+))?)(?:/(?P<step>\d+))?")


class ScheduleError(ValueError):
    """An expression that is not a valid six-field NCRONTAB schedule."""


def _value(text: str, field: str) -> int:
    """A number or a name (at least three letters of it) of ``field``, within its bounds."""
    if text.isdigit():
        number = int(text)
    else:
        names = NAMES.get(field, ())
        matches = [i for i, name in enumerate(names) if len(text) >= 3 and name.startswith(text)]
        if not matches:
            raise ScheduleError(f"{text!r} is not a valid {field}")
        number = matches[0] + (1 if field == "month" else 0)
    low, high = BOUNDS[field]
    if not low <= number <= high:
        raise ScheduleError(f"{field} {number} is outside {low}-{high}")
    return number


def _field(text: str, field: str) -> str:
    """One field in croniter's spelling: names as numbers, after NCrontab's checks."""
    items = []
    for item in text.lower().split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ScheduleError(f"{item!r} is not a valid {field} (a value, a range or a step)")
        if match["low"] is None:
            base = "*"
        elif match["high"] is None:
            base = str(_value(match["low"], field))
        else:
            low, high = _value(match["low"], field), _value(match["high"], field)
            if low > high:
                raise ScheduleError(f"range {match['low']}-{match['high']} in {field} field runs backwards")
            base = f"{low}-{high}"
        if match["step"] is not None and int(match["step"]) == 0:
            raise ScheduleError(f"invalid step 0 in {field} field")
        items.append(base if match["step"] is None else f"{base}/{match['step']}")
    return ",".join(items)


@dataclass(frozen=True)
class Schedule:
    expression: str
    croniter_expression: str

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != len(FIELDS):
            raise ScheduleError(
                f"'{expression}' is not a valid NCRONTAB expression: it needs six fields "
                "{second} {minute} {hour} {day} {month} {day-of-week}"
            )
        translated = " ".join(_field(part, field) for part, field in zip(parts, FIELDS, strict=True))
        try:
            croniter(translated, second_at_beginning=True, day_or=False)
        except CroniterError as exc:
            raise ScheduleError(f"'{expression}' is not a valid NCRONTAB expression: {exc}") from None
        return cls(expression, translated)

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (same tzinfo; sub-second part ignored)."""
        times = croniter(
            self.croniter_expression,
            moment,
            second_at_beginning=True,
            day_or=False,
            max_years_between_matches=SEARCH_YEARS,
        )
        try:
            found: datetime = times.get_next(datetime)
        except CroniterBadDateError:
            raise ScheduleError(f"'{self.expression}' never occurs") from None
        return found

    def occurrences(self, after: datetime, count: int) -> list[datetime]:
        found, moment = [], after
        for _ in range(count):
            moment = self.next_after(moment)
            found.append(moment)
        return found
