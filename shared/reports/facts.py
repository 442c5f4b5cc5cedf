"""Report facts: what one visit's events say, merged so that order and repetition do not matter.

A visit's facts are milestones, each kept as the earliest or the latest of what the events said:

- per role, its earliest launch (and for the provider's launch the organizer and department it names);
- per attendee (a Graph call participant, or the role when events name no participant): the first time in
  the lobby, the first time in the meeting, the last time present and the last time gone (a guest interpreter
  is not an attendee here: they are no patient).

``merged`` is commutative, associative and idempotent (a join-semilattice), so duplicated and out-of-order
events give the same facts; ``summarize`` derives the report's columns from them (pure, no clock).
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from shared.visits.events import EventKind, Role, Source, VisitEvent

CLINICIANS = frozenset({Role.PROVIDER, Role.STAFF})
MAX_ATTENDEES = 200  # keeps a row far below Table Storage's 64 KiB per property


class Status(enum.StrEnum):
    COMPLETED = "completed"  # a clinician and a patient were in the meeting together
    NO_SHOW = "no_show"  # a clinician joined, no patient did, and the meeting ended
    ABANDONED = "abandoned"  # a patient waited in the lobby and left before anyone admitted them
    IN_PROGRESS = "in_progress"  # none of the above yet: the meeting has not ended


@dataclass(frozen=True)
class AttendeeFacts:
    role: Role
    lobby: datetime | None = None  # first time in the lobby
    joined: datetime | None = None  # first time in the meeting (admitted, or joined directly)
    present: datetime | None = None  # last time seen in the lobby or the meeting
    left: datetime | None = None  # last time seen leaving


@dataclass(frozen=True)
class LaunchFacts:
    at: datetime
    organizer: str | None = None  # keyed id of the clinician who launched (provider launches)
    department: str | None = None  # departmentId the EHR confirmed


@dataclass(frozen=True)
class VisitFacts:
    launches: Mapping[Role, LaunchFacts] = field(default_factory=dict)
    attendees: Mapping[str, AttendeeFacts] = field(default_factory=dict)
    csn: str | None = None  # only when the configuration opted in; sealed at rest


def facts_from_event(event: VisitEvent, *, organizer: str | None = None, keep_csn: bool = False) -> VisitFacts:
    """The facts one event states. Launch events are launches (who launched, when, which department);
    Graph events are presence (lobby, in meeting, gone) of one attendee."""
    at = to_milliseconds(event.occurred_at)
    csn = event.csn if keep_csn else None
    if event.source is Source.LAUNCH:
        launch = LaunchFacts(at, organizer if event.role is Role.PROVIDER else None, event.department)
        return VisitFacts(launches={event.role: launch}, csn=csn)
    if event.interpreter:
        # A guest interpreter joins as an anonymous "patient" in Teams' terms: counted as one, a clinician and an
        # interpreter alone would make a completed visit and the interpreter's wait a patient's. Not counted.
        return VisitFacts(csn=csn)
    attendee = f"{event.role.value}:{event.attendee}" if event.attendee else event.role.value
    if event.kind is EventKind.DISCONNECTED:
        facts = AttendeeFacts(event.role, left=at)
    elif event.kind is EventKind.LOBBY:
        facts = AttendeeFacts(event.role, lobby=at, present=at)
    else:
        facts = AttendeeFacts(event.role, joined=at, present=at)
    return VisitFacts(attendees={attendee: facts}, csn=csn)


def to_milliseconds(moment: datetime) -> datetime:
    """UTC, to the millisecond: what a row keeps, so a fact read back equals the fact written."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def merged(a: VisitFacts, b: VisitFacts) -> VisitFacts:
    """The facts of both: earliest launches and first times, latest presence and leaving."""
    launches = dict(a.launches)
    for role, launch in b.launches.items():
        launches[role] = _earlier_launch(launches.get(role), launch)
    attendees = dict(a.attendees)
    for key, facts in b.attendees.items():
        current = attendees.get(key)
        if current is None:
            if len(attendees) < MAX_ATTENDEES:
                attendees[key] = facts
            continue
        attendees[key] = merged_attendee(current, facts)
    csn = min(x for x in (a.csn, b.csn) if x) if (a.csn or b.csn) else None
    return VisitFacts(launches=launches, attendees=attendees, csn=csn)


