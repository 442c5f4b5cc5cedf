"""Report facts folded into the visit row's write, copied to ``ReportVisits`` by the timers.

The writeback worker reads each event's visit row and writes it (presence). The event's report facts
(``facts_from_event``) ride in that same write, merged into the row's ``ReportFacts`` column per UTC day of the
event (``ReportFold.change_for``), so the usage report costs an event no Table operation and no crypto of its
own (the CSN, when a configuration opted in to show it, is sealed once per visit, for the row). The merge is
``merged``'s: duplicated and out-of-order events change nothing, and an event that adds nothing costs no write.

``ReportFlush`` copies the facts of the visit rows written since its last run into ``ReportVisits`` (one row
per visit and day, merged as before by ``ReportFacts.record``, so copying twice is harmless): run by
``report_upkeep`` before it computes the open days, and by ``sweep_expired_state`` before it deletes expired
visit rows (so no row is swept with facts not yet copied). The rows to copy are found by the Table's own
``Timestamp`` (one query per 1,000 rows) from a watermark kept in ``ReportDays`` (``copied_until``), less
``OVERLAP`` for clocks and writes in flight (a row copied already costs an insert refused and a read there, no
write); a watermark later than the copying instance's clock by more than ``OVERLAP`` is not trusted (every
live row is copied). A visit therefore appears in ``ReportVisits`` within one timer period (15 minutes) of its
events; the day summaries were already computed by that timer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

from azure.core.exceptions import HttpResponseError

from shared.kernel.clock import utcnow
from shared.kernel.errors import NotFound, SealedValueInvalid
from shared.kernel.identifiers import log_id
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.reports.days import ReportDays
from shared.reports.facts import VisitFacts, facts_from_event
from shared.reports.preferences import ReportPreferenceStore
from shared.reports.recorder import organizer_id, report_visit_id
from shared.reports.store import ReportFacts, columns_with, day_of, facts_columns, facts_from_columns
from shared.visits.events import Role, Source, VisitEvent
from shared.visits.model import Visit, evolve
from shared.visits.repository import LIFETIME, VisitRepository
from shared.writeback.worker import TargetResolver

logger = logging.getLogger(__name__)

CSN_PURPOSE = "Visits"  # with the geography, the visit key and "report": bound to the row's ReportFacts column
# Each copy starts this much before the last one began: rows whose write was in flight then, and the clocks'
# difference (the Table's Timestamp is the server's, the watermark ours; both NTP-synchronised, seconds apart).
OVERLAP = timedelta(minutes=1)

Change = Callable[[Visit], Visit | None]


@dataclass
class Folded:
    """A row's ``ReportFacts``: the facts per UTC day (decoded on demand) and the CSN, sealed for the row."""

    days: dict[str, Any] = field(default_factory=dict)  # "YYYY-MM-DD" -> columns of ``facts_columns``
    csn: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Folded:
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        days = data.get("days")
        csn = data.get("csn")
        return cls(
            {str(k): v for k, v in days.items() if isinstance(v, dict)} if isinstance(days, dict) else {},
            csn if isinstance(csn, str) and csn else None,
        )

    def dump(self) -> str:
        data: dict[str, Any] = {"days": self.days}
        if self.csn:
            data["csn"] = self.csn
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    def facts(self, day: str) -> VisitFacts:
        columns = self.days.get(day)
        return facts_from_columns(columns) if columns else VisitFacts()


def csn_purpose(geography: str, key: str) -> str:
    return f"{CSN_PURPOSE}/{geography}/{key}/report"


class ReportFold:
    """The change that folds one event's report facts into its visit row (None: nothing to record)."""

    def __init__(
        self,
        preferences: ReportPreferenceStore,
        configurations: TargetResolver,
        *,
        secret: str,
        sealer: Sealer,
    ) -> None:
        self._preferences = preferences
        self._configurations = configurations
        self._secret = secret
        self._sealer = sealer

    def change_for(self, event: VisitEvent) -> Change | None:
        """``event`` opened (its sealed references in memory). None when the configuration is unknown, its
        analytics is off, or the event is older than its report keeps."""
        try:
            self._configurations.target_for(event.configuration_id)
        except NotFound:
            return None
        preferences = self._preferences.cached(event.configuration_id, geography=event.geography)
        if not preferences.analytics:
            return None
        day = day_of(event.occurred_at)
        if day < utcnow().date() - timedelta(days=preferences.retention_days - 1):
            return None  # older than the report keeps (a message replayed from the poison queue long after)
        organizer = None  # a launch's fact: the clinician who launched (``facts_from_event`` reads it of launches only)
        if event.source is Source.LAUNCH and event.role is Role.PROVIDER and event.participant:
            organizer = organizer_id(self._secret, event.configuration_id, event.participant)
        facts = facts_from_event(event, organizer=organizer)  # the CSN apart: sealed for the row, not per day
        return self._fold(day.isoformat(), facts, event.csn if preferences.show_csn else None)

    def _fold(self, day: str, facts: VisitFacts, csn: str | None) -> Change:
        def change(visit: Visit) -> Visit | None:
            folded = Folded.parse(visit.report)
            columns = columns_with(folded.days.get(day), facts)
            sealed = self._csn(visit, folded.csn, csn)
            if columns is None and sealed == folded.csn:
                return None
            if columns is not None or day not in folded.days:
                folded.days[day] = columns or facts_columns(VisitFacts())  # a CSN alone still makes the day
            folded.csn = sealed
            return evolve(visit, report=folded.dump())

        return change

    def _csn(self, visit: Visit, stored: str | None, new: str | None) -> str | None:
        """The row's sealed CSN after this event: the smallest seen (``merged``'s rule), sealed only when it
        changes (a stored value that does not open is replaced)."""
        if not new:
            return stored
        purpose = csn_purpose(visit.geography.value, visit.key)
        if stored:
            try:
                if self._sealer.open(stored, purpose=purpose) <= new:
                    return stored
            except SealedValueInvalid:
                pass
        return self._sealer.seal(new, purpose=purpose)


