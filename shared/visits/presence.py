"""Presence facts onto the visit row, one writer per visit at a time in this process.

Presence is "newer fact wins" (``with_presence``): applying a fact twice, or after a newer one, changes
nothing, so a presence write needs no claim and may be retried freely. What it must avoid is dozens of
the worker's threads racing for one visit's etag when a busy meeting produces a burst of events: here
they queue per visit, and each one starts from the row the previous one wrote (its etag is current
unless a launch or another instance wrote meanwhile), so an older fact costs no write at all and a
newer one costs one. Across instances the repository's etag retry still applies. A launch event's
references ride along in the same write (``also``: ``with_launch_context``), so a launch costs one write too.
The same write records what the provider's panel tells apart: a Graph fact in the roster, a launch as a launch
(``with_roster_fact`` / ``with_launch``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from shared.visits.events import EventKind, Role, Source
from shared.visits.model import Visit, compose, with_attendee_fact, with_launch, with_presence, with_roster_fact
from shared.visits.repository import VisitRepository


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0
    latest: Visit | None = None  # the row as this process last wrote or read it, while the slot is in use


class PresenceRecorder:
    def __init__(self, visits: VisitRepository) -> None:
        self._visits = visits
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._guard = threading.Lock()

    def record(
        self,
        visit: Visit,
        role: Role,
        state: EventKind,
        at: datetime,
        *,
        source: Source = Source.GRAPH,
        also: Callable[[Visit], Visit | None] | None = None,
        attendee: str | None = None,
        interpreter: bool = False,
        role_facts: bool = True,
        member: str | None = None,
    ) -> Visit:
        """Record ``role``'s ``state`` at ``at`` unless a newer fact is already there; the visit as stored.

        ``source``: a launch's fact is recorded as a launch, a Graph fact in the roster (the panel's truth).
        ``also``: a further change applied in the same etag-guarded write (a launch's context merge).
        ``role_facts`` False: only the ``attendee``'s own row learns the fact (a single visit's guest interpreter,
        whose facts are not the patient role's). ``member``: the attendee's own visit in a group, once known.
        """
        told = with_launch(role, at) if source is Source.LAUNCH else with_roster_fact(role, state, at)
        # A group meeting's rows tell its participants apart (``attendee``); the per-role roster stays as it is.
        each = (
            (with_attendee_fact(attendee, role, state, at, interpreter=interpreter, member=member),) if attendee else ()
        )
        per_role = (with_presence(role, state, at), told) if role_facts or not each else ()
        change = compose(*per_role, *each, *((also,) if also is not None else ()))
        key = (visit.geography.value, visit.key)
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            slot.users += 1
        try:
            with slot.lock:
                base = slot.latest or visit
                slot.latest = self._visits.update(base, change)
                return slot.latest
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._slots[key]  # no one waits: forget the row (its etag goes stale soon anyway)
