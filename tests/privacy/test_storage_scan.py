"""The privacy promise, measured at rest: after the full sandbox flow, nothing personal is readable in any table
or queue, and nothing personal sits outside its configuration's geography.

One sandbox (the real function app on the local host, the wired Entra ID, Graph/Teams and EHR stand-ins) on a
private Azurite, so every row and message scanned comes from this flow. Two configurations:

- emea, Epic ``SetExternalConnectionStatus``: Dr. Smith's first launch (one-time Microsoft sign-in), the patient's
  MyChart launch, Graph roster notifications (join, lobby, admit, leave) → writeback; one writeback is rejected by
  the EHR, so a message lands in the poison queue;
- americas, FHIR ``AuditEvent``: the affiliate's Dr. Garcia (another tenant), the patient, the same roster.

Then every entity of every table and every message of every queue (peeked) in every account (app, americas,
emea, apac) is dumped and searched for the seeded identifiers (names, MRNs, FHIR ids, CSNs, appointment and
encounter ids, NPIs, usernames, birth dates, the clinicians' UPNs and names — taken from ``sandbox/ehr/clinic.py``
and ``sandbox/seed.py``, not copied by hand), and for personal data of one geography in another account.

A launch's state rows carry its context (sealed, emptied when used): every one is created, as the flow runs, in
``AuthStates`` of its configuration's geography under a state tagged with it, and none in the app's account.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueServiceClient

from benchmarks.launch import Launcher
from connector.services import services
from sandbox import azurite
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID
from sandbox.ehr.clinic import PATIENTS, PRACTITIONERS
from sandbox.seed import CONTOSO, DIRECTORY, FABRIKAM
from shared.configurations.model import Configuration, Status, WritebackMode
from shared.configurations.repository import ConfigurationRepository
from shared.kernel.clock import utcnow
from shared.kernel.settings import Geography
from shared.launch.service import (
    CONFIRM_STATE_KIND,
    INTRO_STATE_KIND,
    LAUNCH_STATE_KINDS,
    SIGNIN_STATE_KIND,
    STATE_KIND,
)
from shared.reports.days import WATERMARK
from shared.storage.accounts import Storage
from shared.storage.state import TABLE as STATES
from shared.storage.state import state_geography
from tests.support.launch_world import PATIENT_CONTEXT, SMITH, SMITH_UPN, LaunchWorld, launch_world
from tools.requeue_poison import requeue

pytestmark = [pytest.mark.azurite, pytest.mark.slow]

TIMEOUT = 60.0
APP = azurite.DEV_ACCOUNT
ACCOUNTS = (APP, *azurite.GEOGRAPHY_ACCOUNTS)
GARCIA = "e-prac-garcia"
GARCIA_UPN = "dr.garcia@fabrikam.example"
_BASE64URL = "A-Za-z0-9_-"  # a match must stand alone: never a run inside a sealed value or a key


# --- what must never be readable ---------------------------------------------------------------------


def seeded_identifiers(world: LaunchWorld) -> set[str]:
    """Every seeded personal identifier: EHR users, today's visits, and the clinicians' Microsoft accounts."""
    values: set[str] = set()
    for user in (*PRACTITIONERS, *PATIENTS):
        values |= {user.id, user.given, user.family, user.display, user.username, user.npi, user.mrn}
        values |= {user.birth_date, user.reference}
    for visit in world.ehr.clinic.visits:
        values |= {visit.csn, visit.appointment_id, visit.encounter_id, visit.conference_id}
    clinicians = [u for u in DIRECTORY.users if u.description.startswith(("Provider", "Staff"))]
    assert len(clinicians) >= 4
    values |= {u.upn for u in clinicians} | {u.name for u in clinicians}
    return {v for v in values if v and len(v) >= 3}


def found_in(text: str, identifiers: set[str]) -> set[str]:
    return {
        value for value in identifiers if re.search(f"(?<![{_BASE64URL}]){re.escape(value)}(?![{_BASE64URL}])", text)
    }


# --- the dump --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    account: str
    place: str  # "table Visits" | "queue writeback-events-poison"
    text: str
    entity: dict[str, Any] | None = None


def dump(port_base: int) -> list[Item]:
    """Every entity of every table and every message of every queue, in every account."""
    items: list[Item] = []
    for account in ACCOUNTS:
        connection = azurite.connection_string(account, port_base)
        tables = TableServiceClient.from_connection_string(connection)
        for table in tables.list_tables():
            for entity in tables.get_table_client(table.name).list_entities():
                row = {k: str(v) for k, v in entity.items()}
                items.append(Item(account, f"table {table.name}", json.dumps(row), row))
        queues = QueueServiceClient.from_connection_string(connection)
        for queue in queues.list_queues():
            client = queues.get_queue_client(queue.name)
            count = client.get_queue_properties().approximate_message_count
            assert count <= 32, f"{queue.name} holds {count} messages; peek shows 32"
            for message in client.peek_messages(max_messages=32):
                items.append(Item(account, f"queue {queue.name}", _decoded(message.content)))
    return items


def _decoded(content: str) -> str:
    """Queue messages are stored base64-encoded by the Functions queue extension."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return content


