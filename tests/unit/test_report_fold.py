"""Folding an event's report facts into its visit row: what the change writes, and when it writes nothing."""

from __future__ import annotations

import json
import os
import random
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.kernel.errors import NotFound
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.reports.facts import MAX_ATTENDEES, AttendeeFacts, VisitFacts, facts_from_event, merged
from shared.reports.fold import Folded, ReportFold, csn_purpose
from shared.reports.preferences import ReportPreferences
from shared.reports.store import columns_with, day_of, facts_columns, facts_from_columns
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import Visit


class CountingSealer(Sealer):
    def __init__(self) -> None:
        super().__init__([os.urandom(32)])
        self.sealed = 0

    def seal(self, plaintext: str, *, purpose: str) -> str:
        self.sealed += 1
        return super().seal(plaintext, purpose=purpose)


class Preferences:
    def __init__(self, **values: Any) -> None:
        self.preferences = ReportPreferences(**values)

    def cached(self, configuration_id: str, *, geography: str | None = None) -> ReportPreferences:
        return self.preferences


class Targets:
    def __init__(self, known: bool = True) -> None:
        self.known = known

    def target_for(self, configuration_id: str) -> Any:
        if not self.known:
            raise NotFound("gone")
        return object()


NOW = datetime.now(UTC).replace(microsecond=0)


def visit() -> Visit:
    return Visit(Geography.AMERICAS, "k" * 64, "cfg", NOW + timedelta(hours=20))


def event(kind: EventKind, role: Role, minutes: float, *, source: Source = Source.GRAPH, **refs: str) -> VisitEvent:
    return VisitEvent(
        "cfg", "americas", "k" * 64, kind, role, NOW - timedelta(minutes=minutes), source,
        attendee=None if source is Source.LAUNCH else f"leg-{role.value}", **refs,  # type: ignore[arg-type]
    )  # fmt: skip


def fold(sealer: Sealer | None = None, targets: Targets | None = None, **preferences: Any) -> ReportFold:
    return ReportFold(
        Preferences(**preferences),  # type: ignore[arg-type]
        targets or Targets(),
        secret="s" * 32,
        sealer=sealer or CountingSealer(),
    )


def apply(recorder: ReportFold, row: Visit, *events: VisitEvent) -> Visit:
    for e in events:
        change = recorder.change_for(e)
        assert change is not None
        row = change(row) or row
    return row


def test_the_folded_facts_are_the_merged_facts_of_the_events_in_any_order_and_a_repeat_writes_nothing() -> None:
    recorder = fold()
    events = [
        event(EventKind.CONNECTED, Role.PROVIDER, 30, source=Source.LAUNCH, participant="Practitioner/1"),
        event(EventKind.LOBBY, Role.PATIENT, 29),
        event(EventKind.CONNECTED, Role.PATIENT, 27),
        event(EventKind.DISCONNECTED, Role.PATIENT, 5),
    ]
    forwards = apply(recorder, visit(), *events)
    backwards = apply(recorder, visit(), *reversed(events))
    day = NOW.date().isoformat() if (NOW - timedelta(minutes=30)).date() == NOW.date() else None
    folded = Folded.parse(forwards.report)
    assert folded.days.keys() == Folded.parse(backwards.report).days.keys()
    for name in folded.days:
        assert folded.facts(name) == Folded.parse(backwards.report).facts(name)
    if day is not None:  # (not across midnight) the day's facts are what the report merges from the events
        expected = facts_from_event(events[1])
        for e in events[2:]:
            expected = merged(expected, facts_from_event(e))
        assert folded.facts(day).attendees == expected.attendees
    for e in events:  # every fact again: nothing changes, so the worker's write carries nothing new
        change = recorder.change_for(e)
        assert change is not None and change(forwards) is None


def test_an_events_facts_merged_into_the_columns_are_the_columns_of_all_the_facts_merged() -> None:
    """``columns_with`` decodes only the attendee an event names; what it stores is what decoding every fact,
    merging and encoding them all would store, for any order of events, repeats, launches and new attendees."""
    rng = random.Random(20261206)
    roles = list(Role)
    for _ in range(300):
        columns: dict[str, str] | None = None
        everything = VisitFacts()
        for _ in range(rng.randrange(1, 12)):
            role = rng.choice(roles)
            source = Source.LAUNCH if rng.random() < 0.15 else Source.GRAPH
            e = VisitEvent(
                "cfg", "americas", "k" * 64, rng.choice(list(EventKind)), role,
                NOW - timedelta(seconds=rng.randrange(0, 3600)), source,
                attendee=None if source is Source.LAUNCH else rng.choice(["a", "b", "c", None]),
                interpreter=source is Source.GRAPH and rng.random() < 0.1,
            )  # fmt: skip
            facts = facts_from_event(e, organizer="org" if role is Role.PROVIDER else None)
            merged_all = merged(everything, facts)
            expected = None if merged_all == everything else facts_columns(merged_all)
            assert columns_with(columns, facts) == expected
            columns, everything = expected or columns, merged_all
        assert facts_from_columns(columns or {}) == everything


