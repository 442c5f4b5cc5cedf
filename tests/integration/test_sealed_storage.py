"""Sealed at rest on Azurite: visit rows and sign-in state hold no clear EHR identifier, open only in their
own place, survive a key rotation and move to the new key on their next write."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.kernel.errors import StateError
from shared.kernel.sealing import Sealer, key_id, new_key_text, parse_keys
from shared.kernel.settings import Geography
from shared.launch.service import LAUNCH_STATE_KINDS
from shared.storage.accounts import Storage
from shared.storage.state import TABLE as STATES
from shared.storage.state import StateRouter
from shared.visits.events import EventKind, Role
from shared.visits.model import VisitContext, WaitingRoom, with_presence
from shared.visits.repository import TABLE as VISITS
from shared.visits.repository import VisitRepository

pytestmark = pytest.mark.azurite

# Confirmed, as a launch leaves it: the flag is sealed with the references.
CONTEXT = VisitContext(
    csn="7770001", appointment="e-appt-seal", encounter="e-enc-seal", patient="Patient/e-pat-seal",
    provider="Practitioner/e-prac-seal", confirmed=True,
)  # fmt: skip
CLEAR = ("7770001", "e-appt-seal", "e-enc-seal", "e-pat-seal", "e-prac-seal")


def states(storage: Storage, keys: str) -> StateRouter:
    return StateRouter(storage, Sealer.from_text(keys), in_geography=LAUNCH_STATE_KINDS)


def key_of(sealed: str) -> str:
    return sealed.split(".")[1]


def test_a_visit_rows_context_is_sealed_and_opens_only_in_its_own_row(storage: Storage, unique: str) -> None:
    sealer = Sealer.from_text(new_key_text())
    repository = VisitRepository(storage, sealer)
    visit = repository.get_or_create(Geography.EMEA, f"seal-{unique}", "cfg", CONTEXT)
    table = storage.for_geography(Geography.EMEA).table(VISITS)
    entity = table.get_entity("emea", visit.key)
    assert entity["Context"].startswith("s1.")
    assert not any(value in str(dict(entity)) for value in CLEAR)
    stored = repository.get(Geography.EMEA, visit.key)
    assert stored is not None and stored.context == CONTEXT

    # The same sealed value copied into another visit's row does not open there.
    other = repository.get_or_create(Geography.EMEA, f"other-{unique}", "cfg", VisitContext(csn="1"))
    copied = table.get_entity("emea", other.key)
    copied["Context"] = entity["Context"]
    table.update_entity(copied)
    moved = repository.get(Geography.EMEA, other.key)
    assert moved is not None and moved.context == VisitContext() and moved.unreadable_context == entity["Context"]


def test_rotation_old_rows_open_after_rotation_and_move_to_the_new_key_on_their_next_write(
    storage: Storage, unique: str
) -> None:
    old, new = new_key_text(), new_key_text()
    before = VisitRepository(storage, Sealer.from_text(old))
    visit = before.get_or_create(Geography.AMERICAS, f"rot-{unique}", "cfg", CONTEXT)
    room = WaitingRoom("Clinic of the rotation")
    before.update(visit, lambda current: replace(current, waiting_room=room))
    table = storage.for_geography(Geography.AMERICAS).table(VISITS)
    old_id, new_id = key_id(parse_keys(old)[0]), key_id(parse_keys(new)[0])
    assert key_of(table.get_entity("americas", visit.key)["Context"]) == old_id
    assert key_of(table.get_entity("americas", visit.key)["WaitingRoom"]) == old_id

    rotating = VisitRepository(storage, Sealer.from_text(f"{new},{old}"))  # the new key first, the old kept
    read = rotating.get(Geography.AMERICAS, visit.key)
    assert read is not None and read.context == CONTEXT
    assert key_of(table.get_entity("americas", visit.key)["Context"]) == old_id  # reads do not rewrite
    rotating.update(read, with_presence(Role.PATIENT, EventKind.LOBBY, datetime.now(UTC)))
    moved = table.get_entity("americas", visit.key)  # both sealed anew on the row's next write, though unchanged
    assert (key_of(moved["Context"]), key_of(moved["WaitingRoom"])) == (new_id, new_id)

    retired = VisitRepository(storage, Sealer.from_text(new))  # the old key dropped: the row still opens
    after = retired.get(Geography.AMERICAS, visit.key)
    assert after is not None and after.context == CONTEXT and after.waiting_room == room


def test_a_write_keeps_the_sealed_text_of_an_unchanged_context_and_seals_a_changed_one_anew(
    storage: Storage, unique: str
) -> None:
    repository = VisitRepository(storage, Sealer.from_text(new_key_text()))
    visit = repository.get_or_create(Geography.EMEA, f"keep-{unique}", "cfg", CONTEXT)
    room = WaitingRoom("Clinic of the seal", datetime(2026, 12, 6, 15, tzinfo=UTC))
    repository.update(visit, lambda current: replace(current, waiting_room=room))
    table = storage.for_geography(Geography.EMEA).table(VISITS)
    first = table.get_entity("emea", visit.key)

    read = repository.get(Geography.EMEA, visit.key)
    assert read is not None
    repository.update(read, with_presence(Role.PATIENT, EventKind.LOBBY, datetime.now(UTC)))
    second = table.get_entity("emea", visit.key)
    assert second["Presence"] != first["Presence"]  # written ...
    assert (second["Context"], second["WaitingRoom"]) == (first["Context"], first["WaitingRoom"])  # ... not resealed
    assert (second["Roster"], second["Launched"]) == (first["Roster"], first["Launched"])

    read = repository.get(Geography.EMEA, visit.key)
    assert read is not None and read.waiting_room == room
    changed = replace(CONTEXT, encounter="e-enc-seal-2")
    repository.update(read, lambda current: replace(current, context=changed))
    third = table.get_entity("emea", visit.key)
    assert third["Context"] != second["Context"] and third["Context"].startswith("s1.")
    assert "e-enc-seal-2" not in third["Context"]
    after = repository.get(Geography.EMEA, visit.key)
    assert after is not None and after.context == changed


def test_a_visit_read_from_one_row_and_written_as_another_seals_its_context_for_that_row(
    storage: Storage, unique: str
) -> None:
    repository = VisitRepository(storage, Sealer.from_text(new_key_text()))
    visit = repository.get_or_create(Geography.EMEA, f"from-{unique}", "cfg", CONTEXT)
    read = repository.get(Geography.EMEA, visit.key)
    assert read is not None
    other = repository.get_or_create(Geography.EMEA, f"to-{unique}", "cfg", VisitContext(csn="2"))
    # The same objects as read from the first row: their sealed texts are bound to it and must not be copied.
    repository.update(other, lambda current: replace(read, key=current.key, etag=current.etag))
    moved = repository.get(Geography.EMEA, other.key)
    assert moved is not None and moved.context == CONTEXT and moved.unreadable_context is None


def test_a_context_stored_in_clear_by_the_release_before_sealing_opens_confirmed_and_is_sealed_on_next_write(
    storage: Storage, unique: str
) -> None:
    repository = VisitRepository(storage, Sealer.from_text(new_key_text()))
    visit = repository.get_or_create(Geography.EMEA, f"clear-{unique}", "cfg", VisitContext(csn="1"))
    table = storage.for_geography(Geography.EMEA).table(VISITS)
    row = table.get_entity("emea", visit.key)
    row["Context"] = json.dumps({k: v for k, v in vars(CONTEXT).items() if v})  # as that release wrote it
    table.update_entity(row)
    read = repository.get(Geography.EMEA, visit.key)
    assert read is not None and read.context == CONTEXT and read.context.confirmed
    repository.update(read, with_presence(Role.PATIENT, EventKind.LOBBY, datetime.now(UTC)))
    resealed = table.get_entity("emea", visit.key)["Context"]
    assert resealed.startswith("s1.") and not any(value in resealed for value in CLEAR)


def test_sign_in_state_payloads_are_sealed_emptied_on_consumption_and_survive_rotation(storage: Storage) -> None:
    old, new = new_key_text(), new_key_text()
    payload = {"context": {"csn": "7770001", "patient": "e-pat-seal"}, "launch": {"session_id": "7770001"}}
    state = states(storage, old).create("launch-signin", payload, geography=Geography.EMEA)
    table = storage.for_geography(Geography.EMEA).table(STATES)  # a launch's states: the geography's account
    row = table.get_entity("launch-signin", state)
    assert row["Payload"].startswith("s1.") and "7770001" not in str(dict(row)) and "e-pat-seal" not in str(dict(row))

    rotating = states(storage, f"{new},{old}")
    assert rotating.consume("launch-signin", state) == payload
    consumed = table.get_entity("launch-signin", state)
    assert consumed["Consumed"] is True and consumed["Payload"] == ""  # single use keeps no payload
    with pytest.raises(StateError):
        rotating.consume("launch-signin", state)


def test_a_state_payload_moved_to_another_state_or_sealed_under_a_retired_key_is_refused(storage: Storage) -> None:
    store = states(storage, new_key_text())
    first = store.create("ehr-launch", {"a": 1}, geography=Geography.AMERICAS)
    second = store.create("ehr-launch", {"b": 2}, geography=Geography.AMERICAS)
    table = storage.for_geography(Geography.AMERICAS).table(STATES)
    moved = table.get_entity("ehr-launch", second)
    moved["Payload"] = table.get_entity("ehr-launch", first)["Payload"]
    table.update_entity(moved)
    with pytest.raises(StateError) as refused:
        store.consume("ehr-launch", second)
    assert refused.value.code == "state_unknown"
    with pytest.raises(StateError):
        states(storage, new_key_text()).consume("ehr-launch", first)