def report_configuration(item: Item) -> str | None:
    """The configuration a usage report row belongs to (its partition names it)."""
    entity = item.entity or {}
    if item.place == "table ReportVisits":
        return str(entity["PartitionKey"]).rsplit("_", 1)[0]
    if item.place == "table ReportDays":
        pk = str(entity["PartitionKey"])
        if pk == WATERMARK:
            return None  # the geography's own copy watermark: no configuration's
        return str(entity["RowKey"]) if pk.startswith("~") else pk
    return None


@dataclasses.dataclass(frozen=True)
class StateRow:
    """An ``AuthStates`` row as it was created (before its consumption emptied it)."""

    account: str
    kind: str
    state: str
    payload: str


@contextmanager
def created_states() -> Iterator[list[StateRow]]:
    """Every ``AuthStates`` row created in this process (the function host runs in it) while open."""
    rows: list[StateRow] = []
    original = TableClient.create_entity

    def recorded(client: TableClient, entity: Any = None, *args: Any, **kwargs: Any) -> Any:
        entity = entity if entity is not None else kwargs.pop("entity")
        if client.table_name == STATES:
            rows.append(
                StateRow(client.account_name, entity["PartitionKey"], entity["RowKey"], entity.get("Payload", ""))
            )
        return original(client, entity, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TableClient, "create_entity", recorded)
        yield rows


# --- the flow ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_azurite() -> Iterator[int]:
    """An Azurite of this module's own: everything scanned is this flow's."""
    base = azurite.free_port_base()
    process = azurite.start(base)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def world(private_azurite: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchWorld]:
    with launch_world(private_azurite, Path(tmp_path_factory.mktemp("scan")), app_account=APP) as running:
        yield running


