"""A visit: one per appointment, ephemeral (24 hours), and its pure transitions.

The visit holds the meeting (id, join URL, organizer), the Graph subscription, live presence per role,
and the launch context references needed for writeback (ids only, sealed at rest by the repository, released
as soon as the meeting has ended and its writebacks are done: ``shared.visits.lifetime``). Each ``with_*``
function is a change the repository applies in an etag-guarded read-modify-write. The per-event writeback
claims live in their own rows (``shared.writeback.ledger``), not here: a busy visit's events must not race
for this row's etag nor evict each other's done marks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TypedDict, Unpack

from shared.kernel.identifiers import keyed_id
from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role


def appointment_key(*, csn: str | None, appointment: str | None, encounter: str | None) -> str:
    """The CSN if present, else the appointment id, else the encounter id."""
    for kind, value in (("csn", csn), ("appointment", appointment), ("encounter", encounter)):
        if value:
            return f"{kind}:{value}"
    raise ValueError("a visit needs a CSN, an appointment or an encounter")


def visit_key(secret: str, configuration_id: str, appointment_key_value: str) -> str:
    return keyed_id(secret, "visit", configuration_id, appointment_key_value)


@dataclass(frozen=True)
class Presence:
    state: EventKind
    at: datetime


@dataclass(frozen=True)
class RosterEntry:
    """A role's state in the Teams roster (Graph facts only, never a launch): what the panel shows.

    ``since``: when this state began (a repeated fact of the same state does not move it); ``at``: the newest
    fact applied (orders facts delivered out of order); ``lobby_since``: when the lobby wait that led here began
    (None: no lobby seen, e.g. the organizer, who bypasses it).
    """

    state: EventKind
    since: datetime
    at: datetime
    lobby_since: datetime | None = None


@dataclass(frozen=True)
class Attendee:
    """One Teams participant of a group meeting (Graph facts only): its role, roster entry, and order of arrival.

    ``interpreter``: an anonymous joiner who gave the name "Interpreter" (kept as this flag, never the name).
    """

    role: Role
    entry: RosterEntry
    first_seen: datetime
    interpreter: bool = False
    member: str | None = None  # the participant's own visit key, once tied to it (``shared.visits.members``)


@dataclass(frozen=True)
class Colleague:
    """A clinician who launched the visit from the EHR, so their Teams facts can be written as theirs.

    ``hint``: ``shared.visits.members.user_hint`` of the Microsoft 365 account their launch was mapped to (what
    Teams reports); ``reference``: their EHR reference ("Practitioner/123"); ``interpreter``: the appointment
    books them as its interpreter (participant type translator), read with their launch's own token.
    """

    hint: str
    reference: str
    interpreter: bool = False


@dataclass(frozen=True)
class VisitContext:
    """Launch-context references kept for writeback: ids only.

    ``confirmed``: every value was asserted by the EHR in a launch (token response, id_token, reads
    with the launch's token). Rows written before launches were confirmed lack it.
    """

    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None  # "Patient/456"
    provider: str | None = None  # "Practitioner/123"
    confirmed: bool = False
    colleagues: tuple[Colleague, ...] = ()  # every clinician who launched it (the provider too), first entry wins

    def colleague(self, hint: str | None) -> Colleague | None:
        return next((c for c in self.colleagues if c.hint == hint), None) if hint else None


def merged_context(current: VisitContext, new: VisitContext) -> VisitContext:
    """The visit's context after a launch: what the EHR confirmed, whichever launch came first.

    Confirmed facts replace unconfirmed ones wholesale and are never replaced by them; between two
    confirmed contexts (the provider's and the patient's launch of one visit) a value once set is
    kept and only missing ones are filled, so a patient launching first leaves the provider for the
    clinician's launch to fill in.
    """
    known = {c.hint for c in current.colleagues}
    if new.confirmed != current.confirmed:
        # Confirmed references win wholesale; the clinicians who launched it are kept either way.
        kept = new if new.confirmed else current
        other = current if new.confirmed else new
        seen = {c.hint for c in kept.colleagues}
        return replace(kept, colleagues=kept.colleagues + tuple(c for c in other.colleagues if c.hint not in seen))
    return VisitContext(
        **{name: getattr(current, name) or getattr(new, name) for name in _REFERENCES},
        confirmed=current.confirmed,
        colleagues=current.colleagues + tuple(c for c in new.colleagues if c.hint not in known),
    )


_REFERENCES = ("csn", "appointment", "encounter", "patient", "provider")


def with_context(context: VisitContext) -> Callable[[Visit], Visit | None]:
    """Merge a launch's context into the visit (``merged_context``); None when it adds nothing."""

    def change(visit: Visit) -> Visit | None:
        merged = merged_context(visit.context, context)
        # A launch's fresh context also replaces a sealed one that cannot be opened (``unreadable_context``).
        return None if merged == visit.context else evolve(visit, context=merged, unreadable_context=None)

    return change


@dataclass(frozen=True)
class WaitingRoom:
    """What a waiting patient's page shows, read from the EHR at their launch: kept only until the meeting exists.

    ``appointment_start`` keeps the EHR's own UTC offset; None when no Appointment was available to the launch
    (the page then says nothing about time rather than guessing).
    """

    organization: str
    appointment_start: datetime | None = None


@dataclass(frozen=True)
class StoredColumns:
    """A visit row's columns as read: column -> (the value read from it, its text). Only for that row (its sealed
    texts are bound to it). Changes make new values and never change one in place, so identity says "unchanged"."""

    geography: str
    key: str
    columns: Mapping[str, tuple[object, str]]

    def text(self, visit: Visit, column: str, value: object) -> str | None:
        """The column's text as read when ``value`` is still the very object read from it, in the same row."""
        read = self.columns.get(column)
        if read is None or read[0] is not value or (visit.geography.value, visit.key) != (self.geography, self.key):
            return None
        return read[1]


@dataclass(frozen=True)
class Visit:
    geography: Geography
    key: str
    configuration_id: str
    expires_at: datetime
    context: VisitContext = field(default_factory=VisitContext)
    meeting_id: str | None = None
    join_web_url: str | None = None
    organizer_tenant_id: str | None = None
    organizer_object_id: str | None = None
    subscription_id: str | None = None
    subscription_expires_at: datetime | None = None
    presence: dict[Role, Presence] = field(default_factory=dict)
    # What the provider's panel tells apart (``shared.visits.panel``): Teams roster facts, and the latest launch
    # per role. ``presence`` above is the newest fact of either kind (writeback and the meeting's end read it).
    roster: dict[Role, RosterEntry] = field(default_factory=dict)
    launched: dict[Role, datetime] = field(default_factory=dict)
    etag: str | None = None
    # The stored sealed context when it cannot be opened (tampered with, or its key retired): kept as it is,
    # so restoring a wrongly removed key brings it back; a launch's fresh context replaces it.
    unreadable_context: str | None = None
    waiting_room: WaitingRoom | None = None  # sealed at rest; cleared once the meeting exists or the context goes
    # Group visits (``shared.launch.groups``): a participant's own visit row names its group's row, which holds
    # the one meeting of the conference id and its Teams subscription; the group's row names itself.
    group_key: str | None = None
    attendees: dict[str, Attendee] = field(default_factory=dict)  # the group's row: each Teams participant
    members: dict[str, str] = field(default_factory=dict)  # the group's row: keyed hint -> member visit key
    # The usage report's facts of this visit, folded into the writes the worker already makes and copied into the
    # report's own table by its timer (``shared.reports.fold``): opaque text here, written only by that module.
    report: str | None = None
    # The row's columns as read (``shared.visits.repository``), so that a write stores a value that is still the
    # very object read as the text it was read from, rather than encoding (and sealing) it again.
    stored: StoredColumns | None = field(default=None, compare=False, repr=False)

    @property
    def has_meeting(self) -> bool:
        return bool(self.meeting_id and self.join_web_url)

    @property
    def is_group(self) -> bool:
        """The row of a group visit's meeting (one per conference id), not a participant's own visit."""
        return self.group_key is not None and self.group_key == self.key

    @property
    def in_group(self) -> bool:
        """A participant's own visit (their CSN) within a group visit."""
        return self.group_key is not None and self.group_key != self.key


class VisitChanges(TypedDict, total=False):
    """``Visit``'s fields as ``evolve``'s keywords (``tests/unit/test_visit_model.py`` keeps the two the same)."""

    geography: Geography
    key: str
    configuration_id: str
    expires_at: datetime
    context: VisitContext
    meeting_id: str | None
    join_web_url: str | None
    organizer_tenant_id: str | None
    organizer_object_id: str | None
    subscription_id: str | None
    subscription_expires_at: datetime | None
    presence: dict[Role, Presence]
    roster: dict[Role, RosterEntry]
    launched: dict[Role, datetime]
    etag: str | None
    unreadable_context: str | None
    waiting_room: WaitingRoom | None
    group_key: str | None
    attendees: dict[str, Attendee]
    members: dict[str, str]
    report: str | None
    stored: StoredColumns | None


def evolve(visit: Visit, **changes: Unpack[VisitChanges]) -> Visit:
    """``dataclasses.replace(visit, **changes)``, type-checked the same way, without the generated ``__init__``:
    a visit has 22 fields and no ``__post_init__``, and each writeback event copies one several times (a copy
    costs ~0.6 µs here against ~5 µs)."""
    copy = object.__new__(Visit)
    copy.__dict__.update(visit.__dict__, **changes)
    return copy


# --- pure changes, applied through VisitRepository.update -----------------------------------


_STATE_ORDER = {EventKind.LOBBY: 0, EventKind.CONNECTED: 1, EventKind.DISCONNECTED: 2}


def with_presence(role: Role, state: EventKind, at: datetime) -> Callable[[Visit], Visit | None]:
    """Record a role's state unless a newer fact is already recorded (events arrive out of order).

    Two facts at the same instant are ordered lobby → connected → disconnected, so the outcome
    does not depend on which one the queue delivers first.
    """

    def change(visit: Visit) -> Visit | None:
        current = visit.presence.get(role)
        if current is not None and (current.at, _STATE_ORDER[current.state]) >= (at, _STATE_ORDER[state]):
            return None
        return evolve(visit, presence={**visit.presence, role: Presence(state, at)})

    return change


def with_roster_fact(role: Role, state: EventKind, at: datetime) -> Callable[[Visit], Visit | None]:
    """Record a Teams roster fact for ``role`` (``next_roster_entry``); None when it changes nothing."""

    def change(visit: Visit) -> Visit | None:
        current = visit.roster.get(role)
        updated = next_roster_entry(current, state, at)
        return None if updated == current else evolve(visit, roster={**visit.roster, role: updated})

    return change


def next_roster_entry(current: RosterEntry | None, state: EventKind, at: datetime) -> RosterEntry:
    """The roster entry after one more fact, in whatever order the queue delivers facts.

    A newer fact of another state starts a new ``since``; a newer fact of the same state only moves ``at``.
    Admission keeps the lobby's start, so the wait stays known. An older fact changes the state of nothing;
    an older lobby entry still dates the current lobby wait (the queue delivered the admission first).
    """
    if current is None:
        return RosterEntry(state, at, at, at if state is EventKind.LOBBY else None)
    if (at, _STATE_ORDER[state]) > (current.at, _STATE_ORDER[current.state]):
        if state is current.state:
            return replace(current, at=at)
        if state is EventKind.LOBBY:
            lobby_since: datetime | None = at
        elif state is EventKind.CONNECTED:
            lobby_since = current.lobby_since if current.state is EventKind.LOBBY else None
        else:
            lobby_since = current.lobby_since
        return RosterEntry(state, at, at, lobby_since)
    late_lobby = (
        state is EventKind.LOBBY
        and current.state in (EventKind.LOBBY, EventKind.CONNECTED)
        and at <= current.since
        and (current.lobby_since is None or at < current.lobby_since)
    )
    if not late_lobby:
        return current
    if current.state is EventKind.LOBBY:
        return replace(current, since=at, lobby_since=at)
    return replace(current, lobby_since=at)


def with_attendee_fact(
    attendee: str, role: Role, state: EventKind, at: datetime, *, interpreter: bool = False, member: str | None = None
) -> Callable[[Visit], Visit | None]:
    """Record a Teams fact of one participant of a group meeting (``next_roster_entry`` per participant).

    ``member``: the participant's own visit, once known; a call leg once tied stays tied.
    """

    def change(visit: Visit) -> Visit | None:
        current = visit.attendees.get(attendee)
        entry = next_roster_entry(current.entry if current else None, state, at)
        first_seen = min(current.first_seen, at) if current else at
        tied = (current.member if current else None) or member
        updated = Attendee(role, entry, first_seen, interpreter or bool(current and current.interpreter), tied)
        if updated == current:
            return None
        return evolve(visit, attendees=_bounded({**visit.attendees, attendee: updated}))

    return change


MAX_ATTENDEES = 60  # call legs kept per row: ~300 characters each, far below a Table property's 32K characters


def _bounded(attendees: dict[str, Attendee]) -> dict[str, Attendee]:
    """At most ``MAX_ATTENDEES`` call legs: the longest gone go first (every rejoin is a new call leg; a leg that
    has left sends no more facts). Those still present are always kept."""
    excess = len(attendees) - MAX_ATTENDEES
    if excess <= 0:
        return attendees
    gone = sorted((a.entry.at, key) for key, a in attendees.items() if a.entry.state is EventKind.DISCONNECTED)
    dropped = {key for _, key in gone[:excess]}
    return {key: a for key, a in attendees.items() if key not in dropped}


def with_member(slot: str, member_key: str) -> Callable[[Visit], Visit | None]:
    """Name a member's visit on the group's row under ``slot``; a slot already taken is never given to another."""

    def change(visit: Visit) -> Visit | None:
        if slot in visit.members:
            return None
        return evolve(visit, members={**visit.members, slot: member_key})

    return change


def with_launch(role: Role, at: datetime) -> Callable[[Visit], Visit | None]:
    """Record that ``role`` launched the visit at ``at`` (the newest launch wins)."""

    def change(visit: Visit) -> Visit | None:
        current = visit.launched.get(role)
        if current is not None and current >= at:
            return None
        return evolve(visit, launched={**visit.launched, role: at})

    return change


def with_meeting(
    *, meeting_id: str, join_web_url: str, organizer_tenant_id: str, organizer_object_id: str
) -> Callable[[Visit], Visit | None]:
    """Set the meeting once; the first organizer wins (the patient must find the same meeting)."""

    def change(visit: Visit) -> Visit | None:
        if visit.has_meeting:
            return None
        return evolve(
            visit,
            waiting_room=None,  # nobody waits for a meeting that exists: the patient's page sends them in
            meeting_id=meeting_id,
            join_web_url=join_web_url,
            organizer_tenant_id=organizer_tenant_id,
            organizer_object_id=organizer_object_id,
        )

    return change


def with_group(group_key: str) -> Callable[[Visit], Visit | None]:
    """Mark the row as part of a group visit (a participant's own) or as the group's row (its own key)."""

    def change(visit: Visit) -> Visit | None:
        return None if visit.group_key == group_key else evolve(visit, group_key=group_key)

    return change


def with_group_meeting(group: Visit) -> Callable[[Visit], Visit | None]:
    """A participant's visit joins its group's meeting (the group's row holds it, its first organizer wins)."""
    assert group.meeting_id and group.join_web_url and group.organizer_tenant_id and group.organizer_object_id
    return compose(
        with_group(group.key),
        with_meeting(
            meeting_id=group.meeting_id,
            join_web_url=group.join_web_url,
            organizer_tenant_id=group.organizer_tenant_id,
            organizer_object_id=group.organizer_object_id,
        ),
    )


def with_waiting_room(waiting_room: WaitingRoom) -> Callable[[Visit], Visit | None]:
    """What a waiting patient's page shows; nothing once the meeting exists (the patient is sent in)."""

    def change(visit: Visit) -> Visit | None:
        if visit.has_meeting or visit.waiting_room == waiting_room:
            return None
        return evolve(visit, waiting_room=waiting_room)

    return change


def with_subscription(subscription_id: str, expires_at: datetime) -> Callable[[Visit], Visit | None]:
    """Record the visit's meetingCallEvents subscription (one per meeting; a newer one replaces it)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id == subscription_id and visit.subscription_expires_at == expires_at:
            return None
        return evolve(visit, subscription_id=subscription_id, subscription_expires_at=expires_at)

    return change


def without_subscription(subscription_id: str) -> Callable[[Visit], Visit | None]:
    """Forget a deleted subscription (unless a newer one has replaced it meanwhile)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id != subscription_id:
            return None
        return evolve(visit, subscription_id=None, subscription_expires_at=None)

    return change


def compose(*changes: Callable[[Visit], Visit | None]) -> Callable[[Visit], Visit | None]:
    """Apply changes in order; None when none of them changed anything."""

    def change(visit: Visit) -> Visit | None:
        current, changed = visit, False
        for step in changes:
            result = step(current)
            if result is not None:
                current, changed = result, True
        return current if changed else None

    return change


# --- the launch context, kept for writeback only while it is needed ------------------------------


def has_context(visit: Visit) -> bool:
    """The visit keeps an EHR reference (``confirmed`` alone names nothing)."""
    context = visit.context
    return any((context.csn, context.appointment, context.encounter, context.patient, context.provider))


def with_colleague(colleague: Colleague) -> Callable[[Visit], Visit | None]:
    """Remember a clinician who launched the visit (their Teams account's fingerprint and EHR reference).

    Kept in the sealed context, so it goes when the context goes (the meeting has ended, writebacks done).
    """

    def change(visit: Visit) -> Visit | None:
        if visit.context.colleague(colleague.hint) is not None:
            return None
        context = replace(visit.context, colleagues=(*visit.context.colleagues, colleague))
        return evolve(visit, context=context)

    return change


def with_launch_context(
    role: Role, references: dict[str, str], *, confirmed: bool, colleague: Colleague | None = None
) -> Callable[[Visit], Visit | None]:
    """Merge a launch event's references into the visit's context (a relaunch restores a released one).

    ``confirmed``: the event was sealed by a launch whose context the EHR confirmed (every sealed launch
    event); a legacy event's clear references are not. The merge is ``merged_context``'s: the first
    confirmed provider and patient stay the visit's, and a Graph event of that role is written for them.
    ``colleague``: the clinician who launched, by their Teams account (a relaunch restores them too).
    """
    participant = references.get("participant")
    launched = VisitContext(
        csn=references.get("csn"),
        appointment=references.get("appointment"),
        encounter=references.get("encounter"),
        provider=participant if role is Role.PROVIDER else None,
        patient=participant if role is Role.PATIENT else None,
        confirmed=confirmed,
        colleagues=(colleague,) if colleague is not None and confirmed else (),
    )
    return with_context(launched)


def without_context() -> Callable[[Visit], Visit | None]:
    """Forget the launch context and what the waiting room showed (the meeting has ended, writebacks done)."""

    def change(visit: Visit) -> Visit | None:
        if not has_context(visit) and visit.unreadable_context is None and visit.waiting_room is None:
            return None
        return evolve(visit, context=VisitContext(), unreadable_context=None, waiting_room=None)

    return change
