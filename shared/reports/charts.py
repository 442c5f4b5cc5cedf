"""Chart geometry for the report page: plain numbers the template draws as SVG (no script, no external file).

Each chart is a list of bars (x, y, width, height, a colour class, the key and count the template words as the
bar's tooltip), with the axis maximum; the page also shows every chart's numbers as a table. No text here: the
template writes every word (so it can be translated).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from shared.reports.facts import Status
from shared.reports.totals import Totals

WIDTH = 720
HEIGHT = 200
STATUS_ORDER = (Status.COMPLETED, Status.NO_SHOW, Status.ABANDONED, Status.IN_PROGRESS)
# Lobby-wait bands (seconds): the histogram's buckets grouped into what an analyst asks about (a band's edges are
# bucket edges). The template words them; 0 as the upper bound means "and more".
WAIT_BANDS = ((0, 60), (60, 120), (120, 300), (300, 600), (600, 900), (900, 1800), (1800, 3600), (3600, 0))


@dataclass(frozen=True)
class Bar:
    """A bar; ``key`` (a day, a band or an hour) and ``count`` are what the template words as its label."""

    x: float
    y: float
    width: float
    height: float
    css: str  # a status, or "wait" / "hour"
    key: Any
    count: int


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    maximum: int
    ticks: list[tuple[float, Any]]  # x position, the key written under the axis


def _scale(value: int, maximum: int) -> float:
    return 0.0 if maximum == 0 else HEIGHT * value / maximum


def visits_per_day(per_day: list[tuple[date, Totals]]) -> Chart:
    """Stacked bars: per day, visits by status."""
    maximum = max((t.visits for _, t in per_day), default=0)
    n = max(1, len(per_day))
    slot = WIDTH / n
    bars: list[Bar] = []
    ticks: list[tuple[float, Any]] = []
    every = max(1, n // 10)
    for i, (day, totals) in enumerate(per_day):
        top = float(HEIGHT)
        for status in STATUS_ORDER:
            count = totals.count(status)
            if not count:
                continue
            h = _scale(count, maximum)
            top -= h
            bars.append(Bar(i * slot + slot * 0.1, top, slot * 0.8, h, status.value, day, count))
        if i % every == 0:
            ticks.append((i * slot + slot / 2, day))
    return Chart(bars, maximum, ticks)


def wait_bands(totals: Totals) -> list[tuple[tuple[int, int], int]]:
    """Admitted patients per lobby-wait band."""
    return [
        ((low, high), sum(n for b, n in totals.waits.items() if low <= b and (high == 0 or b < high)))
        for low, high in WAIT_BANDS
    ]


def histogram(rows: list[tuple[Any, int]], css: str) -> Chart:
    maximum = max((n for _, n in rows), default=0)
    slot = WIDTH / max(1, len(rows))
    bars = []
    ticks = []
    for i, (key, count) in enumerate(rows):
        h = _scale(count, maximum)
        bars.append(Bar(i * slot + slot * 0.1, HEIGHT - h, slot * 0.8, h, css, key, count))
        ticks.append((i * slot + slot / 2, key))
    return Chart(bars, maximum, ticks)


def busiest_hours(totals: Totals) -> list[tuple[int, int]]:
    return list(enumerate(totals.hours))