def wait_for(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def visit_row(world: LaunchWorld, geography: Geography, visit_key: str) -> dict[str, Any] | None:
    table = Storage(world.settings).for_geography(geography).table("Visits")
    rows = list(table.query_entities("RowKey eq @key", parameters={"key": visit_key}))
    return dict(rows[0]) if rows else None


def americas_fhir_configuration(world: LaunchWorld) -> Configuration:
    """The affiliate's configuration (Fabrikam, same EHR), approved, in americas, writing FHIR AuditEvents."""
    repository = ConfigurationRepository(Storage(world.settings).app)
    pending_id = urlsplit(world.records["pending provider"].launch_url).path.split("/")[3]
    current = repository.get(FABRIKAM.id, pending_id)
    updated = dataclasses.replace(
        current,
        geography=Geography.AMERICAS,
        writeback_mode=WritebackMode.FHIR_AUDIT_EVENT,
        status=Status.APPROVED,
        approved_by="analyst@contoso.example",
        approved_at=utcnow(),
    )
    stored = repository.update(current, updated, etag=str(current.etag))
    world.records["americas patient"] = world.ehr.add_record(
        name="americas patient",
        kind="patient",
        launch_url=f"{world.url}/api/launch/{stored.id}/patient",
        context_tokens=PATIENT_CONTEXT,
        client_id=DEMO_PATIENT_CLIENT_ID,
    )
    return stored


def run_visit(
    world: LaunchWorld,
    *,
    geography: Geography,
    provider_record: str,
    patient_record: str,
    practitioner: str,
    patient: str,
    upn: str,
    reject: str | None = None,
) -> str:
    """Provider launch (one-time sign-in), roster, patient launch, lobby, admit, leave; returns the visit key.

    ``reject``: the EHR refuses, for good, the writeback of the patient's "launch" event (an AuditEvent) or
    "disconnect", so that message lands in the poison queue.
    """
    clinic_visit = next(
        v for v in world.ehr.clinic.visits if v.practitioner_id == practitioner and v.patient_id == patient
    )
    organizer = DIRECTORY.user_by_upn(upn)
    assert organizer is not None
    launcher = Launcher(world)
    _, page = launcher.launch(provider_record, clinic_visit.appointment_id, practitioner, sign_in_as=upn)
    visit_key = urlsplit(page).path.rsplit("/", 1)[-1]
    row = wait_for(
        lambda: (r := visit_row(world, geography, visit_key)) and r.get("SubscriptionId") and r,
        "the provider's launch event subscribes the meeting",
    )
    graph = world.stand_ins.graph
    meeting_id = row["MeetingId"]
    doctor = graph.join_user(meeting_id, organizer.object_id)

    def presence(role: str, state: str) -> bool:
        current = visit_row(world, geography, visit_key) or {}
        return json.loads(current.get("Presence") or "{}").get(role, {}).get("state") == state

    wait_for(lambda: presence("provider", "connected"), "the provider joins")
    if reject == "launch":  # once the provider's roster events are all written, the next AuditEvent is the launch's
        graph.wait_for_deliveries()
        wait_for(lambda: settled(world), "the provider's events are written")
        audit_events = urlsplit(world.ehr.config.fhir_base).path + "/AuditEvent"
        world.ehr.faults.update({"paths": [audit_events], "fail_next": 1, "fail_status": 400})
    _, joined = launcher.launch(patient_record, clinic_visit.appointment_id, patient)
    assert joined == row["JoinWebUrl"]
    wait_for(lambda: settled(world), "the patient's launch event is handled")  # before Graph reports the lobby
    name = next(p.display for p in PATIENTS if p.id == patient)
    guest = graph.join_anonymous(meeting_id, name)  # the patient types their name into Teams
    graph.admit(meeting_id, guest.id)
    wait_for(lambda: presence("patient", "connected"), "the patient is admitted")
    world.ehr.faults.reset()
    if reject == "disconnect":
        world.ehr.faults.update({"fail_next": 1, "fail_status": 400})
    graph.leave(meeting_id, guest.id)
    wait_for(lambda: presence("patient", "disconnected"), "the patient leaves")
    graph.leave(meeting_id, doctor.id)
    wait_for(lambda: presence("provider", "disconnected"), "the provider leaves")
    return visit_key


def settled(world: LaunchWorld) -> bool:
    queue = Storage(world.settings).app.queue(world.settings.writeback_queue_name)
    return queue.get_queue_properties().approximate_message_count == 0


@pytest.fixture(scope="module")
def state_rows() -> Iterator[list[StateRow]]:
    """The state rows the flow creates (``scanned`` runs the flow while this records)."""
    with created_states() as rows:
        yield rows


@pytest.fixture(scope="module")
def scanned(
    world: LaunchWorld, private_azurite: int, state_rows: list[StateRow]
) -> tuple[list[Item], dict[Geography, str]]:
    """The whole flow, then the dump of every account."""
    americas = americas_fhir_configuration(world)
    keys = {
        Geography.EMEA: run_visit(
            world,
            geography=Geography.EMEA,
            provider_record="provider",
            patient_record="patient",
            practitioner=SMITH,
            patient="e-pat-patel",
            upn=SMITH_UPN,
            reject="disconnect",
        ),
        Geography.AMERICAS: run_visit(
            world,
            geography=americas.geography,
            provider_record="pending provider",
            patient_record="americas patient",
            practitioner=GARCIA,
            patient="e-pat-okafor",
            upn=GARCIA_UPN,
            reject="launch",
        ),
    }
    wait_for(lambda: settled(world), "the writeback queue drains")
    poison = Storage(world.settings).app.queue(f"{world.settings.writeback_queue_name}-poison")
    wait_for(
        lambda: poison.get_queue_properties().approximate_message_count >= 2,
        "the rejected launch event and disconnect are poisoned",
    )
    assert world.ehr.audit_events(), "the americas configuration wrote AuditEvents"
    assert world.ehr.connection_status_changes(), "the emea configuration wrote Epic connection statuses"
    time.sleep(1.0)  # the worker's last row writes after the queue drained
    for geography in services().storage.geographies:  # the report's timer: folded facts into ReportVisits
        services().report_flush.flush(geography)
    return dump(private_azurite), keys


# --- the checks --------------------------------------------------------------------------------------------


def test_the_flow_left_rows_and_messages_to_scan(scanned: tuple[list[Item], dict[Geography, str]]) -> None:
    items, keys = scanned
    places = {(i.account, i.place) for i in items}
    assert ("emea", "table AuthStates") in places and ("americas", "table AuthStates") in places
    assert (APP, "table WritebackFailures") in places
    assert any(place.endswith("-poison") for account, place in places if account == APP)
    assert ("emea", "table Visits") in places and ("americas", "table Visits") in places
    assert ("emea", "table EhrUserMap") in places and ("americas", "table EhrUserMap") in places
    assert ("emea", "table ReportVisits") in places and ("americas", "table ReportVisits") in places  # usage report
    assert all(any(key in i.text for i in items) for key in keys.values())


def test_no_seeded_identifier_is_readable_in_any_table_or_queue(
    world: LaunchWorld, scanned: tuple[list[Item], dict[Geography, str]]
) -> None:
    items, _ = scanned
    identifiers = seeded_identifiers(world)
    leaks = {}
    for item in items:
        found = found_in(item.text, identifiers)
        if found:
            leaks.setdefault(f"{item.account} {item.place}", set()).update(found)
    assert not leaks, f"clear identifiers at rest: {leaks}"


def test_personal_data_stays_in_its_configurations_geography(
    world: LaunchWorld, scanned: tuple[list[Item], dict[Geography, str]]
) -> None:
    """Visit rows, sign-in mappings, Microsoft object ids, meetings: only in their configuration's geography."""
    items, keys = scanned
    configurations = ConfigurationRepository(Storage(world.settings).app)
    geography_of = {
        c.id: c.geography.value for tenant in (CONTOSO.id, FABRIKAM.id) for c in configurations.list_for_tenant(tenant)
    }
    smith, garcia = DIRECTORY.user_by_upn(SMITH_UPN), DIRECTORY.user_by_upn(GARCIA_UPN)
    assert smith is not None and garcia is not None
    home = {Geography.EMEA.value: smith.object_id, Geography.AMERICAS.value: garcia.object_id}
    meetings = {
        geography.value: (row["MeetingId"], row["JoinWebUrl"])
        for geography, key in keys.items()
        if (row := visit_row(world, geography, key)) is not None
    }
    assert set(meetings) == set(home)
    misplaced = []
    for item in items:
        entity = item.entity or {}
        configuration = entity.get("ConfigurationId") or report_configuration(item)
        wrong = geography_of.get(configuration) if configuration else item.account
        if item.account in azurite.GEOGRAPHY_ACCOUNTS and wrong != item.account:
            misplaced.append(f"{item.account} {item.place}: a row of a {wrong} configuration's visit")
        for geography, object_id in home.items():
            if item.account != geography and object_id in item.text:
                misplaced.append(f"{item.account} {item.place}: the {geography} clinician's Microsoft object id")
        for geography, (meeting_id, join_url) in meetings.items():
            if item.account != geography and (meeting_id in item.text or join_url in item.text):
                misplaced.append(f"{item.account} {item.place}: the {geography} meeting")
    assert not misplaced, misplaced


def test_launch_states_live_only_in_their_configurations_geography(
    scanned: tuple[list[Item], dict[Geography, str]], state_rows: list[StateRow]
) -> None:
    """Each launch's states (they carry its context) are created in its configuration's geography, tagged with it;
    the app's account holds none; by the end of the flow every one is used and emptied."""
    items, keys = scanned
    launches = [row for row in state_rows if row.kind in LAUNCH_STATE_KINDS]
    created: dict[str, dict[str, int]] = {}
    for row in launches:
        if row.kind == STATE_KIND:  # sealed in the state itself: its row is written when used, keyed by its digest
            assert row.account in {g.value for g in keys} and row.payload == "", row
            assert re.fullmatch("[0-9a-f]{64}", row.state), row
        else:
            tagged = state_geography(row.state)
            assert tagged is not None and row.account == tagged.value, (
                f"a {row.kind} state of {tagged} in {row.account}"
            )
            assert row.payload.startswith("s1."), row.kind  # the context travels sealed
        counts = created.setdefault(row.account, {})
        counts[row.kind] = counts.get(row.kind, 0) + 1
    # Per configuration: the provider's launch, its one-time sign-in (explained, then started) and link
    # confirmation, the patient's launch.
    one_visit = {STATE_KIND: 2, INTRO_STATE_KIND: 1, SIGNIN_STATE_KIND: 1, CONFIRM_STATE_KIND: 1}
    assert created == {geography.value: one_visit for geography in keys}
    assert not [row for row in state_rows if row.account == APP and row.kind in LAUNCH_STATE_KINDS]

    at_rest = {
        (i.account, i.entity["PartitionKey"], i.entity["RowKey"]): i.entity
        for i in items
        if i.place == f"table {STATES}" and i.entity is not None
    }
    in_app = [(kind, state) for account, kind, state in at_rest if account == APP]
    assert not [(k, s) for k, s in in_app if k in LAUNCH_STATE_KINDS or state_geography(s)], "launch states in app"
    for row in launches:
        entity = at_rest[row.account, row.kind, row.state]  # still there (until the sweep), in that account only
        assert (entity["Consumed"], entity.get("Payload", "")) == ("True", ""), row.kind  # used, and nothing kept
    assert len({(account, state) for account, _, state in at_rest}) == len({state for _, _, state in at_rest})


def test_sealed_poison_messages_replay_through_the_tool_on_the_running_host(
    world: LaunchWorld, scanned: tuple[list[Item], dict[Geography, str]]
) -> None:
    """Runs last: the rejected launch event, sealed in the poison queue, is written once replayed."""
    items, _ = scanned
    poisoned = [json.loads(i.text) for i in items if i.account == APP and i.place.endswith("-poison")]
    launches = [p for p in poisoned if p["source"] == "launch"]
    assert len(launches) == 1, [(p["geography"], p["role"], p["kind"], p["source"]) for p in poisoned]
    [launch] = launches
    assert launch["sealed"].startswith("s1.")  # its references travel sealed, nothing else in clear
    assert set(launch) == {"v", "id", "configurationId", "geography", "visitKey", "kind", "role", "occurredAt",
                           "source", "sealed"}  # fmt: skip
    tagged = [a for a in world.ehr.audit_events() if a["meta"]["tag"][0]["code"] == launch["id"]]
    assert tagged == []
    moved = requeue(Storage(world.settings).app, world.settings.writeback_queue_name)
    assert moved.moved == len(poisoned)
    written = wait_for(
        lambda: [a for a in world.ehr.audit_events() if a["meta"]["tag"][0]["code"] == launch["id"]],
        "the replayed launch event is written",
    )
    okafor = next(p for p in PATIENTS if p.id == "e-pat-okafor")
    assert [a["agent"][0]["who"] for a in written] == [{"reference": okafor.reference}]