def test_a_new_attendee_past_the_rows_limit_and_an_entry_that_does_not_read_are_no_facts() -> None:
    full = VisitFacts(attendees={f"patient:{n}": AttendeeFacts(Role.PATIENT, lobby=NOW) for n in range(MAX_ATTENDEES)})
    one_more = VisitFacts(attendees={"patient:new": AttendeeFacts(Role.PATIENT, lobby=NOW)})
    assert columns_with(facts_columns(full), one_more) is None  # the first MAX_ATTENDEES are kept
    again = VisitFacts(attendees={"patient:0": AttendeeFacts(Role.PATIENT, left=NOW)})
    merged_in = columns_with(facts_columns(full), again)
    assert merged_in is not None and facts_from_columns(merged_in) == merged(full, again)
    garbled = {**facts_columns(VisitFacts()), "Attendees": '{"x":["nobody",1,2,3,4],"y":"z"}'}
    written = columns_with(garbled, one_more)
    assert written is not None and json.loads(written["Attendees"]).keys() == {"patient:new"}


def test_an_attendee_whose_stored_times_do_not_read_merges_as_if_it_had_none() -> None:
    """The merge works on the stored milliseconds: a time that is no integer (a boolean, a text, a fraction)
    reads as none there too, as ``facts_from_columns`` reads it."""
    ms = 1_764_000_000_000
    odd = {**facts_columns(VisitFacts()), "Attendees": json.dumps({"patient": ["patient", "x", True, 1.5, ms]})}
    for fact in (AttendeeFacts(Role.PATIENT, joined=NOW, present=NOW), AttendeeFacts(Role.PROVIDER, left=NOW)):
        facts = VisitFacts(attendees={"patient": fact})
        expected = merged(facts_from_columns(odd), facts)
        assert facts_from_columns(columns_with(odd, facts) or {}) == expected
    # A fact that moves none of the times (an older leave) changes nothing, the unreadable times aside.
    older = VisitFacts(attendees={"patient": AttendeeFacts(Role.PATIENT, left=datetime.fromtimestamp(1, UTC))})
    assert columns_with(odd, older) is None


def test_a_fact_that_brings_only_the_csn_still_makes_the_visits_day() -> None:
    """A guest interpreter's fact is no attendee's, but with the CSN shown it names the visit's CSN: the row keeps
    it with the day (empty), so the report's copy makes the visit's row for that day."""
    interpreter = replace(event(EventKind.CONNECTED, Role.PATIENT, 1, csn="CSN-4242"), interpreter=True)
    row = apply(fold(show_csn=True), visit(), interpreter)
    folded = Folded.parse(row.report)
    assert folded.csn and folded.days == {day_of(interpreter.occurred_at).isoformat(): facts_columns(VisitFacts())}


def test_nothing_is_folded_with_analytics_off_for_an_unknown_configuration_or_past_the_retention() -> None:
    e = event(EventKind.LOBBY, Role.PATIENT, 1)
    assert fold(analytics=False).change_for(e) is None
    assert fold(targets=Targets(known=False)).change_for(e) is None
    old = event(EventKind.LOBBY, Role.PATIENT, 60 * 24 * 31)
    assert fold(retention_days=30).change_for(old) is None
    assert fold(retention_days=90).change_for(old) is not None


def test_the_csn_is_folded_only_when_opted_in_sealed_for_the_row_and_sealed_once() -> None:
    launch = event(
        EventKind.CONNECTED, Role.PROVIDER, 3, source=Source.LAUNCH, participant="Practitioner/1", csn="CSN-4242"
    )
    patient = event(EventKind.LOBBY, Role.PATIENT, 2, source=Source.LAUNCH, participant="Patient/2", csn="CSN-4242")
    sealer = CountingSealer()
    assert Folded.parse(apply(fold(sealer), visit(), launch).report).csn is None  # not opted in
    row = apply(fold(sealer, show_csn=True), visit(), launch, patient)
    assert sealer.sealed == 1  # the second launch names the same CSN: the sealed value is kept
    stored = Folded.parse(row.report).csn
    assert stored and "CSN-4242" not in (row.report or "").replace(stored, "")
    assert sealer.open(stored, purpose=csn_purpose("americas", "k" * 64)) == "CSN-4242"
    smaller = event(EventKind.CONNECTED, Role.PATIENT, 1, source=Source.LAUNCH, participant="Patient/2", csn="CSN-1111")
    again = apply(fold(sealer, show_csn=True), row, smaller)  # a smaller CSN: the report's rule keeps the smaller
    assert sealer.open(Folded.parse(again.report).csn or "", purpose=csn_purpose("americas", "k" * 64)) == "CSN-1111"


