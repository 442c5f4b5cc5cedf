"""Sealing the EHR references a visit keeps for its writeback: on the visit row and in launch events.

Both are AES-256-GCM sealed values (``shared.kernel.sealing``) whose purpose binds them to their place, so a
value copied elsewhere does not open:

- the visit row's ``Context`` column: ``Visits/<geography>/<visit key>``;
- the visit row's ``WaitingRoom`` column (organization, appointment start): ``Visits/<geography>/<visit key>/waiting``;
- a launch event's ``sealed`` field: ``writeback-event/<geography>/<visit key>/<event id>`` (the event id
  is derived from the visit, role, kind, time and source, so a blob cannot be moved to another event).

Opening raises ``SealedValueInvalid`` when a value was tampered with, moved, or sealed under a retired key.
"""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import datetime
from typing import Any

from shared.kernel.errors import SealedValueInvalid
from shared.kernel.sealing import Sealer
from shared.visits.events import SEALED_PURPOSE, VisitEvent
from shared.visits.model import Colleague, VisitContext, WaitingRoom

VISITS_PURPOSE = "Visits"
_REFERENCE_FIELDS = ("participant", "csn", "appointment", "encounter", "department")
_CONTEXT_FIELDS = tuple(f.name for f in fields(VisitContext) if f.name not in ("confirmed", "colleagues"))


def visit_purpose(geography: str, key: str) -> str:
    return f"{VISITS_PURPOSE}/{geography}/{key}"


def event_purpose(event: VisitEvent) -> str:
    return f"{SEALED_PURPOSE}/{event.geography}/{event.visit_key}/{event.id}"


def seal_context(sealer: Sealer, context: VisitContext, *, geography: str, key: str) -> str:
    """The row's ``Context`` value (references and ``confirmed``): "" when there is no reference to keep."""
    data: dict[str, Any] = {k: v for k, v in vars(context).items() if v and k != "colleagues"}
    if not any(data.get(name) for name in _CONTEXT_FIELDS):
        return ""
    if context.colleagues:
        data["colleagues"] = [[c.hint, c.reference, 1 if c.interpreter else 0] for c in context.colleagues]
    return sealer.seal(json.dumps(data, separators=(",", ":")), purpose=visit_purpose(geography, key))


def open_context(sealer: Sealer, stored: str, *, geography: str, key: str) -> VisitContext:
    """The context from a row's ``Context`` value (a clear JSON value written by an earlier release is read too)."""
    if not stored:
        return VisitContext()
    text = stored if stored.startswith("{") else sealer.open(stored, purpose=visit_purpose(geography, key))
    data = _object(text)
    return VisitContext(
        **_strings(data, _CONTEXT_FIELDS), confirmed=data.get("confirmed") is True, colleagues=_colleagues(data)
    )


def _colleagues(data: dict[str, Any]) -> tuple[Colleague, ...]:
    listed = data.get("colleagues")
    if not isinstance(listed, list):
        return ()
    return tuple(
        Colleague(hint, reference, bool(interpreter))
        for entry in listed
        if isinstance(entry, list) and len(entry) == 3
        for hint, reference, interpreter in [entry]
        if isinstance(hint, str) and isinstance(reference, str)
    )


def seal_waiting_room(sealer: Sealer, room: WaitingRoom, *, geography: str, key: str) -> str:
    start = room.appointment_start.isoformat() if room.appointment_start else None
    data = {"organization": room.organization, "start": start}
    return sealer.seal(json.dumps(data, separators=(",", ":")), purpose=f"{visit_purpose(geography, key)}/waiting")


def open_waiting_room(sealer: Sealer, stored: str, *, geography: str, key: str) -> WaitingRoom:
    data = _object(sealer.open(stored, purpose=f"{visit_purpose(geography, key)}/waiting"))
    start = data.get("start")
    try:
        appointment_start = datetime.fromisoformat(start) if isinstance(start, str) and start else None
    except ValueError:
        raise SealedValueInvalid("the waiting room's appointment start is not a time") from None
    if appointment_start is not None and appointment_start.tzinfo is None:
        raise SealedValueInvalid("the waiting room's appointment start has no time zone")
    organization = data.get("organization")
    return WaitingRoom(organization if isinstance(organization, str) else "", appointment_start)


def seal_event(sealer: Sealer, event: VisitEvent) -> VisitEvent:
    """The event with its in-memory references sealed into ``sealed`` and cleared (before it is queued)."""
    references = event.references
    if not references:
        return event  # nothing in memory: an already sealed event stays as it is
    cleared = replace(event, participant=None, csn=None, appointment=None, encounter=None, department=None)
    sealed = sealer.seal(json.dumps(references, separators=(",", ":")), purpose=event_purpose(event))
    return replace(cleared, sealed=sealed)


def open_event(sealer: Sealer, event: VisitEvent) -> VisitEvent:
    """The event with its sealed references opened into memory (an event without ``sealed`` is returned as is)."""
    if not event.sealed:
        return event
    data = _strings(_object(sealer.open(event.sealed, purpose=event_purpose(event))), _REFERENCE_FIELDS)
    return event.with_context(
        participant=data.get("participant"),
        csn=data.get("csn"),
        appointment=data.get("appointment"),
        encounter=data.get("encounter"),
        department=data.get("department"),
    )


def _object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise SealedValueInvalid("the sealed value holds no JSON object") from None
    if not isinstance(data, dict):
        raise SealedValueInvalid("the sealed value holds no JSON object")
    return data


def _strings(data: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in data.items() if k in allowed and isinstance(v, str) and v}
