"""A day's totals: counts by status, lobby-wait and duration histograms, visits per hour (UTC), attendants.

Pure and additive (``plus``), so days and departments sum into a range's totals. Times are kept in
buckets (5 s under 10 minutes, 1 minute under an hour, 10 minutes beyond), so a day's summary stays a few
kilobytes however many visits it counts; medians and percentiles are read from the buckets (to their width).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.reports.facts import Status, VisitSummary
from shared.visits.events import Role

MAX_SECONDS = 24 * 3600


def bucket(seconds: float) -> int:
    """The lower bound of the bucket holding ``seconds``."""
    s = max(0, min(int(seconds), MAX_SECONDS))
    if s < 600:
        return s // 5 * 5
    if s < 3600:
        return s // 60 * 60
    return s // 600 * 600


def bucket_width(lower: int) -> int:
    return 5 if lower < 600 else 60 if lower < 3600 else 600


@dataclass
class Totals:
    statuses: dict[str, int] = field(default_factory=dict)
    waits: dict[int, int] = field(default_factory=dict)  # bucket → admitted patients
    durations: dict[int, int] = field(default_factory=dict)  # bucket → visits
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # visits by UTC hour of their first fact
    attendants: dict[str, int] = field(default_factory=dict)  # role → people in meetings
    abandoned_patients: int = 0

    @property
    def visits(self) -> int:
        return sum(self.statuses.values())

    def count(self, status: Status) -> int:
        return self.statuses.get(status.value, 0)

    def add(self, summary: VisitSummary) -> None:
        self.statuses[summary.status.value] = self.statuses.get(summary.status.value, 0) + 1
        for wait in summary.lobby_waits:
            b = bucket(wait.total_seconds())
            self.waits[b] = self.waits.get(b, 0) + 1
        if summary.duration is not None:
            b = bucket(summary.duration.total_seconds())
            self.durations[b] = self.durations.get(b, 0) + 1
        first = summary.first_seen
        if first is not None:
            self.hours[first.hour] += 1
        for role, n in summary.attendants.items():
            if n:
                self.attendants[role.value] = self.attendants.get(role.value, 0) + n
        self.abandoned_patients += summary.abandoned_patients

    def plus(self, other: Totals) -> Totals:
        return Totals(
            statuses=_sum(self.statuses, other.statuses),
            waits=_sum(self.waits, other.waits),
            durations=_sum(self.durations, other.durations),
            hours=[a + b for a, b in zip(self.hours, other.hours, strict=True)],
            attendants=_sum(self.attendants, other.attendants),
            abandoned_patients=self.abandoned_patients + other.abandoned_patients,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "s": self.statuses,
                "w": {str(k): v for k, v in self.waits.items()},
                "d": {str(k): v for k, v in self.durations.items()},
                "h": self.hours,
                "a": self.attendants,
                "x": self.abandoned_patients,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Totals:
        data: Mapping[str, Any] = json.loads(text)
        hours = [int(x) for x in data.get("h", [])][:24]
        return cls(
            statuses={str(k): int(v) for k, v in data.get("s", {}).items()},
            waits={int(k): int(v) for k, v in data.get("w", {}).items()},
            durations={int(k): int(v) for k, v in data.get("d", {}).items()},
            hours=hours + [0] * (24 - len(hours)),
            attendants={str(k): int(v) for k, v in data.get("a", {}).items()},
            abandoned_patients=int(data.get("x", 0)),
        )


def total(parts: Iterable[Totals]) -> Totals:
    result = Totals()
    for part in parts:
        result = result.plus(part)
    return result


def quantile(histogram: Mapping[int, int], q: float) -> timedelta | None:
    """The ``q`` quantile (0..1) read from a histogram: each value taken as the middle of its bucket, and
    interpolated between the two nearest ranks (as ``statistics.quantiles`` does with exact values)."""
    n = sum(histogram.values())
    if n == 0:
        return None
    rank = q * (n - 1)
    low, high = int(rank), min(int(rank) + 1, n - 1)
    a, b = _value_at(histogram, low), _value_at(histogram, high)
    return timedelta(seconds=a + (b - a) * (rank - low))


def _value_at(histogram: Mapping[int, int], index: int) -> float:
    seen = 0
    for lower in sorted(histogram):
        seen += histogram[lower]
        if seen > index:
            return lower + bucket_width(lower) / 2
    last = max(histogram)
    return last + bucket_width(last) / 2


def roles_in_order() -> list[str]:
    return [role.value for role in Role]


def _sum(a: Mapping[Any, int], b: Mapping[Any, int]) -> dict[Any, int]:
    result = dict(a)
    for k, v in b.items():
        result[k] = result.get(k, 0) + v
    return result