class ReportFlush:
    """Copies the facts folded into visit rows into ``ReportVisits`` (see the module's docstring)."""

    def __init__(
        self,
        visits: VisitRepository,
        facts: ReportFacts,
        days: ReportDays,
        preferences: ReportPreferenceStore,
        *,
        secret: str,
        sealer: Sealer,
    ) -> None:
        self._visits = visits
        self._facts = facts
        self._days = days
        self._preferences = preferences
        self._secret = secret
        self._sealer = sealer

    def flush(self, geography: Geography) -> int:
        """Copy the rows written since the last copy (less ``OVERLAP``); the number of report rows changed.
        A storage failure raises before the watermark moves: the next run copies those rows again."""
        started = utcnow()
        until = self._days.copied_until(geography)
        if until is not None and until > started + OVERLAP:
            # Marked by a clock that ran ahead (here or on another instance) by more than the overlap covers:
            # trusting it would skip every row written until then. Copying twice is harmless: copy every live row.
            logger.warning("Report copy watermark %s is ahead of this clock: copying every live visit row", until)
            until = None
        since = until - OVERLAP if until is not None else started - LIFETIME - OVERLAP
        changed = 0
        touched: dict[str, set[date]] = {}  # per configuration, the days whose summaries the copies may change
        try:
            for key, configuration_id, text in self._visits.report_facts_since(geography, since):
                try:
                    changed += self.copy(geography, key, configuration_id, text, touched=touched)
                except HttpResponseError as exc:
                    if not _refused_for_good(exc):
                        raise  # storage unavailable or busy: the watermark stays, the next run copies again
                    # One row the service refuses for good (e.g. too large) must not hold up every other visit's
                    # copy, the watermark and the sweep of expired visit rows behind it.
                    logger.error("Report facts of visit %s not copied: refused (%s)", log_id(key), exc.status_code)
        finally:
            # After the facts, and whether or not the copy got through: a copy run again finds what got through
            # unchanged and would mark nothing. (A process killed before this line leaves a summary stale until
            # the repair of ``shared.reports.days.SETTLED``.)
            for configuration_id, days in touched.items():
                self._days.mark_touched(geography, configuration_id, days, now=utcnow())
        self._days.mark_copied(geography, started)
        return changed

    def copy(
        self, geography: Geography, key: str, configuration_id: str, text: str, *, touched: dict[str, set[date]]
    ) -> int:
        """Merge one visit row's folded facts into its ``ReportVisits`` rows (one per day). When any changed, every
        day of the visit goes into ``touched``: the visit counts on the day of its first fact, and its other days'
        facts (a visit across midnight) change that day's summary too."""
        preferences = self._preferences.cached(configuration_id, geography=geography.value)
        if preferences.deleted or not preferences.analytics:
            return 0  # switched off (or the configuration deleted) since: nothing more is recorded
        folded = Folded.parse(text)
        csn = None
        if folded.csn:
            try:
                csn = self._sealer.open(folded.csn, purpose=csn_purpose(geography.value, key))
            except SealedValueInvalid:
                csn = None  # a retired key: the report shows the pseudonymous id
        oldest = utcnow().date() - timedelta(days=preferences.retention_days - 1)
        visit = report_visit_id(self._secret, configuration_id, key)
        changed = 0
        days = [day for day in map(date.fromisoformat, sorted(folded.days)) if day >= oldest]
        try:
            for day in days:
                facts = replace(folded.facts(day.isoformat()), csn=csn)
                if self._facts.record(geography, configuration_id, visit, day, facts):
                    self._days.touched(geography, configuration_id, day, now=utcnow())
                    changed += 1
        finally:
            if changed:  # also when a later day's write failed: what got through is marked
                touched.setdefault(configuration_id, set()).update(days)
        return changed


def _refused_for_good(exc: HttpResponseError) -> bool:
    """A 4xx the service will give again (not a timeout, conflict, precondition or throttling)."""
    status = exc.status_code or 0
    return 400 <= status < 500 and status not in (408, 409, 412, 429)
