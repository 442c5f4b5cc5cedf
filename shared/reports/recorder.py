"""Report facts of one queue message, recorded straight into ``ReportVisits``.

The worker folds each event's facts into the visit row it writes anyway (``shared.reports.fold``), and the
timers copy them from there. A message the worker fails permanently may have written no visit row (its
visit gone, a seal that does not open): ``connector/events.py`` records those here, so the report still
counts what the event says. Launch events are opened from their seal (the department, the organizer and, if
opted in, the CSN); Graph roster events need nothing opened. An event whose configuration is unknown, has
analytics off, or that does not parse or open is not recorded. A storage failure raises: the message is
retried, and recording again is harmless (facts merge idempotently).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared.kernel.clock import utcnow
from shared.kernel.errors import InvalidEvent, NotFound, SealedValueInvalid
from shared.kernel.identifiers import keyed_id, log_id
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.reports.days import ReportDays
from shared.reports.facts import facts_from_event
from shared.reports.preferences import ReportPreferenceStore
from shared.reports.store import ReportFacts, day_of
from shared.visits.events import Role, VisitEvent
from shared.visits.sealed_context import open_event
from shared.writeback.worker import TargetResolver

logger = logging.getLogger(__name__)


def report_visit_id(secret: str, configuration_id: str, visit_key: str) -> str:
    """The visit's id in the report: keyed, and unlike the visit's own key (so rows cannot be joined)."""
    return keyed_id(secret, "report-visit", configuration_id, visit_key)[:32]


def organizer_id(secret: str, configuration_id: str, participant: str) -> str:
    return keyed_id(secret, "report-organizer", configuration_id, participant)[:16]


class FactRecorder:
    def __init__(
        self,
        facts: ReportFacts,
        days: ReportDays,
        preferences: ReportPreferenceStore,
        configurations: TargetResolver,
        *,
        secret: str,
        sealer: Sealer,
    ) -> None:
        self._facts = facts
        self._days = days
        self._preferences = preferences
        self._configurations = configurations
        self._secret = secret
        self._sealer = sealer

    def record(self, body: str) -> bool:
        """Record what the message says; True when the report changed."""
        try:
            event = VisitEvent.from_json(body)
            geography = Geography(event.geography)
        except (InvalidEvent, ValueError):
            return False  # the worker records it as a failure
        try:
            self._configurations.target_for(event.configuration_id)
        except NotFound:
            return False
        preferences = self._preferences.cached(event.configuration_id, geography=geography.value)
        if not preferences.analytics:
            return False  # decided before opening the seal: with analytics off, an event costs the recorder no crypto
        try:
            event = open_event(self._sealer, event)
        except SealedValueInvalid:
            return False  # the worker records it as a failure
        return self.record_event(
            geography, event, retention_days=preferences.retention_days, keep_csn=preferences.show_csn
        )

    def record_event(self, geography: Geography, event: VisitEvent, *, retention_days: int, keep_csn: bool) -> bool:
        organizer = None
        if event.role is Role.PROVIDER and event.participant:
            organizer = organizer_id(self._secret, event.configuration_id, event.participant)
        day = day_of(event.occurred_at)
        if day < utcnow().date() - timedelta(days=retention_days - 1):
            return False  # older than the report keeps (a message replayed from the poison queue long after)
        facts = facts_from_event(event, organizer=organizer, keep_csn=keep_csn)
        visit = report_visit_id(self._secret, event.configuration_id, event.visit_key)
        changed = self._facts.record(geography, event.configuration_id, visit, day, facts)
        if changed:
            self._days.touched(geography, event.configuration_id, day, now=utcnow())
            # The visit counts on the day of its first fact: this one's, or the day before when it began there (a
            # visit across midnight); and a late fact older than the others moves it off the day after.
            days = [day] + [
                other
                for other in (day - timedelta(days=1), day + timedelta(days=1))
                if self._facts.has(geography, event.configuration_id, visit, other)
            ]
            self._days.mark_touched(geography, event.configuration_id, days, now=utcnow())
            logger.debug("Report facts of visit %s changed", log_id(visit))
        return changed
