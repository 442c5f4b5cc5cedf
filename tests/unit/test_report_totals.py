"""Daily totals: buckets, quantiles read from them, sums across days, the summary's JSON, chart geometry."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta

from shared.reports import charts
from shared.reports.facts import Status, VisitSummary
from shared.reports.totals import Totals, bucket, bucket_width, quantile, total
from shared.visits.events import Role


def summary(
    status: Status, *, waits: tuple[float, ...] = (), duration: float | None = None, hour: int = 9
) -> VisitSummary:
    first = datetime(2026, 12, 1, hour, 5, tzinfo=UTC)
    return VisitSummary(
        status=status, first_launch=first, clinician_joined=None, patient_joined=None, start=None, ended=None,
        last_leave=None, duration=None if duration is None else timedelta(seconds=duration),
        lobby_waits=tuple(timedelta(seconds=w) for w in waits), abandoned_patients=0,
        attendants={Role.PROVIDER: 1, Role.PATIENT: len(waits), Role.STAFF: 0}, department=None, organizer=None,
    )  # fmt: skip


def test_buckets_are_5_seconds_then_a_minute_then_10_minutes() -> None:
    assert [bucket(s) for s in (0, 4.9, 5, 599, 600, 659, 3599, 3600, 4199, 10**6)] == [
        0, 0, 5, 595, 600, 600, 3540, 3600, 3600, 86400,
    ]  # fmt: skip
    assert [bucket_width(b) for b in (0, 595, 600, 3540, 3600)] == [5, 5, 60, 60, 600]


def test_quantiles_from_buckets_are_within_a_bucket_of_the_exact_ones() -> None:
    waits = [7 + 13 * i for i in range(200)]  # 7 s .. 2594 s
    histogram: dict[int, int] = {}
    for w in waits:
        histogram[bucket(w)] = histogram.get(bucket(w), 0) + 1
    for q in (0.5, 0.9):
        exact = statistics.quantiles(waits, n=100, method="inclusive")[int(q * 100) - 1]
        found = quantile(histogram, q)
        assert found is not None
        assert abs(found.total_seconds() - exact) <= bucket_width(bucket(exact))
    assert quantile({}, 0.5) is None


def test_totals_add_sum_and_round_trip_through_json() -> None:
    day1, day2 = Totals(), Totals()
    day1.add(summary(Status.COMPLETED, waits=(120, 240), duration=900))
    day1.add(summary(Status.NO_SHOW, hour=14))
    day2.add(summary(Status.ABANDONED, hour=14))
    both = total([day1, day2])
    assert both.visits == 3
    assert (both.count(Status.COMPLETED), both.count(Status.NO_SHOW), both.count(Status.ABANDONED)) == (1, 1, 1)
    assert both.waits == {120: 1, 240: 1} and both.durations == {900: 1}
    assert both.hours[9] == 1 and both.hours[14] == 2
    assert both.attendants == {"provider": 3, "patient": 2}
    assert Totals.from_json(both.to_json()) == both


def test_chart_geometry_stacks_by_status_and_keeps_the_numbers() -> None:
    day = Totals()
    for status, n in ((Status.COMPLETED, 6), (Status.NO_SHOW, 2), (Status.ABANDONED, 2)):
        for _ in range(n):
            day.add(summary(status, waits=(50,) if status is Status.COMPLETED else ()))
    chart = charts.visits_per_day([(date(2026, 12, 1), day), (date(2026, 12, 2), Totals())])
    assert chart.maximum == 10
    assert [(b.css, b.count) for b in chart.bars] == [("completed", 6), ("no_show", 2), ("abandoned", 2)]
    assert sum(b.height for b in chart.bars) == charts.HEIGHT  # the busiest day fills the axis
    bands = dict(charts.wait_bands(day))
    assert bands[(0, 60)] == 6 and sum(bands.values()) == 6
    hours = charts.histogram(charts.busiest_hours(day), "hour")
    assert [b.count for b in hours.bars][9] == 10 and len(hours.bars) == 24
