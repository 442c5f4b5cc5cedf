"""A visit: one per appointment, ephemeral (24 hours), and its pure transitions.

The visit holds the meeting (id, join URL, organizer), the Graph subscription, live presence per role,
and the launch context references needed for writeback (ids only, never names or clinical content). Each
``with_*`` function is a change the repository applies in an etag-guarded read-modify-write. The per-event
writeback claims live in their own rows (``shared.writeback.ledger``), not here: a busy visit's events
must not race for this row's etag nor evict each other's done marks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

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
class VisitContext:
    """Launch-context references kept for writeback: ids only."""

    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None  # "Patient/456"
    provider: str | None = None  # "Practitioner/123"


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
    etag: str | None = None

    @property
    def has_meeting(self) -> bool:
        return bool(self.meeting_id and self.join_web_url)


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
        return replace(visit, presence={**visit.presence, role: Presence(state, at)})

    return change


def with_meeting(
    *, meeting_id: str, join_web_url: str, organizer_tenant_id: str, organizer_object_id: str
) -> Callable[[Visit], Visit | None]:
    """Set the meeting once; the first organizer wins (the patient must find the same meeting)."""

    def change(visit: Visit) -> Visit | None:
        if visit.has_meeting:
            return None
        return replace(
            visit,
            meeting_id=meeting_id,
            join_web_url=join_web_url,
            organizer_tenant_id=organizer_tenant_id,
            organizer_object_id=organizer_object_id,
        )

    return change


def with_subscription(subscription_id: str, expires_at: datetime) -> Callable[[Visit], Visit | None]:
    """Record the visit's meetingCallEvents subscription (one per meeting; a newer one replaces it)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id == subscription_id and visit.subscription_expires_at == expires_at:
            return None
        return replace(visit, subscription_id=subscription_id, subscription_expires_at=expires_at)

    return change


def without_subscription(subscription_id: str) -> Callable[[Visit], Visit | None]:
    """Forget a deleted subscription (unless a newer one has replaced it meanwhile)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id != subscription_id:
            return None
        return replace(visit, subscription_id=None, subscription_expires_at=None)

    return change
