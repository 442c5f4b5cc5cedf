"""Chart geometry for the report page: plain numbers the template draws as SVG (no script, no external file).

Each chart is a list of bars (x, y, width, height, a colour class, and the label a screen reader and the
tooltip read), with the axis maximum; the page also shows every chart's numbers as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from shared.reports.facts import Status
from shared.reports.totals import Totals

WIDTH = 720
HEIGHT = 200
STATUS_ORDER = (Status.COMPLETED, Status.NO_SHOW, Status.ABANDONED, Status.IN_PROGRESS)
STATUS_LABELS = {
    Status.COMPLETED: "Completed",
    Status.NO_SHOW: "No-show",
    Status.ABANDONED: "Left the lobby",
    Status.IN_PROGRESS: "Not ended",
}
# Lobby-wait bands (seconds): the histogram's buckets grouped into what an analyst asks about.
WAIT_BANDS = ((0, 60), (60, 120), (120, 300), (300, 600), (600, 900), (900, 1800), (1800, 3600), (3600, 10**9))


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    label: str


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    maximum: int
    ticks: list[tuple[float, str]]  # x position, label under the axis


def _scale(value: int, maximum: int) -> float:
    return 0.0 if maximum == 0 else HEIGHT * value / maximum


def visits_per_day(per_day: list[tuple[date, Totals]]) -> Chart:
    """Stacked bars: per day, visits by status."""
    maximum = max((t.visits for _, t in per_day), default=0)
    n = max(1, len(per_day))
    slot = WIDTH / n
    bars: list[Bar] = []
    ticks: list[tuple[float, str]] = []
    every = max(1, n // 10)
    for i, (day, totals) in enumerate(per_day):
        top = float(HEIGHT)
        for status in STATUS_ORDER:
            count = totals.count(status)
            if not count:
                continue
            h = _scale(count, maximum)
            top -= h
            bars.append(
                Bar(
                    i * slot + slot * 0.1,
                    top,
                    slot * 0.8,
                    h,
                    status.value,
                    f"{day:%d %b}: {count} {STATUS_LABELS[status].lower()}",
                )
            )
        if i % every == 0:
            ticks.append((i * slot + slot / 2, f"{day:%d %b}"))
    return Chart(bars, maximum, ticks)


def wait_bands(totals: Totals) -> list[tuple[str, int]]:
    """Admitted patients per lobby-wait band."""
    rows = []
    for low, high in WAIT_BANDS:
        count = sum(n for b, n in totals.waits.items() if low <= b < high)  # band edges are bucket edges
        rows.append((_band_label(low, high), count))
    return rows


def _band_label(low: int, high: int) -> str:
    def minutes(s: int) -> str:
        return f"{s // 60} min"

    if high >= 10**9:
        return f"{minutes(low)} or more"
    if low == 0:
        return f"under {minutes(high)}"
    return f"{minutes(low)} to {minutes(high)}"


def histogram(rows: list[tuple[str, int]], css: str) -> Chart:
    maximum = max((n for _, n in rows), default=0)
    slot = WIDTH / max(1, len(rows))
    bars = []
    ticks = []
    for i, (label, count) in enumerate(rows):
        h = _scale(count, maximum)
        bars.append(Bar(i * slot + slot * 0.1, HEIGHT - h, slot * 0.8, h, css, f"{label}: {count}"))
        ticks.append((i * slot + slot / 2, label))
    return Chart(bars, maximum, ticks)


def busiest_hours(totals: Totals) -> list[tuple[str, int]]:
    return [(f"{hour:02d}", count) for hour, count in enumerate(totals.hours)]
