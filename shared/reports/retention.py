"""Report retention and upkeep, run by the timers (``connector/maintenance.py``).

Every configuration that ever recorded a visit has a ``ReportSettings`` row (defaults written on its first
fact), so this timer knows them all: each one's days past its retention are deleted by key range (the report
tables are never scanned, unlike the ``ExpiresAt`` sweep of the short-lived tables), a deleted configuration's
rows all of them, and the summaries of the recent days (today, yesterday and the day before) that are not up to
date (``shared.reports.days.usable``: facts written since, or an open day's summary older than ``SETTLED``) are
computed again, so pages read them rather than the facts.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from shared.kernel.clock import utcnow
from shared.kernel.settings import Geography
from shared.reports.days import LIST_DAYS, PartitionCache, ReportDays, usable
from shared.reports.preferences import ReportPreferences, ReportPreferenceStore
from shared.reports.store import ReportFacts

TOMBSTONE = timedelta(hours=1)


def enforce_retention(
    geographies: tuple[Geography, ...],
    preferences: ReportPreferenceStore,
    facts: ReportFacts,
    days: ReportDays,
    *,
    today: date,
) -> int:
    """Delete every configuration's days past its retention: key-range queries, whole partitions, no table scan."""
    deleted = 0
    for configuration_id, settings in preferences.all().items():
        if settings.deleted:
            deleted += _forget(configuration_id, settings, geographies, preferences, facts, days, today)
            continue
        cutoff = today - timedelta(days=settings.retention_days - 1)
        where = tuple(g for g in geographies if g.value == settings.geography) or geographies
        for geography in where:
            deleted += facts.delete_days_before(geography, configuration_id, cutoff)
            deleted += days.delete_days_before(geography, configuration_id, cutoff)
    for geography in geographies:
        days.delete_lists_before(geography, today - timedelta(days=LIST_DAYS - 1))
    return deleted


def _forget(
    configuration_id: str,
    settings: ReportPreferences,
    geographies: tuple[Geography, ...],
    preferences: ReportPreferenceStore,
    facts: ReportFacts,
    days: ReportDays,
    today: date,
    *,
    limit: int = 5000,
) -> int:
    """A deleted configuration's report rows, ``limit`` at a time. Its settings row (the mark) stays until a run
    finds nothing left an hour after the deletion: other instances may record a late event meanwhile (their
    configuration cache lasts 5 minutes)."""
    where = tuple(g for g in geographies if g.value == settings.geography) or geographies
    after = today + timedelta(days=2)
    deleted = 0
    for g in where:
        deleted += facts.delete_days_before(g, configuration_id, after, limit=limit)
        deleted += days.delete_days_before(g, configuration_id, after)
        days.forget_active(g, configuration_id, today)
    marked = settings.updated_at
    if deleted == 0 and (marked is None or utcnow() - marked > TOMBSTONE):
        preferences.delete(configuration_id)
    return deleted


def refresh_open_days(
    geographies: tuple[Geography, ...], preferences: ReportPreferenceStore, days: ReportDays, *, now: datetime
) -> int:
    """Compute the summaries of the recent days whose facts changed since their last computation, for every
    configuration with facts on them (``now``: after this run's copy of the visit rows' facts)."""
    computed = 0
    today = now.date()
    for geography in geographies:
        configurations = {c for offset in (0, 1, 2) for c in days.active(geography, today - timedelta(days=offset))}
        for configuration_id in sorted(configurations):
            read: PartitionCache = {}  # the three days in ascending order read five partitions (the first by keys)
            stored = days.stored(geography, configuration_id, today - timedelta(days=2), today)
            for offset in (2, 1, 0):
                day = today - timedelta(days=offset)
                if usable(*stored[day], now=now):
                    continue  # nothing written since it was computed (or, unmarked, closed and computed since)
                settings = preferences.get(configuration_id)
                if settings.deleted:
                    break
                days.compute(geography, configuration_id, day, now=now, read=read)
                computed += 1
    return computed
