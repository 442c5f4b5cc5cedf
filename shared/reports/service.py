"""The usage report: who may read it, its settings, totals for a range, the appointments, the export.

Readers are the configuration's tenant's admins (``PortalIdentity.is_admin``), its approver and holders of the
``Connector.Reports`` app role, all of the configuration's own tenant; admins of tenants it is shared with are
not (the report is the owner's). Only the configuration's admins change its report settings.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Container, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.configurations.model import Configuration
from shared.configurations.repository import ConfigurationRepository
from shared.kernel.clock import utcnow
from shared.kernel.errors import BadRequest, Forbidden, NotFound
from shared.kernel.i18n import N_
from shared.microsoft.entra import PortalIdentity
from shared.portal.service import can_edit
from shared.reports.days import DaySummary, PartitionCache, ReportDays, ReportVisit, usable
from shared.reports.facts import VisitFacts, merged, summarize
from shared.reports.preferences import ReportPreferences, ReportPreferenceStore
from shared.reports.store import ReportFacts
from shared.reports.totals import Totals, total
from shared.visits.events import Role

REPORTS_APP_ROLE = "Connector.Reports"
PRESETS = (7, 30, 90)
MAX_RANGE_DAYS = 366
PAGE_ROWS = 50
MAX_PAGE_QUERIES = 20  # a department's page of a busy day: at most this many queries per request
MAX_EXPORT_ROWS = 200_000
CSV_COLUMNS = (
    "appointment_id",
    "day",
    "status",
    "department",
    "organizer",
    "first_launch",
    "clinician_joined",
    "patient_joined",
    "start",
    "end",
    "duration_seconds",
    "lobby_wait_seconds",
    "lobby_waits",
    "abandoned_patients",
    "providers",
    "staff",
    "patients",
)


def can_read_report(user: PortalIdentity, config: Configuration) -> bool:
    same_tenant = user.tenant_id == config.tenant_id
    return same_tenant and (
        user.is_admin or config.is_approver(user.upn, user.object_id) or REPORTS_APP_ROLE in user.roles
    )


@dataclass(frozen=True)
class Range:
    first: date
    last: date
    preset: int | None  # 7/30/90, or None for a custom range

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def parse_range(params: dict[str, str], *, today: date, retention_days: int) -> Range:
    """``days`` (7/30/90) or ``from``/``to`` (YYYY-MM-DD, UTC); never before the retention window."""
    earliest = today - timedelta(days=retention_days - 1)
    if params.get("from") or params.get("to"):
        try:
            first = date.fromisoformat(params.get("from") or "")
            last = date.fromisoformat(params.get("to") or today.isoformat())
        except ValueError:
            raise BadRequest(N_("Dates must look like 2026-12-31."), code="report_range") from None
        if first > last:
            raise BadRequest(N_("The start date is after the end date."), code="report_range")
        if (last - first).days >= MAX_RANGE_DAYS:
            raise BadRequest(N_("Choose at most %(days)s days.", days=MAX_RANGE_DAYS), code="report_range")
        return Range(max(first, earliest), min(last, today), None)
    try:
        preset = int(params.get("days") or 30)
    except ValueError:
        preset = 30
    preset = preset if preset in PRESETS else 30
    return Range(max(today - timedelta(days=preset - 1), earliest), today, preset)


@dataclass
class Report:
    config: Configuration
    preferences: ReportPreferences
    range: Range
    department: str  # "" = all
    departments: list[str]
    per_day: list[tuple[date, Totals]]
    totals: Totals
    computed_days: int  # days whose summary was computed for this page (not stored yet, or stale)
    as_of: datetime | None  # the oldest summary shown


class ReportService:
    def __init__(
        self,
        configurations: ConfigurationRepository,
        preferences: ReportPreferenceStore,
        facts: ReportFacts,
        days: ReportDays,
    ) -> None:
        self._configurations = configurations
        self._preferences = preferences
        self._facts = facts
        self._days = days

    # --- access ------------------------------------------------------------------------------------

    def readable(self, user: PortalIdentity) -> list[Configuration]:
        return [c for c in self._configurations.list_for_tenant(user.tenant_id) if can_read_report(user, c)]

    def configuration(self, user: PortalIdentity, configuration_id: str) -> Configuration:
        """A configuration whose report ``user`` may read; anything else (other tenants' too) is ``NotFound``."""
        try:
            config = self._configurations.get(user.tenant_id, configuration_id)
        except NotFound:
            raise NotFound(N_("There is no such report.")) from None
        if not can_read_report(user, config):
            raise NotFound(N_("There is no such report."))
        return config

    def preferences(self, config: Configuration) -> ReportPreferences:
        return self._preferences.get(config.id)

    def save_preferences(self, user: PortalIdentity, configuration_id: str, form: dict[str, str]) -> ReportPreferences:
        config = self.configuration(user, configuration_id)
        if not can_edit(user, config):
            raise Forbidden(N_("Only the configuration's administrators can change its report settings."))
        try:
            retention = int(form.get("retention_days", ""))
        except ValueError:
            retention = 0
        if not 1 <= retention <= 730:
            raise BadRequest(N_("Keep report data for 1 to 730 days."), code="report_retention")
        return self._preferences.save(
            config.id,
            ReportPreferences(
                analytics=form.get("analytics") == "on",
                retention_days=retention,
                show_csn=form.get("show_csn") == "on",
                geography=config.geography.value,
            ),
        )

    # --- the page ----------------------------------------------------------------------------------

    def report(self, config: Configuration, params: dict[str, str], *, now: datetime | None = None) -> Report:
        now = now or utcnow()
        preferences = self._preferences.get(config.id)
        span = parse_range(params, today=now.date(), retention_days=preferences.retention_days)
        department = params.get("department", "")
        stored = self._days.stored(config.geography, config.id, span.first, span.last)
        per_day: list[tuple[date, Totals]] = []
        departments: set[str] = set()
        computed = 0
        oldest: datetime | None = None
        read: PartitionCache = {}  # days computed here read each partition once (oldest day first)
        for day in span.days:
            summary, changed = stored[day]
            if not usable(summary, changed, now=now):
                summary = self._days.compute(config.geography, config.id, day, now=now, read=read)
                computed += 1
            departments.update(d for d in summary.departments if d)
            per_day.append((day, _filtered(summary, department)))
            if summary.computed is not None and (oldest is None or summary.computed < oldest):
                oldest = summary.computed
        return Report(
            config=config,
            preferences=preferences,
            range=span,
            department=department,
            departments=sorted(departments),
            per_day=per_day,
            totals=total(t for _, t in per_day),
            computed_days=computed,
            as_of=oldest,
        )

    def appointments(
        self, config: Configuration, day: date, *, department: str = "", after: str = ""
    ) -> tuple[list[ReportVisit], str | None]:
        """One page of a day's visits (``PAGE_ROWS``, of ``department`` if given), and the row key to continue after.

        Rows are read ``PAGE_ROWS`` at a time in row-key order: one query without a department filter; with one,
        as many as fill the page, at most ``MAX_PAGE_QUERIES`` (the department is inside each row, not in its key).
        """
        found: list[ReportVisit] = []
        cursor: str | None = after
        for _ in range(MAX_PAGE_QUERIES):
            rows, cursor = self._facts.page(config.geography, config.id, day, after=cursor or "", size=PAGE_ROWS)
            for n, row in enumerate(rows):
                visit = ReportVisit(row.visit, day, row.facts, summarize(row.facts))
                if department and visit.summary.department != department:
                    continue
                found.append(visit)
                if len(found) == PAGE_ROWS:
                    more = n < len(rows) - 1 or cursor is not None
                    return _by_start(found), (row.visit if more else None)
            if cursor is None:
                break
        return _by_start(found), cursor

    # --- export --------------------------------------------------------------------------------------

    def export_rows(
        self, config: Configuration, params: dict[str, str], *, now: datetime | None = None
    ) -> Iterator[dict[str, Any]]:
        """One row per visit of the range (by the day of its first fact), oldest day first."""
        now = now or utcnow()
        preferences = self._preferences.get(config.id)
        span = parse_range(params, today=now.date(), retention_days=preferences.retention_days)
        department = params.get("department", "")
        count = 0
        for visit in self._visits(config, span):
            if department and visit.summary.department != department:
                continue
            count += 1
            if count > MAX_EXPORT_ROWS:
                raise BadRequest(
                    N_(
                        "The range holds more than %(limit)s visits; export fewer days at a time.",
                        limit=MAX_EXPORT_ROWS,
                    ),
                    code="report_export_too_large",
                )
            yield export_row(visit, show_csn=preferences.show_csn)

    def _visits(self, config: Configuration, span: Range) -> Iterator[ReportVisit]:
        """Each partition read once: a sliding window of three days attributes visits across midnight (the day
        before the range only by its keys: which of the first day's visits began the day before is all it tells)."""
        window: dict[date, dict[str, VisitFacts]] = {}

        def load(day: date) -> dict[str, VisitFacts]:
            if day not in window:
                window[day] = {s.visit: s.facts for s in self._facts.day(config.geography, config.id, day)}
            return window[day]

        for day in span.days:
            previous = day - timedelta(days=1)
            before: Container[str] = (
                window[previous] if previous in window else self._facts.visits_of(config.geography, config.id, previous)
            )
            today, after = load(day), load(day + timedelta(days=1))
            for visit, facts in today.items():
                if visit in before:
                    continue  # belongs to the day before (its first fact is there)
                combined = merged(facts, after[visit]) if visit in after else facts
                yield ReportVisit(visit, day, combined, summarize(combined))
            window.pop(day - timedelta(days=1), None)


def _filtered(summary: DaySummary, department: str) -> Totals:
    if department:
        return summary.departments.get(department, Totals())
    return total(summary.departments.values())


def _iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _seconds(delta: timedelta | None) -> str:
    return "" if delta is None else str(round(delta.total_seconds()))


def appointment_id(visit: ReportVisit, *, show_csn: bool) -> str:
    return visit.facts.csn if show_csn and visit.facts.csn else visit.id


def export_row(visit: ReportVisit, *, show_csn: bool) -> dict[str, Any]:
    s = visit.summary
    return {
        "appointment_id": appointment_id(visit, show_csn=show_csn),
        "day": visit.day.isoformat(),
        "status": s.status.value,
        "department": s.department or "",
        "organizer": s.organizer or "",
        "first_launch": _iso(s.first_launch),
        "clinician_joined": _iso(s.clinician_joined),
        "patient_joined": _iso(s.patient_joined),
        "start": _iso(s.start),
        "end": _iso(s.ended),
        "duration_seconds": _seconds(s.duration),
        "lobby_wait_seconds": _seconds(s.median_wait),
        "lobby_waits": " ".join(_seconds(w) for w in s.lobby_waits),
        "abandoned_patients": str(s.abandoned_patients),
        "providers": str(s.attendants.get(Role.PROVIDER, 0)),
        "staff": str(s.attendants.get(Role.STAFF, 0)),
        "patients": str(s.attendants.get(Role.PATIENT, 0)),
    }


def to_csv(rows: Iterator[dict[str, Any]]) -> bytes:
    """UTF-8 with a byte-order mark (Excel reads the encoding from it); a cell that a spreadsheet would take
    for a formula is prefixed with an apostrophe."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _inert(v) for k, v in row.items()})
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_json(config: Configuration, rows: Iterator[dict[str, Any]], *, now: datetime) -> bytes:
    document = {
        "configuration": config.id,
        "organization": config.organization,
        "generatedAt": _iso(now),
        "timeZone": "UTC",
        "visits": list(rows),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _inert(value: Any) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _by_start(visits: list[ReportVisit]) -> list[ReportVisit]:
    """A page's visits in the order they began (rows without a time first, then by id)."""
    return sorted(visits, key=lambda v: (v.summary.first_seen or datetime.min.replace(tzinfo=UTC), v.id))
