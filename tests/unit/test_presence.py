"""Presence facts applied in any order end in the same state (the queue does not keep order)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role
from shared.visits.model import Presence, Visit, VisitContext, with_presence

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def apply_all(facts: list[tuple[EventKind, datetime]]) -> Presence:
    visit = Visit(
        geography=Geography.EMEA,
        key="k" * 64,
        configuration_id="cfg",
        context=VisitContext(csn="1"),
        expires_at=T0 + timedelta(days=1),
    )
    for state, at in facts:
        visit = with_presence(Role.PATIENT, state, at)(visit) or visit
    return visit.presence[Role.PATIENT]


FACTS = [
    (EventKind.LOBBY, T0),
    (EventKind.CONNECTED, T0 + timedelta(seconds=3)),
    (EventKind.DISCONNECTED, T0 + timedelta(seconds=9)),
]


@pytest.mark.parametrize("order", list(itertools.permutations(FACTS)))
def test_the_latest_fact_wins_whatever_the_delivery_order(order: tuple[tuple[EventKind, datetime], ...]) -> None:
    assert apply_all(list(order)) == Presence(EventKind.DISCONNECTED, T0 + timedelta(seconds=9))


@pytest.mark.parametrize("order", list(itertools.permutations(EventKind)))
def test_facts_at_the_same_instant_end_disconnected_whatever_the_order(order: tuple[EventKind, ...]) -> None:
    """A join and a leave stamped alike: the leave is the later fact, so it must win."""
    assert apply_all([(state, T0) for state in order]) == Presence(EventKind.DISCONNECTED, T0)


def test_the_same_fact_twice_changes_nothing() -> None:
    visit = Visit(geography=Geography.EMEA, key="k" * 64, configuration_id="cfg", context=VisitContext(), expires_at=T0)
    once = with_presence(Role.PATIENT, EventKind.CONNECTED, T0)(visit)
    assert once is not None
    assert with_presence(Role.PATIENT, EventKind.CONNECTED, T0)(once) is None