def merged_attendee(current: AttendeeFacts, facts: AttendeeFacts) -> AttendeeFacts:
    """One attendee's facts from two accounts of them: first times the earliest, last times the latest."""
    return AttendeeFacts(
        role=min(current.role, facts.role),
        lobby=earlier(current.lobby, facts.lobby),
        joined=earlier(current.joined, facts.joined),
        present=later(current.present, facts.present),
        left=later(current.left, facts.left),
    )


def _earlier_launch(current: LaunchFacts | None, new: LaunchFacts) -> LaunchFacts:
    """The earliest launch; its organizer and department, filled from a later launch only where it named none."""
    if current is None:
        return new
    first, second = sorted((current, new), key=lambda x: (x.at, x.organizer or "", x.department or ""))
    return replace(
        first, organizer=first.organizer or second.organizer, department=first.department or second.department
    )


Moment = TypeVar("Moment", datetime, int)  # a time, or its milliseconds as a report row stores it


def earlier(a: Moment | None, b: Moment | None) -> Moment | None:
    """The earlier of two moments, either of which may be unknown (None)."""
    return b if a is None else a if b is None else min(a, b)


def later(a: Moment | None, b: Moment | None) -> Moment | None:
    """The later of two moments, either of which may be unknown (None)."""
    return b if a is None else a if b is None else max(a, b)


# --- the report's columns ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VisitSummary:
    status: Status
    first_launch: datetime | None
    clinician_joined: datetime | None
    patient_joined: datetime | None
    start: datetime | None  # when a clinician and a patient were first both in the meeting
    ended: datetime | None  # the meeting's end: the last one left and nobody is still there
    last_leave: datetime | None
    duration: timedelta | None  # start → end
    lobby_waits: tuple[timedelta, ...]  # per admitted patient: lobby → in meeting
    abandoned_patients: int
    attendants: Mapping[Role, int]  # who was in the meeting, by role
    department: str | None
    organizer: str | None

    @property
    def median_wait(self) -> timedelta | None:
        return (
            timedelta(seconds=statistics.median(w.total_seconds() for w in self.lobby_waits))
            if self.lobby_waits
            else None
        )

    @property
    def first_seen(self) -> datetime | None:
        return earlier(self.first_launch, earlier(self.clinician_joined, self.patient_joined))


def summarize(facts: VisitFacts) -> VisitSummary:
    attendees = list(facts.attendees.values())
    clinicians = [a for a in attendees if a.role in CLINICIANS]
    patients = [a for a in attendees if a.role is Role.PATIENT]
    clinician_joined = _earliest(a.joined for a in clinicians)
    patient_joined = _earliest(a.joined for a in patients)
    start = max(clinician_joined, patient_joined) if clinician_joined and patient_joined else None
    last_leave = _latest(a.left for a in attendees)
    still_there = any(a.present is not None and (a.left is None or a.present > a.left) for a in attendees)
    ended = last_leave if attendees and not still_there else None
    waits = tuple(
        a.joined - a.lobby for a in patients if a.lobby is not None and a.joined is not None and a.joined >= a.lobby
    )
    abandoned = sum(1 for a in patients if a.lobby is not None and a.joined is None and a.left is not None)
    if start is not None:
        status = Status.COMPLETED
    elif ended is not None and abandoned:
        status = Status.ABANDONED
    elif ended is not None:
        status = Status.NO_SHOW
    else:
        status = Status.IN_PROGRESS
    launches = facts.launches
    provider = launches.get(Role.PROVIDER)
    department = next((launch.department for launch in _by_time(launches) if launch.department), None)
    if provider is not None and provider.department:
        department = provider.department  # Epic's departmentId belongs in the provider's record
    attendants = {role: sum(1 for a in attendees if a.role is role and a.joined is not None) for role in Role}
    return VisitSummary(
        status=status,
        first_launch=_earliest(launch.at for launch in launches.values()),
        clinician_joined=clinician_joined,
        patient_joined=patient_joined,
        start=start,
        ended=ended,
        last_leave=last_leave,
        duration=ended - start if ended is not None and start is not None and ended >= start else None,
        lobby_waits=waits,
        abandoned_patients=abandoned,
        attendants=attendants,
        department=department,
        organizer=provider.organizer if provider is not None else None,
    )


def _by_time(launches: Mapping[Role, LaunchFacts]) -> list[LaunchFacts]:
    return sorted(launches.values(), key=lambda launch: launch.at)


def _earliest(values: Iterable[datetime | None]) -> datetime | None:
    found = [v for v in values if v is not None]
    return min(found) if found else None


def _latest(values: Iterable[datetime | None]) -> datetime | None:
    found = [v for v in values if v is not None]
    return max(found) if found else None