DAY = date(2026, 12, 6)


class _Rows:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.asked: list[datetime] = []

    def report_facts_since(self, geography: Geography, since: datetime) -> list[tuple[str, str, str]]:
        self.asked.append(since)
        return [(key, "cfg", "{}") for key in self.keys]


class _Days:
    def __init__(self, until: datetime | None = None) -> None:
        self.marked: list[datetime] = []
        self.touched: set[tuple[str, date]] = set()
        self.until = until

    def copied_until(self, geography: Geography) -> datetime | None:
        return self.until

    def mark_copied(self, geography: Geography, until: datetime) -> None:
        self.marked.append(until)

    def mark_touched(self, geography: Geography, configuration_id: str, days: set[date], *, now: datetime) -> None:
        self.touched.update((configuration_id, day) for day in days)


def test_a_row_the_service_refuses_for_good_does_not_hold_up_the_others_or_the_watermark() -> None:
    from azure.core.exceptions import HttpResponseError

    from shared.reports.fold import ReportFlush

    class Refused(HttpResponseError):
        def __init__(self, status: int) -> None:
            super().__init__(message=f"HTTP {status}")
            self.status_code = status

    copied: list[str] = []

    class Flush(ReportFlush):
        def copy(
            self, geography: Geography, key: str, configuration_id: str, text: str, *, touched: dict[str, set[date]]
        ) -> int:
            if key == "too-large":
                raise Refused(400)
            if key == "busy":
                raise Refused(503)
            copied.append(key)
            touched.setdefault(configuration_id, set()).add(DAY)
            return 1

    days = _Days()
    flush = Flush(_Rows(["a", "too-large", "b"]), None, days, None, secret="s", sealer=CountingSealer())  # type: ignore[arg-type]
    assert flush.flush(Geography.EMEA) == 2 and copied == ["a", "b"] and len(days.marked) == 1
    assert days.touched == {("cfg", DAY)}
    stalled_days = _Days()
    stalled = Flush(_Rows(["c", "busy", "d"]), None, stalled_days, None, secret="s", sealer=CountingSealer())  # type: ignore[arg-type]
    try:
        stalled.flush(Geography.EMEA)
    except HttpResponseError:
        pass  # storage busy: raised, so the watermark stays and the next run copies again
    else:
        raise AssertionError("a retryable failure must raise")
    assert stalled_days.marked == [] and stalled_days.touched == {("cfg", DAY)}  # what got through is marked


def test_the_copy_starts_at_its_watermark_but_copies_every_live_row_when_the_watermark_is_ahead_of_the_clock() -> None:
    """A watermark marked by a clock that ran ahead (another instance's, or a test's fake one) would skip every row
    written until then; the copy is idempotent, so such a watermark is ignored."""
    from shared.reports.fold import OVERLAP, ReportFlush
    from shared.visits.repository import LIFETIME

    class Flush(ReportFlush):
        def copy(
            self, geography: Geography, key: str, configuration_id: str, text: str, *, touched: dict[str, set[date]]
        ) -> int:
            return 1

    now = datetime.now(UTC)
    for until, expected in (
        (now - timedelta(minutes=15), now - timedelta(minutes=15) - OVERLAP),  # the last run's start
        (now + timedelta(seconds=30), now + timedelta(seconds=30) - OVERLAP),  # clocks a little apart: the overlap
        (now + timedelta(hours=10), None),  # ahead of this clock: every live row
        (None, None),  # never copied: every live row
    ):
        rows, days = _Rows(["a"]), _Days(until)
        flush = Flush(rows, None, days, None, secret="s", sealer=CountingSealer())  # type: ignore[arg-type]
        assert flush.flush(Geography.EMEA) == 1
        [since] = rows.asked
        [marked] = days.marked
        if expected is not None:
            assert since == expected
        else:
            assert marked - LIFETIME - OVERLAP == since  # the whole lifetime of a visit row, from this run's start
        assert now <= marked <= datetime.now(UTC)  # the new watermark is this run's own start
