"""When a visit's launch context may go: the change the worker composes into an event's presence write."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role
from shared.visits.lifetime import release_when_done
from shared.visits.model import Presence, Visit, VisitContext

AT = datetime(2026, 12, 6, 10, tzinfo=UTC)


def visit(*states: EventKind, group_key: str | None = None) -> Visit:
    roles = (Role.PROVIDER, Role.PATIENT)
    return Visit(
        Geography.AMERICAS, "k" * 64, "cfg", AT + timedelta(hours=20),
        context=VisitContext(csn="4242", patient="Patient/1"),
        presence={role: Presence(state, AT) for role, state in zip(roles, states, strict=False)},
        group_key=group_key,
    )  # fmt: skip


def test_the_context_goes_once_the_meeting_has_ended_and_nothing_is_pending() -> None:
    asked: list[str] = []

    def pending(current: Visit) -> bool:
        asked.append(current.key)
        return False

    release = release_when_done(pending)
    assert release(visit(EventKind.CONNECTED, EventKind.DISCONNECTED)) is None  # the provider is still there
    assert asked == []  # the ledger is asked only once the meeting has ended
    released = release(visit(EventKind.DISCONNECTED, EventKind.DISCONNECTED))
    assert released is not None and released.context == VisitContext() and asked == ["k" * 64]
    assert release(released) is None  # nothing left to release: no write


def test_a_pending_event_or_a_group_keeps_the_context() -> None:
    ended = visit(EventKind.DISCONNECTED, EventKind.DISCONNECTED)
    assert release_when_done(lambda current: True)(ended) is None
    # A row that has joined a group meanwhile (re-read after a conflict): its own presence says nothing of the
    # group's meeting, so only a caller that knows the group's row (``ended``) releases it.
    member = replace(ended, group_key="g" * 64)
    assert release_when_done(lambda current: False)(member) is None
    assert release_when_done(lambda current: False, ended=False)(member) is None
    released = release_when_done(lambda current: False, ended=True)(member)
    assert released is not None and released.context == VisitContext()
