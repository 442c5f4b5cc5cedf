"""Report facts from event sequences: completed, no-show, abandoned, group visits, any order, any repetition."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import reduce

import pytest

from shared.reports.facts import Status, VisitFacts, facts_from_event, merged, summarize
from shared.visits.events import EventKind, Role, Source, VisitEvent

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
L, C, D = EventKind.LOBBY, EventKind.CONNECTED, EventKind.DISCONNECTED
PROVIDER, PATIENT, STAFF = Role.PROVIDER, Role.PATIENT, Role.STAFF


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def graph(role: Role, kind: EventKind, minutes: float, attendee: str | None = None) -> VisitEvent:
    return VisitEvent("cfg", "americas", "visit", kind, role, at(minutes), Source.GRAPH, attendee=attendee)


def launch(role: Role, minutes: float, department: str | None = None) -> VisitEvent:
    kind = C if role is PROVIDER else L
    return VisitEvent("cfg", "americas", "visit", kind, role, at(minutes), Source.LAUNCH, department=department)


def facts_of(events: list[VisitEvent]) -> VisitFacts:
    return reduce(
        merged,
        (facts_from_event(e, organizer="org-1" if e.role is PROVIDER else None) for e in events),
        VisitFacts(),
    )


COMPLETED = [
    launch(PROVIDER, 0, department="10501"),
    launch(PATIENT, 1),
    graph(PROVIDER, C, 0.5),
    graph(PATIENT, L, 1.5),
    graph(PATIENT, C, 3.5),
    graph(PATIENT, D, 20),
    graph(PROVIDER, D, 21),
]


def test_a_completed_visit_has_its_start_duration_wait_department_and_organizer() -> None:
    summary = summarize(facts_of(COMPLETED))
    assert summary.status is Status.COMPLETED
    assert summary.first_launch == at(0)
    assert summary.clinician_joined == at(0.5)
    assert summary.patient_joined == at(3.5)
    assert summary.start == at(3.5)  # both a clinician and the patient are in
    assert summary.ended == at(21)
    assert summary.duration == timedelta(minutes=17.5)
    assert summary.lobby_waits == (timedelta(minutes=2),)
    assert summary.attendants[PROVIDER] == 1 and summary.attendants[PATIENT] == 1
    assert summary.department == "10501"
    assert summary.organizer == "org-1"


@pytest.mark.parametrize("seed", range(25))
def test_order_and_duplicates_do_not_change_the_facts(seed: int) -> None:
    shuffled = random.Random(seed).sample(COMPLETED * 3, k=len(COMPLETED) * 3)
    assert facts_of(shuffled) == facts_of(COMPLETED)
    assert summarize(facts_of(shuffled)) == summarize(facts_of(COMPLETED))


def test_merging_is_idempotent_and_commutative() -> None:
    a, b = facts_of(COMPLETED[:3]), facts_of(COMPLETED[3:])
    assert merged(a, b) == merged(b, a)
    assert merged(merged(a, b), b) == merged(a, b)


def test_no_show_a_clinician_joined_no_patient_did_and_the_meeting_ended() -> None:
    events = [launch(PROVIDER, 0), graph(PROVIDER, C, 0.2), graph(PROVIDER, D, 15)]
    summary = summarize(facts_of(events))
    assert summary.status is Status.NO_SHOW
    assert summary.start is None and summary.duration is None
    assert summary.ended == at(15)


def test_waiting_clinician_is_in_progress_until_the_meeting_ends() -> None:
    events = [launch(PROVIDER, 0), graph(PROVIDER, C, 0.2)]
    assert summarize(facts_of(events)).status is Status.IN_PROGRESS


def test_abandoned_a_patient_waited_and_left_before_admission() -> None:
    events = [launch(PATIENT, 0), graph(PATIENT, L, 0.5), graph(PATIENT, D, 9)]
    summary = summarize(facts_of(events))
    assert summary.status is Status.ABANDONED
    assert summary.abandoned_patients == 1
    assert summary.lobby_waits == ()


def test_a_patient_who_leaves_the_lobby_while_the_clinician_waits_is_abandoned_once_all_leave() -> None:
    events = [graph(PROVIDER, C, 0), graph(PATIENT, L, 1), graph(PATIENT, D, 6)]
    assert summarize(facts_of(events)).status is Status.IN_PROGRESS  # the clinician is still there
    summary = summarize(facts_of([*events, graph(PROVIDER, D, 10)]))
    assert summary.status is Status.ABANDONED


def test_a_leave_before_a_join_in_the_stream_does_not_end_the_meeting_early() -> None:
    # Out of order: the patient's leave is delivered before their admission; the facts are the same.
    events = [graph(PROVIDER, C, 0), graph(PATIENT, D, 30), graph(PATIENT, L, 1), graph(PATIENT, C, 2)]
    summary = summarize(facts_of(events))
    assert summary.status is Status.COMPLETED
    assert summary.ended is None  # the provider has not left
    summary = summarize(facts_of([*events, graph(PROVIDER, D, 31)]))
    assert summary.ended == at(31) and summary.duration == timedelta(minutes=29)


def test_a_rejoin_after_leaving_keeps_the_attendee_present() -> None:
    events = [graph(PROVIDER, C, 0), graph(PROVIDER, D, 5), graph(PROVIDER, C, 6)]
    summary = summarize(facts_of(events))
    assert summary.ended is None and summary.status is Status.IN_PROGRESS


def test_group_visit_facts_per_patient() -> None:
    events = [
        launch(PROVIDER, 0, department="20100"),
        graph(PROVIDER, C, 0.1, "p1"),
        graph(STAFF, C, 0.2, "s1"),
        graph(PATIENT, L, 1, "a"),
        graph(PATIENT, L, 2, "b"),
        graph(PATIENT, L, 3, "c"),
        graph(PATIENT, C, 4, "a"),  # waited 3 min
        graph(PATIENT, C, 4, "b"),  # waited 2 min
        graph(PATIENT, D, 6, "c"),  # left the lobby: abandoned
        graph(PATIENT, D, 30, "a"),
        graph(PATIENT, D, 30, "b"),
        graph(STAFF, D, 31, "s1"),
        graph(PROVIDER, D, 31, "p1"),
    ]
    for seed in range(5):
        summary = summarize(facts_of(random.Random(seed).sample(events, k=len(events))))
        assert summary.status is Status.COMPLETED
        assert sorted(summary.lobby_waits) == [timedelta(minutes=2), timedelta(minutes=3)]
        assert summary.median_wait == timedelta(minutes=2.5)
        assert summary.abandoned_patients == 1
        assert summary.attendants == {PROVIDER: 1, STAFF: 1, PATIENT: 2}
        assert summary.start == at(4) and summary.ended == at(31)
        assert summary.department == "20100"


def test_the_csn_is_kept_only_when_asked() -> None:
    event = VisitEvent("cfg", "americas", "visit", C, PROVIDER, at(0), Source.LAUNCH, csn="123456")
    assert facts_from_event(event).csn is None
    assert facts_from_event(event, keep_csn=True).csn == "123456"


def test_department_comes_from_the_earliest_provider_launch_naming_one() -> None:
    events = [launch(PATIENT, 0, department="patient-dept"), launch(PROVIDER, 1), launch(PROVIDER, 2, department="d2")]
    assert summarize(facts_of(events)).department == "d2"
    assert summarize(facts_of(events[:2])).department == "patient-dept"
