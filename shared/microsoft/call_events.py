"""Graph ``meetingCallEvents`` to participant changes: lobby, connected, disconnected, per role."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.kernel.errors import BadRequest
from shared.visits.events import EventKind, Role, label_hint, label_in_name


@dataclass(frozen=True)
class ParticipantChange:
    """One participant's new state from a ``meetingCallEvents`` resource."""

    graph_participant_id: str
    kind: EventKind
    role: Role
    occurred_at: datetime
    interpreter: bool = False  # an anonymous joiner named "Interpreter" (what an interpreter's guest link asks)
    # What may tie them to their own visit (``shared.visits.members``): the visit number a guest typed in their
    # name (never the name itself); ``user_id``: a tenant user's Entra object id, in memory only (the decoder
    # sends on a keyed fingerprint of it).
    member_hint: str | None = None
    user_id: str | None = None


def participant_changes(call_event: Mapping[str, Any], *, organizer_object_id: str) -> list[ParticipantChange]:
    """Map a decrypted callEvent (callStarted / rosterUpdated / callEnded) to participant changes.

    Tenant users are the provider (the organizer) or staff; guests and anonymous joiners are
    the patient. ``isInLobby`` true → lobby; false → connected; ``removedState`` → disconnected.
    callEnded disconnects everyone listed; callStarted alone says nothing about anyone.
    """
    event_type = str(call_event.get("eventType", ""))
    occurred_at = _parse_time(call_event.get("eventDateTime"))
    participants = call_event.get("participants@delta") or call_event.get("participants") or []
    if not isinstance(participants, list):
        raise BadRequest("callEvent participants are malformed")
    changes: list[ParticipantChange] = []
    for participant in participants:
        if not isinstance(participant, Mapping):
            continue
        role = _role_of(participant, organizer_object_id)
        if event_type == "callEnded" or participant.get("removedState"):
            kind = EventKind.DISCONNECTED
        elif event_type in ("rosterUpdated", "callStarted"):
            kind = EventKind.LOBBY if participant.get("isInLobby") else EventKind.CONNECTED
        else:
            continue
        hint, interpreter = _member_hint(participant, role)
        user_id = _user_id(participant) or None
        changes.append(
            ParticipantChange(str(participant.get("id", "")), kind, role, occurred_at, interpreter, hint, user_id)
        )
    return changes


INTERPRETER_NAME = "interpreter"


def _member_hint(participant: Mapping[str, Any], role: Role) -> tuple[str | None, bool]:
    """(a guest's visit number hint, joined as "Interpreter"): read from the name Teams reports, never kept."""
    if role is not Role.PATIENT:
        return None, False
    name = _display_name(participant)
    if name.casefold() == INTERPRETER_NAME:
        return None, True
    label = label_in_name(name)
    return (label_hint(label) if label else None), False


def _user_id(participant: Mapping[str, Any]) -> str:
    info = participant.get("info")
    identity = info.get("identity") if isinstance(info, Mapping) else None
    user = identity.get("user") if isinstance(identity, Mapping) else None
    return str(user.get("id", "")) if isinstance(user, Mapping) else ""


def _display_name(participant: Mapping[str, Any]) -> str:
    """A guest's display name, read only to recognise "Interpreter" or a visit number (it is never kept)."""
    info = participant.get("info")
    identity = info.get("identity") if isinstance(info, Mapping) else None
    for kind in ("guest", "anonymous", "acsUser", "phone"):
        who = identity.get(kind) if isinstance(identity, Mapping) else None
        name = who.get("displayName") if isinstance(who, Mapping) else None
        if isinstance(name, str):
            return name.strip()
    return ""


def _role_of(participant: Mapping[str, Any], organizer_object_id: str) -> Role:
    user_id = _user_id(participant)
    if user_id:
        return Role.PROVIDER if user_id.lower() == organizer_object_id.lower() else Role.STAFF
    return Role.PATIENT


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("callEvent has no eventDateTime")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("callEvent eventDateTime is malformed") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
