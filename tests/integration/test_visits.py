"""The ephemeral visit row on Azurite: creation, presence, meeting, expiry (claims: test_writeback_ledger.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage
from shared.storage.sweep import sweep_expired
from shared.visits.events import EventKind, Role
from shared.visits.model import (
    VisitContext,
    appointment_key,
    visit_key,
    with_meeting,
    with_presence,
)
from shared.visits.repository import TABLE, VisitRepository

pytestmark = pytest.mark.azurite
T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SEALER = Sealer.from_text(new_key_text())


def new_visit(storage: Storage, unique: str, geography: Geography = Geography.EMEA):  # type: ignore[no-untyped-def]
    repo = VisitRepository(storage, SEALER)
    key = visit_key("secret" * 6, f"cfg-{unique}", appointment_key(csn=unique, appointment=None, encounter=None))
    return repo, repo.get_or_create(geography, key, f"cfg-{unique}", VisitContext(csn=unique, patient="Patient/1"))


def test_appointment_key_prefers_csn_then_appointment_then_encounter() -> None:
    assert appointment_key(csn="1", appointment="2", encounter="3") == "csn:1"
    assert appointment_key(csn=None, appointment="2", encounter="3") == "appointment:2"
    assert appointment_key(csn="", appointment=None, encounter="3") == "encounter:3"
    with pytest.raises(ValueError):
        appointment_key(csn=None, appointment=None, encounter=None)


def test_visit_key_reveals_nothing_and_depends_on_configuration() -> None:
    a = visit_key("s" * 40, "cfg-a", "csn:1853")
    assert "1853" not in a and len(a) == 64
    assert a != visit_key("s" * 40, "cfg-b", "csn:1853")


def test_get_or_create_returns_the_same_row(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique)
    again = repo.get_or_create(visit.geography, visit.key, visit.configuration_id, VisitContext(csn="other"))
    assert again.key == visit.key and again.context.csn == unique
    assert repo.get(Geography.AMERICAS, visit.key) is None  # lives only in its geography
    assert timedelta(hours=23) < visit.expires_at - datetime.now(UTC) <= timedelta(hours=24)


def test_concurrent_presence_updates_are_all_kept(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique)
    roles = [Role.PATIENT, Role.PROVIDER, Role.STAFF]
    barrier = threading.Barrier(len(roles))

    def update(role: Role) -> None:
        barrier.wait()
        repo.update(visit, with_presence(role, EventKind.CONNECTED, T0))

    threads = [threading.Thread(target=update, args=(role,)) for role in roles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = repo.get(visit.geography, visit.key)
    assert stored is not None
    assert {role: p.state for role, p in stored.presence.items()} == dict.fromkeys(roles, EventKind.CONNECTED)


def test_older_presence_never_overwrites_newer(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique)
    visit = repo.update(visit, with_presence(Role.PATIENT, EventKind.DISCONNECTED, T0 + timedelta(seconds=5)))
    visit = repo.update(visit, with_presence(Role.PATIENT, EventKind.CONNECTED, T0))
    stored = repo.get(visit.geography, visit.key)
    assert stored is not None and stored.presence[Role.PATIENT].state is EventKind.DISCONNECTED


def test_first_meeting_wins(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique)
    first = repo.update(
        visit, with_meeting(meeting_id="m1", join_web_url="u1", organizer_tenant_id="t", organizer_object_id="o1")
    )
    second = repo.update(
        visit, with_meeting(meeting_id="m2", join_web_url="u2", organizer_tenant_id="t", organizer_object_id="o2")
    )
    assert first.meeting_id == second.meeting_id == "m1"


def test_expired_visit_is_invisible_and_swept(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique, Geography.APAC)
    table = storage.for_geography(Geography.APAC).table(TABLE)
    entity = table.get_entity(visit.geography.value, visit.key)
    entity["ExpiresAt"] = datetime.now(UTC) - timedelta(seconds=1)
    table.update_entity(entity)
    assert repo.get(visit.geography, visit.key) is None
    sweep_expired(storage.for_geography(Geography.APAC), TABLE)
    assert not list(table.query_entities(f"RowKey eq '{visit.key}'"))
    # A fresh launch after expiry starts a new visit.
    fresh = repo.get_or_create(visit.geography, visit.key, visit.configuration_id, VisitContext(csn=unique))
    assert fresh.expires_at > datetime.now(UTC)


def test_clearing_a_field_really_clears_it(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique)
    visit = repo.update(visit, lambda v: replace(v, subscription_id="sub-1"))
    repo.update(visit, lambda v: replace(v, subscription_id=None))
    stored = repo.get(visit.geography, visit.key)
    assert stored is not None and stored.subscription_id is None


def test_racing_launches_on_an_expired_row_share_one_visit(storage: Storage, unique: str) -> None:
    repo, visit = new_visit(storage, unique, Geography.AMERICAS)
    table = storage.for_geography(Geography.AMERICAS).table(TABLE)
    for round_ in range(5):  # a late racer must never replace the visit another launch just renewed
        entity = table.get_entity(visit.geography.value, visit.key)
        entity["ExpiresAt"] = datetime.now(UTC) - timedelta(seconds=1)
        table.update_entity(entity)
        barrier = threading.Barrier(6)
        results: list[object] = []

        def launch(barrier: threading.Barrier = barrier, results: list[object] = results, n: int = round_) -> None:
            barrier.wait()
            fresh = repo.get_or_create(visit.geography, visit.key, visit.configuration_id, VisitContext(csn=unique))
            meeting = with_meeting(
                meeting_id=f"m{n}-{threading.get_ident()}", join_web_url="u", organizer_tenant_id="t",
                organizer_object_id="o",
            )  # fmt: skip
            results.append(repo.update(fresh, meeting).meeting_id)

        threads = [threading.Thread(target=launch) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stored = repo.get(visit.geography, visit.key)
        assert stored is not None and stored.meeting_id is not None
        assert len(results) == 6
        assert set(results) == {stored.meeting_id}, "every launch sees the one meeting"
