"""``evolve``: ``dataclasses.replace`` for a visit, checked against the dataclass it copies."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime, timedelta

import pytest

from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role
from shared.visits.model import Presence, StoredColumns, Visit, VisitChanges, VisitContext, evolve

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def visit() -> Visit:
    return Visit(
        geography=Geography.EMEA,
        key="k" * 64,
        configuration_id="cfg",
        expires_at=T0 + timedelta(days=1),
        context=VisitContext(csn="1"),
        presence={Role.PATIENT: Presence(EventKind.LOBBY, T0)},
        stored=StoredColumns("emea", "k" * 64, {}),
    )


def test_its_keywords_are_the_visits_fields_with_their_types() -> None:
    """A field added to ``Visit`` without ``VisitChanges`` (or with another type) would go unchecked by mypy."""
    fields = typing.get_type_hints(Visit)
    assert typing.get_type_hints(VisitChanges) == fields
    assert set(fields) == {f.name for f in dataclasses.fields(Visit)}
    assert not VisitChanges.__required_keys__


def test_a_copy_equals_what_replace_makes_and_leaves_the_original_alone() -> None:
    original = visit()
    changes: VisitChanges = {"report": "{}", "etag": "W/1", "meeting_id": "m"}
    copy = evolve(original, **changes)
    assert copy == dataclasses.replace(original, **changes)
    assert vars(copy) == vars(dataclasses.replace(original, **changes))  # ``stored`` too (not compared by ==)
    assert copy is not original and type(copy) is Visit
    assert (original.report, original.etag, original.meeting_id) == (None, None, None)
    assert copy.presence is original.presence  # values are shared, as replace shares them: changes make new ones
    assert evolve(original) == original


def test_a_copy_is_still_frozen() -> None:
    copy = evolve(visit(), etag="W/2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.etag = "W/3"  # type: ignore[misc]
