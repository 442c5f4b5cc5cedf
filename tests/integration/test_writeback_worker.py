"""The writeback worker: one EHR effect per event under duplicate delivery, retries and permanent failures."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.table_operations import TableOperations
from benchmarks.writeback_load import visit_context
from sandbox.ehr import EhrSandbox
from sandbox.ehr.clinic import Visit as ClinicVisit
from shared.configurations.model import WritebackMode
from shared.ehr.backend_services import BackendServices
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.ehr.fhir_writeback import FhirAuditEvents, NoWriteback
from shared.http.outbound import SafeHttp
from shared.kernel.errors import NotFound, StorageUnavailable, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.identifiers import log_id
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography
from shared.launch.groups import GroupVisits
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent, attendee_key, label_hint, user_hint
from shared.visits.members import GroupMembers
from shared.visits.model import Colleague, Visit, VisitContext, with_colleague, with_group
from shared.visits.panel import panel_of
from shared.visits.repository import TABLE as VISITS_TABLE
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event, seal_context, seal_event
from shared.writeback.ledger import DONE, FAILED, RELEASED, RETRY_SPAN, WritebackLedger
from shared.writeback.model import WritebackAdapter, WritebackTarget, Written
from shared.writeback.worker import (
    FAILURES_TABLE,
    INVALID_PURPOSE,
    ClaimHeld,
    ContextMissing,
    FailureLog,
    RetryPolicy,
    WritebackWorker,
)
from tests.integration.test_writeback_adapters import checked_http, smart_client
from tests.sandbox.ehr_support import *  # noqa: F403 - fixtures
from tests.sandbox.ehr_support import BACKEND, NO_SCS, ClientKeys
from tools.requeue_poison import requeue

pytestmark = pytest.mark.azurite
SEALER = Sealer.from_text(new_key_text())
SECRET = "writeback-worker-test-secret"
MEMBERS = GroupMembers(SECRET)


class Targets:
    def __init__(self, ehr: EhrSandbox) -> None:
        self.ehr = ehr
        self.by_id: dict[str, WritebackTarget] = {}

    def add(self, configuration_id: str, mode: WritebackMode, client_id: str = BACKEND) -> None:
        self.by_id[configuration_id] = WritebackTarget(mode, self.ehr.config.fhir_base, client_id)

    def target_for(self, configuration_id: str) -> WritebackTarget:
        try:
            return self.by_id[configuration_id]
        except KeyError:
            raise NotFound("no such configuration") from None


@pytest.fixture(autouse=True)
def no_faults(ehr: EhrSandbox) -> Iterator[None]:
    ehr.faults.reset()
    yield
    ehr.faults.reset()


@pytest.fixture
def http() -> Iterator[SafeHttp]:
    client = checked_http(2.0)
    yield client
    client.close()


@pytest.fixture
def targets(ehr: EhrSandbox, unique: str) -> Targets:
    targets = Targets(ehr)
    for mode in WritebackMode:
        targets.add(f"{mode.value}-{unique}", mode)
    targets.add(f"noscs-{unique}", WritebackMode.EPIC, NO_SCS)
    return targets


@pytest.fixture
def failures(storage: Storage, unique: str) -> FailureLog:
    return FailureLog(storage.app, f"wb-{unique}", SEALER)


def build_worker(
    storage: Storage,
    targets: Targets,
    failures: FailureLog,
    http: SafeHttp,
    client_keys: ClientKeys,
    report: Callable[[VisitEvent], Callable[[Visit], Visit | None] | None] | None = None,
) -> WritebackWorker:
    """A worker wired as the composition root wires it, with the sandbox EHR's Backend Services client."""
    backend = BackendServices(smart_client(client_keys))
    adapters: dict[WritebackMode, WritebackAdapter] = {
        WritebackMode.EPIC: EpicConnectionStatus(http, backend),
        WritebackMode.FHIR_AUDIT_EVENT: FhirAuditEvents(http, backend),
        WritebackMode.NONE: NoWriteback(),
    }
    return WritebackWorker(
        VisitRepository(storage, SEALER),
        WritebackLedger(storage),
        targets,
        adapters,
        failures,
        sealer=SEALER,
        members=MEMBERS,
        retry=RetryPolicy(attempts=2, base_delay=0.01),
        report=report,
    )


@pytest.fixture
def worker(
    storage: Storage, targets: Targets, failures: FailureLog, http: SafeHttp, client_keys: ClientKeys
) -> WritebackWorker:
    return build_worker(storage, targets, failures, http, client_keys)


def ledger_state(storage: Storage, visit: Visit) -> dict[str, str]:
    return {entry.event_id: entry.state for entry in WritebackLedger(storage).entries(visit.geography, visit.key)}


def open_visit(storage: Storage, ehr: EhrSandbox, configuration_id: str, key: str) -> Visit:
    context = visit_context(ehr.clinic.visits[1])
    return VisitRepository(storage, SEALER).get_or_create(Geography.AMERICAS, key, configuration_id, context)


def graph_event(
    visit: Visit, kind: EventKind, role: Role, second: int = 0, *, at: datetime | None = None
) -> VisitEvent:
    return VisitEvent(
        configuration_id=visit.configuration_id,
        geography=visit.geography.value,
        visit_key=visit.key,
        kind=kind,
        role=role,
        occurred_at=at or datetime(2026, 11, 25, 15, 0, second, tzinfo=UTC),
        source=Source.GRAPH,
    )


def poisoned(storage: Storage, failures: FailureLog) -> list[str]:
    return [m.content for m in storage.app.queue(failures.poison_queue).peek_messages(max_messages=32)]


def test_graph_event_gets_launch_context_and_is_written_once_under_duplicate_delivery(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PATIENT)
    seeded = ehr.clinic.visits[1]
    before = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.patient_id, status="1")
    outcomes = [worker.handle(event.to_json()) for _ in range(3)]
    assert [o.status for o in outcomes] == ["written", "duplicate", "duplicate"]
    after = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.patient_id, status="1")
    assert after == before + 1
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PATIENT].state is EventKind.CONNECTED
    assert ledger_state(storage, visit) == {event.id: DONE}


def test_concurrent_duplicates_write_once(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.DISCONNECTED, Role.PROVIDER, 30)
    seeded = ehr.clinic.visits[1]
    before = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.practitioner_id, status="2")
    ehr.faults.update({"latency_ms": 150})  # keep the first claim in flight while the others arrive
    results: list[str] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(worker.handle(event.to_json()).status)
        except ClaimHeld:
            results.append("retry")

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("written") == 1, results
    assert set(results) <= {"written", "duplicate", "retry"}
    assert ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.practitioner_id, status="2") == (
        before + 1
    )


def test_retryable_failure_releases_the_claim_and_raises_then_a_retry_writes(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 5)
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(event.to_json())
    assert ledger_state(storage, visit) == {event.id: RELEASED}  # pending, and the retry may claim at once
    # The Teams fact (and its report facts) is kept before the retry: an EHR down for longer than the queue's
    # retries loses neither the panel's truth nor the usage report's.
    kept = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert kept is not None and kept.presence[Role.PATIENT].state is EventKind.CONNECTED
    ehr.faults.reset()
    assert worker.handle(event.to_json()).status == "written"
    assert ledger_state(storage, visit) == {event.id: DONE}


def test_an_idempotent_adapters_events_keep_no_ledger_and_a_retry_writes_once(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.LOBBY, Role.PATIENT, 5)
    before = len(ehr.audit_events())
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(event.to_json())
    ehr.faults.reset()
    assert [worker.handle(event.to_json()).status for _ in range(2)] == ["written", "written"]
    assert len(ehr.audit_events()) == before + 1  # the conditional create: a repeated delivery finds the first
    assert ledger_state(storage, visit) == {}


def test_an_event_waiting_for_its_retry_keeps_the_context_until_it_is_written(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    repository = VisitRepository(storage, SEALER)
    left = graph_event(visit, EventKind.DISCONNECTED, Role.PATIENT, 1)
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(left.to_json())
    ehr.faults.reset()
    for kind, second in ((EventKind.CONNECTED, 2), (EventKind.DISCONNECTED, 3)):
        assert worker.handle(graph_event(visit, kind, Role.PROVIDER, second).to_json()).status == "written"
    waiting = repository.get(Geography.AMERICAS, visit.key)
    assert waiting is not None and waiting.presence[Role.PROVIDER].state is EventKind.DISCONNECTED  # ended
    assert waiting.context == visit.context  # kept: the patient's event still needs it
    assert worker.handle(left.to_json()).status == "written"
    released = repository.get(Geography.AMERICAS, visit.key)
    assert released is not None and released.context == VisitContext()
    assert set(ledger_state(storage, visit).values()) == {DONE}


def test_an_idempotent_adapters_visit_keeps_its_context_for_the_retry_span_after_the_meeting_ended(
    storage: Storage,
    ehr: EhrSandbox,
    worker: WritebackWorker,
    targets: Targets,
    failures: FailureLog,
    unique: str,
) -> None:
    """No ledger rows say an AuditEvent is waiting for its retry: the context stays RETRY_SPAN after the end."""
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    repository = VisitRepository(storage, SEALER)
    now = datetime.now(UTC)
    left = graph_event(visit, EventKind.DISCONNECTED, Role.PATIENT, at=now - timedelta(seconds=3))
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(left.to_json())
    ehr.faults.reset()
    for kind, ago in ((EventKind.CONNECTED, 2), (EventKind.DISCONNECTED, 1)):
        event = graph_event(visit, kind, Role.PROVIDER, at=now - timedelta(seconds=ago))
        assert worker.handle(event.to_json()).status == "written"
    ended = repository.get(Geography.AMERICAS, visit.key)
    assert ended is not None and ended.presence[Role.PROVIDER].state is EventKind.DISCONNECTED
    assert ended.context == visit.context  # within RETRY_SPAN of the end: a retry may still need it
    assert worker.handle(left.to_json()).status == "written"  # the retry finds it
    assert ledger_state(storage, visit) == {}

    # The next upkeep scan after RETRY_SPAN releases it (as would the next event).
    later = WritebackLedger(storage, clock=lambda: datetime.now(UTC) + RETRY_SPAN)
    adapters: dict[WritebackMode, WritebackAdapter] = {WritebackMode.FHIR_AUDIT_EVENT: NoAuditEvents()}
    scanning = WritebackWorker(
        VisitRepository(storage, SEALER), later, targets, adapters, failures, sealer=SEALER, members=MEMBERS
    )
    current = repository.get(Geography.AMERICAS, visit.key)
    assert current is not None and scanning.release_context_when_done(current).context == VisitContext()


class NoAuditEvents:
    """An idempotent adapter that is never called (the scan only asks how pending is measured)."""

    idempotent = True

    def skips(self, event: VisitEvent) -> bool:
        return False

    def write(self, event: VisitEvent, target: object) -> Written:
        raise AssertionError("the upkeep scan writes nothing back")


def test_an_event_the_queue_gave_up_on_no_longer_keeps_the_context_and_the_upkeep_scan_releases_it(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, targets: Targets, failures: FailureLog, unique: str
) -> None:
    """Poisoned after its retries, nothing comes after it: the timer's scan ends the context after RETRY_SPAN."""
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    repository = VisitRepository(storage, SEALER)
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(graph_event(visit, EventKind.DISCONNECTED, Role.PATIENT, 1).to_json())
    ehr.faults.reset()
    for kind, second in ((EventKind.CONNECTED, 2), (EventKind.DISCONNECTED, 3)):
        assert worker.handle(graph_event(visit, kind, Role.PROVIDER, second).to_json()).status == "written"
    ended = repository.get(Geography.AMERICAS, visit.key)
    assert ended is not None and worker.release_context_when_done(ended).context == visit.context  # still pending

    # The patient's message is poisoned and never retried; the next upkeep scan comes after RETRY_SPAN.
    later = WritebackLedger(storage, clock=lambda: datetime.now(UTC) + RETRY_SPAN)
    scanning = WritebackWorker(
        VisitRepository(storage, SEALER), later, targets, {}, failures, sealer=SEALER, members=MEMBERS
    )
    released = scanning.release_context_when_done(ended)
    assert released.context == VisitContext()
    assert set(ledger_state(storage, visit).values()) == {DONE, RELEASED}


def test_long_retry_after_goes_back_to_the_queue(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    ehr.faults.update({"throttle_rate": 1.0, "retry_after": 30})
    with pytest.raises(UpstreamThrottled) as caught:
        worker.handle(graph_event(visit, EventKind.LOBBY, Role.PATIENT, 6).to_json())
    assert caught.value.retry_after == 30


def test_short_retry_after_is_honoured_inline(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    ehr.faults.update({"fail_next": 1, "fail_status": 503})
    assert worker.handle(graph_event(visit, EventKind.LOBBY, Role.PATIENT, 7).to_json()).status == "written"


def test_permanent_rejection_is_recorded_and_poisoned_without_retry(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, failures: FailureLog, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"noscs-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 8)
    outcome = worker.handle(event.to_json())
    assert (outcome.status, outcome.code) == ("failed", "http_403")
    assert poisoned(storage, failures) == [event.to_json()]
    rows = list(storage.app.table(FAILURES_TABLE).query_entities("RowKey eq @id", parameters={"id": event.id}))
    assert [r["Code"] for r in rows] == ["http_403"]
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PROVIDER].state is EventKind.CONNECTED
    assert ledger_state(storage, visit) == {event.id: FAILED}  # terminal: not pending, the context may go


@pytest.mark.parametrize("body", ["not json", '{"v": 2}', '{"v": 1, "kind": "lobby"}'])
def test_invalid_messages_go_to_the_poison_queue(
    storage: Storage, worker: WritebackWorker, failures: FailureLog, body: str
) -> None:
    assert worker.handle(body).status == "failed"
    (kept,) = poisoned(storage, failures)
    assert body not in kept  # whatever it holds is unreadable there, and it is not lost
    assert SEALER.open(json.loads(kept)["invalid"], purpose=INVALID_PURPOSE) == body


def test_events_of_a_gone_visit_or_configuration_are_poisoned(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, failures: FailureLog, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    gone_visit = replace(graph_event(visit, EventKind.CONNECTED, Role.PATIENT), visit_key="no-such-visit", id="")
    orphan = open_visit(storage, ehr, f"deleted-{unique}", f"orphan-{unique}")
    assert worker.handle(gone_visit.to_json()).code == "visit_gone"
    assert worker.handle(graph_event(orphan, EventKind.CONNECTED, Role.PATIENT).to_json()).code == "configuration_gone"
    assert len(poisoned(storage, failures)) == 2


def test_mode_none_updates_presence_only_and_ignores_older_facts(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"none-{unique}", f"visit-{unique}")
    before = ehr.count_status_changes()
    later = graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 20)
    earlier = graph_event(visit, EventKind.LOBBY, Role.PATIENT, 10)
    assert worker.handle(later.to_json()).status == "skipped"
    assert worker.handle(earlier.to_json()).status == "skipped"
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PATIENT].state is EventKind.CONNECTED
    assert ehr.count_status_changes() == before


def test_without_writeback_the_event_that_ends_the_meeting_releases_the_context_in_its_presence_write(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    """A skipped event (no writeback: nothing is ever pending) that ends the meeting: one read, one write."""
    visit = open_visit(storage, ehr, f"none-{unique}", f"visit-{unique}")
    assert worker.handle(graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 1).to_json()).status == "skipped"
    with TableOperations().installed() as ops:
        assert worker.handle(graph_event(visit, EventKind.DISCONNECTED, Role.PATIENT, 2).to_json()).status == "skipped"
        assert ops.take() == {"Visits.get_entity": 1, "Visits.update_entity": 1}
    ended = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert ended is not None and ended.context == VisitContext()
    assert ended.presence[Role.PATIENT].state is EventKind.DISCONNECTED  # stored in the same write


def test_a_ledger_that_cannot_answer_at_the_meetings_end_keeps_the_context_and_stores_the_presence(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pending question rides in the presence write: storage failing to answer it counts as pending (the upkeep
    timer asks again), so the event's presence and its report facts are still stored and the event completes."""
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    assert worker.handle(graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 1).to_json()).status == "written"

    def unavailable(self: WritebackLedger, geography: Geography, visit_key: str) -> bool:
        raise StorageUnavailable("Storage STORAGE_AMERICAS is unavailable.")

    monkeypatch.setattr(WritebackLedger, "pending", unavailable)
    assert worker.handle(graph_event(visit, EventKind.DISCONNECTED, Role.PROVIDER, 2).to_json()).status == "written"
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PROVIDER].state is EventKind.DISCONNECTED
    assert stored.context.csn  # kept: the release waits for an answer
    monkeypatch.undo()
    assert worker.release_context_when_done(stored).context == VisitContext()  # the upkeep scan's turn


def test_a_stale_claim_of_a_crashed_worker_can_be_taken_over(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 40)
    crashed_at = datetime.now(UTC) - timedelta(minutes=5)
    crashed = WritebackLedger(storage, clock=lambda: crashed_at)
    crashed.claim(visit.geography, visit.key, event.id, expires_at=visit.expires_at)
    assert worker.handle(event.to_json()).status == "written"
    entry = WritebackLedger(storage).entries(visit.geography, visit.key)[0]
    assert (entry.state, entry.attempt) == (DONE, 2)


def test_a_live_claim_of_another_worker_is_retried_later(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 41)
    seeded = ehr.clinic.visits[1]
    before = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.practitioner_id, status="1")
    WritebackLedger(storage).claim(visit.geography, visit.key, event.id, expires_at=visit.expires_at)
    with pytest.raises(ClaimHeld):
        worker.handle(event.to_json())
    after = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.practitioner_id, status="1")
    assert after == before


# --- sealed references, the context's lifetime, unopenable values, replay of sealed poison ---------


def launch_event(visit: Visit, role: Role, participant: str, second: int, **references: str) -> VisitEvent:
    """A launch event as the launch service queues it: its references sealed."""
    event = VisitEvent(
        configuration_id=visit.configuration_id,
        geography=visit.geography.value,
        visit_key=visit.key,
        kind=EventKind.CONNECTED if role is Role.PROVIDER else EventKind.LOBBY,
        role=role,
        occurred_at=datetime(2026, 11, 25, 15, 0, second, tzinfo=UTC),
        source=Source.LAUNCH,
        participant=participant,
        **references,
    )
    return seal_event(SEALER, event)


def test_the_context_is_released_once_the_meeting_ended_and_its_writebacks_are_done_and_a_launch_restores_it(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    seeded = ehr.clinic.visits[1]
    repository = VisitRepository(storage, SEALER)
    for role, kind, second in (
        (Role.PROVIDER, EventKind.CONNECTED, 1),
        (Role.PATIENT, EventKind.CONNECTED, 2),
        (Role.PATIENT, EventKind.DISCONNECTED, 3),
    ):
        assert worker.handle(graph_event(visit, kind, role, second).to_json()).status == "written"
        current = repository.get(Geography.AMERICAS, visit.key)
        assert current is not None and current.context.csn == seeded.csn  # the provider is still in the call
    caplog.set_level(logging.INFO, logger="shared.visits.lifetime")
    assert worker.handle(graph_event(visit, EventKind.DISCONNECTED, Role.PROVIDER, 4).to_json()).status == "written"
    ended = repository.get(Geography.AMERICAS, visit.key)
    assert ended is not None and ended.context == VisitContext()  # released at once, not 24 h later
    entity = storage.for_geography(Geography.AMERICAS).table(VISITS_TABLE).get_entity("americas", visit.key)
    assert entity["Context"] == ""
    assert f"Released the launch context of visit {log_id(visit.key)}" in caplog.text
    assert visit.key not in caplog.text

    # Someone rejoins through the Teams link without launching: the event waits (retry), then a launch restores.
    rejoined = graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 10)
    with pytest.raises(ContextMissing):
        worker.handle(rejoined.to_json())
    # An event that names only its participant (sealed) needs the visit's CSN as much: it waits too, never fails.
    named = seal_event(
        SEALER, replace(graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 11), participant="Patient/p")
    )
    with pytest.raises(ContextMissing):
        worker.handle(named.to_json())
    assert ledger_state(storage, visit)[rejoined.id] == RELEASED  # pending, claimable by the retry at once
    relaunch = launch_event(
        visit, Role.PROVIDER, f"Practitioner/{seeded.practitioner_id}", 9, csn=seeded.csn, encounter="e-enc-x"
    )
    assert worker.handle(relaunch.to_json()).status == "skipped"  # Epic: launches are not written back
    restored = repository.get(Geography.AMERICAS, visit.key)
    assert restored is not None and restored.context.csn == seeded.csn
    assert restored.context.provider == f"Practitioner/{seeded.practitioner_id}"
    assert worker.handle(rejoined.to_json()).status == "written"


def test_a_launch_event_is_written_for_the_provider_who_launched_it(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    covering = launch_event(visit, Role.PROVIDER, "Practitioner/e-prac-covering", 5, csn=ehr.clinic.visits[1].csn)
    assert "e-prac-covering" not in covering.to_json()
    assert worker.handle(covering.to_json()).status == "written"
    [audit] = [a for a in ehr.audit_events() if a["meta"]["tag"][0]["code"] == covering.id]
    assert audit["agent"][0]["who"] == {"reference": "Practitioner/e-prac-covering"}
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    # The visit's provider stays the first one (Graph's organizer events are written for them).
    assert stored is not None and stored.context.provider == f"Practitioner/{ehr.clinic.visits[1].practitioner_id}"


def test_unopenable_sealed_values_are_permanent_failures_with_a_clear_log_line(
    storage: Storage,
    ehr: EhrSandbox,
    worker: WritebackWorker,
    failures: FailureLog,
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    table = storage.for_geography(Geography.AMERICAS).table(VISITS_TABLE)
    # The row's context sealed under a key this deployment no longer has (retired too early).
    retired = Sealer.from_text(new_key_text())
    entity = table.get_entity("americas", visit.key)
    entity["Context"] = seal_context(retired, visit.context, geography="americas", key=visit.key)
    table.update_entity(entity)
    caplog.set_level(logging.INFO)
    event = graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 11)
    outcome = worker.handle(event.to_json())
    assert (outcome.status, outcome.code) == ("failed", "sealed_value_invalid")
    assert poisoned(storage, failures) == [event.to_json()]
    line = next(r.getMessage() for r in caplog.records if "cannot be opened" in r.getMessage())
    assert log_id(event.id) in line and log_id(visit.key) in line and visit.key not in line
    kept = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert kept is not None and kept.unreadable_context is not None
    assert table.get_entity("americas", visit.key)["Context"] == entity["Context"]  # kept: a restored key opens it

    # A launch event whose sealed references were tampered with.
    launch = launch_event(visit, Role.PATIENT, "Patient/e-pat-x", 12, csn="1")
    assert launch.sealed is not None
    forged = replace(launch, sealed=launch.sealed[:-4] + ("AAAA" if not launch.sealed.endswith("AAAA") else "BBBB"))
    outcome = worker.handle(forged.to_json())
    assert (outcome.status, outcome.code) == ("failed", "sealed_value_invalid")


def test_failure_rows_expire_and_poison_messages_carry_no_clear_identifier(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, failures: FailureLog, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"noscs-{unique}", f"visit-{unique}")
    legacy = json.dumps(  # queued by the release before sealing: clear references
        {
            **json.loads(graph_event(visit, EventKind.CONNECTED, Role.PATIENT, 13).to_json()),
            "v": 1,
            "participant": "Patient/e-pat-legacy",
            "csn": "9999001",
        }
    )
    assert worker.handle(legacy).code == "http_403"
    (kept,) = poisoned(storage, failures)
    assert "e-pat-legacy" not in kept and "9999001" not in kept
    assert open_event(SEALER, VisitEvent.from_json(kept)).references == {
        "participant": "Patient/e-pat-legacy",
        "csn": "9999001",
    }
    [row] = storage.app.table(FAILURES_TABLE).query_entities(
        "RowKey eq @id", parameters={"id": VisitEvent.from_json(kept).id}
    )
    assert timedelta(days=6, hours=23) < row["ExpiresAt"] - datetime.now(UTC) <= timedelta(days=7)


def test_sealed_poison_messages_are_replayed_by_the_tool_and_written(
    storage: Storage, ehr: EhrSandbox, targets: Targets, worker: WritebackWorker, failures: FailureLog, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"later-{unique}", f"visit-{unique}")  # its configuration is not there yet
    seeded = ehr.clinic.visits[1]
    launch = launch_event(visit, Role.PATIENT, f"Patient/{seeded.patient_id}", 14, csn=seeded.csn)
    assert worker.handle(launch.to_json()).code == "configuration_gone"
    assert poisoned(storage, failures) == [launch.to_json()]  # sealed as queued

    targets.add(f"later-{unique}", WritebackMode.FHIR_AUDIT_EVENT)  # the cause is fixed
    queue_name = failures.poison_queue.removesuffix("-poison")
    assert requeue(storage.app, queue_name).moved == 1
    [message] = storage.app.queue(queue_name).receive_messages()
    assert message.content == launch.to_json()
    assert worker.handle(message.content).status == "written"
    [audit] = [a for a in ehr.audit_events() if a["meta"]["tag"][0]["code"] == launch.id]
    assert audit["agent"][0]["who"] == {"reference": f"Patient/{seeded.patient_id}"}
    assert poisoned(storage, failures) == []


def test_table_operations_per_event_two_when_idempotent_or_skipped_four_through_the_ledger(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    fhir = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-f-{unique}")
    epic = open_visit(storage, ehr, f"epic-{unique}", f"visit-e-{unique}")
    with TableOperations().installed() as ops:
        assert worker.handle(graph_event(fhir, EventKind.CONNECTED, Role.PROVIDER, 1).to_json()).status == "written"
        assert ops.take() == {"Visits.get_entity": 1, "Visits.update_entity": 1}
        assert worker.handle(graph_event(epic, EventKind.LOBBY, Role.PATIENT, 2).to_json()).status == "skipped"
        assert ops.take() == {"Visits.get_entity": 1, "Visits.update_entity": 1}
        assert worker.handle(graph_event(epic, EventKind.CONNECTED, Role.PATIENT, 3).to_json()).status == "written"
        assert ops.take() == {
            "Visits.get_entity": 1,
            "WritebackLedger.create_entity": 1,
            "WritebackLedger.update_entity": 1,
            "Visits.update_entity": 1,
        }


def test_the_event_that_ends_an_epic_meeting_asks_the_ledger_once_and_releases_the_context_in_its_presence_write(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    """The end's extra work is one query of the visit's ledger rows (nothing pending): the context's release rides
    in the event's own presence write, which stores the meeting's end and the release at once."""
    epic = open_visit(storage, ehr, f"epic-{unique}", f"visit-end-{unique}")
    assert worker.handle(graph_event(epic, EventKind.CONNECTED, Role.PROVIDER, 1).to_json()).status == "written"
    with TableOperations().installed() as ops:
        assert worker.handle(graph_event(epic, EventKind.DISCONNECTED, Role.PROVIDER, 2).to_json()).status == "written"
        assert ops.take() == {
            "Visits.get_entity": 1,
            "WritebackLedger.create_entity": 1,
            "WritebackLedger.update_entity": 1,
            "Visits.update_entity": 1,  # its presence and the context's release
            "WritebackLedger.query_entities": 1,
        }
    ended = VisitRepository(storage, SEALER).get(Geography.AMERICAS, epic.key)
    assert ended is not None and ended.context == VisitContext()


def test_the_usage_reports_facts_ride_in_the_same_writes_two_two_and_four_operations_and_the_timer_copies_them(
    storage: Storage,
    ehr: EhrSandbox,
    targets: Targets,
    failures: FailureLog,
    http: SafeHttp,
    client_keys: ClientKeys,
    unique: str,
) -> None:
    """Analytics on (the default) adds no Table operation to an event: its facts are folded into the visit row's
    write; the report's timer copies them into ReportVisits afterwards (``shared.reports.fold``)."""
    from shared.reports.days import ReportDays
    from shared.reports.fold import ReportFlush, ReportFold
    from shared.reports.preferences import ReportPreferences, ReportPreferenceStore
    from shared.reports.recorder import report_visit_id
    from shared.reports.store import ReportFacts

    preferences = ReportPreferenceStore(storage.app)
    for configuration_id in (f"fhir-auditevent-{unique}", f"epic-{unique}"):
        preferences.save(configuration_id, ReportPreferences(analytics=True, geography=Geography.AMERICAS.value))
    fold = ReportFold(preferences, targets, secret="s" * 32, sealer=SEALER)
    worker = build_worker(storage, targets, failures, http, client_keys, report=fold.change_for)
    now = datetime.now(UTC).replace(microsecond=0)
    midnight = now.replace(hour=0, minute=0, second=0)
    if now - midnight < timedelta(minutes=5):  # the facts (up to 3 minutes back) all on one UTC day
        now = midnight - timedelta(minutes=1)
    fhir = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-rf-{unique}")
    epic = open_visit(storage, ehr, f"epic-{unique}", f"visit-re-{unique}")
    with TableOperations().installed() as ops:
        event = graph_event(fhir, EventKind.CONNECTED, Role.PROVIDER, at=now - timedelta(minutes=3))
        assert worker.handle(event.to_json()).status == "written"
        assert ops.take() == {"Visits.get_entity": 1, "Visits.update_entity": 1}
        event = graph_event(epic, EventKind.LOBBY, Role.PATIENT, at=now - timedelta(minutes=2))
        assert worker.handle(event.to_json()).status == "skipped"
        assert ops.take() == {"Visits.get_entity": 1, "Visits.update_entity": 1}
        event = graph_event(epic, EventKind.CONNECTED, Role.PATIENT, at=now - timedelta(minutes=1))
        assert worker.handle(event.to_json()).status == "written"
        assert ops.take() == {
            "Visits.get_entity": 1,
            "WritebackLedger.create_entity": 1,
            "WritebackLedger.update_entity": 1,
            "Visits.update_entity": 1,
        }
        assert worker.handle(event.to_json()).status == "duplicate"  # adds no fact: no write at all
        assert ops.take() == {
            "Visits.get_entity": 1,
            "WritebackLedger.create_entity": 1,
            "WritebackLedger.get_entity": 1,
        }

    facts = ReportFacts(storage, SEALER)
    flush = ReportFlush(
        VisitRepository(storage, SEALER), facts, ReportDays(storage, facts), preferences,
        secret="s" * 32, sealer=SEALER,
    )  # fmt: skip
    flush.flush(Geography.AMERICAS)
    [stored] = [
        row for row in facts.day(Geography.AMERICAS, f"epic-{unique}", now.date())
        if row.visit == report_visit_id("s" * 32, f"epic-{unique}", epic.key)
    ]  # fmt: skip
    [patient] = stored.facts.attendees.values()
    assert patient.role is Role.PATIENT
    assert (patient.lobby, patient.joined) == (now - timedelta(minutes=2), now - timedelta(minutes=1))


# --- group visits: the group's row takes Teams facts per participant and writes them for nobody; each
# participant's own visit keeps its context until the group's meeting has ended -----------------------------


def group_fact(key: str, configuration_id: str, attendee: str, kind: EventKind, role: Role, second: int) -> VisitEvent:
    return VisitEvent(
        configuration_id=configuration_id,
        geography=Geography.AMERICAS.value,
        visit_key=key,
        kind=kind,
        role=role,
        occurred_at=datetime(2026, 12, 5, 15, 0, second, tzinfo=UTC),
        source=Source.GRAPH,
        attendee=attendee,
        interpreter=attendee == "int",
    )


def test_a_groups_teams_facts_are_kept_per_participant_and_written_for_nobody_then_members_release(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    configuration = f"epic-{unique}"
    repository = VisitRepository(storage, SEALER)
    group = repository.get_or_create(Geography.AMERICAS, f"group-{unique}", configuration, VisitContext())
    group = repository.update(group, with_group(group.key))
    member = open_visit(storage, ehr, configuration, f"member-{unique}")
    member = repository.update(member, with_group(group.key))
    assert member.in_group and member.context.csn

    for attendee, kind, role, second in (
        ("lee", EventKind.CONNECTED, Role.PROVIDER, 1),
        ("p1", EventKind.LOBBY, Role.PATIENT, 2),
        ("int", EventKind.LOBBY, Role.PATIENT, 3),
        ("p1", EventKind.CONNECTED, Role.PATIENT, 4),
    ):
        outcome = worker.handle(group_fact(group.key, configuration, attendee, kind, role, second).to_json())
        assert outcome.status == "skipped"  # nothing written: no CSN is this participant's for sure
    stored = repository.get(Geography.AMERICAS, group.key)
    assert stored is not None and set(stored.attendees) == {"lee", "p1", "int"}
    assert stored.attendees["int"].interpreter and stored.attendees["p1"].entry.state is EventKind.CONNECTED
    assert ledger_state(storage, stored) == {}  # no claim, no EHR call

    # The member keeps its context while the group's meeting goes on...
    assert worker.release_context_when_done(member).context.csn
    for attendee, role, second in (("p1", Role.PATIENT, 5), ("int", Role.PATIENT, 6), ("lee", Role.PROVIDER, 7)):
        worker.handle(group_fact(group.key, configuration, attendee, EventKind.DISCONNECTED, role, second).to_json())
    # ...and releases it once everyone in the group's meeting has left (the upkeep scan does this for each row).
    released = worker.release_context_when_done(repository.get(Geography.AMERICAS, member.key) or member)
    assert released.context == VisitContext()
    assert replace(released, etag=None).group_key == group.key


def group_of_three(
    repository: VisitRepository, ehr: EhrSandbox, configuration: str, name: str
) -> tuple[Visit, list[ClinicVisit], list[Visit]]:
    """The sandbox's diabetes group (CSNs 1000006, 1000007, 1000013): its group row and a visit row per member."""
    group = repository.get_or_create(Geography.AMERICAS, f"group-{name}", configuration, VisitContext())
    group = repository.update(group, with_group(group.key))
    seeded = [v for v in ehr.clinic.visits if v.csn in ("1000006", "1000007", "1000013")]
    members = []
    for n, one in enumerate(seeded):
        member = repository.get_or_create(Geography.AMERICAS, f"m{n}-{name}", configuration, visit_context(one))
        members.append(repository.update(member, with_group(group.key)))
    return group, seeded, members


def test_a_group_participants_teams_facts_are_written_for_their_own_csn_once_tied_to_their_visit(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    configuration = f"epic-{unique}"
    repository = VisitRepository(storage, SEALER)
    groups = GroupVisits(repository, SECRET)
    group, seeded, members = group_of_three(repository, ehr, configuration, f"t-{unique}")
    # Each patient's launch offers a visit number; the clinician's launch ties their Microsoft 365 account.
    numbers = [groups.patient_label(repository.get(Geography.AMERICAS, group.key) or group, m.key) for m in members]
    assert len(set(numbers)) == 3 and all(len(n) == 4 for n in numbers)
    assert groups.patient_label(repository.get(Geography.AMERICAS, group.key) or group, members[0].key) == numbers[0]
    lee_oid, lee = "b0000000-0000-4000-8000-00000000000a", f"Practitioner/{seeded[0].practitioner_id}"
    members[0] = repository.update(members[0], with_colleague(Colleague(user_hint(SECRET, lee_oid), lee)))
    groups.tie_clinician(
        repository.get(Geography.AMERICAS, group.key) or group, members[0].key, user_hint(SECRET, lee_oid)
    )

    def fact(leg: str, kind: EventKind, role: Role, second: int, hint: str | None) -> VisitEvent:
        return replace(group_fact(group.key, configuration, leg, kind, role, second), id="", member_hint=hint)

    def statuses(one: ClinicVisit, external_id: str, status: str) -> int:
        return ehr.count_status_changes(conference_id=one.csn, external_id=external_id, status=status)

    before = {
        (one.csn, who, status): statuses(one, who, status)
        for one in seeded
        for who in (one.patient_id, one.practitioner_id)
        for status in ("1", "2")
    }
    outcomes = [
        worker.handle(fact(*args).to_json())
        for args in (
            ("leg-lee", EventKind.CONNECTED, Role.PROVIDER, 1, user_hint(SECRET, lee_oid)),
            ("leg-p0", EventKind.LOBBY, Role.PATIENT, 2, label_hint(numbers[0])),  # Epic has no lobby status
            ("leg-p1", EventKind.CONNECTED, Role.PATIENT, 3, label_hint(numbers[1])),
            ("leg-p0", EventKind.CONNECTED, Role.PATIENT, 4, None),  # the call leg stays tied (name edited)
            ("leg-x", EventKind.CONNECTED, Role.PATIENT, 5, None),  # typed no number: nobody's
            ("leg-y", EventKind.CONNECTED, Role.PATIENT, 6, label_hint("0000")),  # a number nobody was given
            ("leg-p1", EventKind.DISCONNECTED, Role.PATIENT, 7, label_hint(numbers[1])),
            ("leg-copy", EventKind.LOBBY, Role.PATIENT, 8, label_hint(numbers[0])),  # read in the roster: p0 is in
            ("leg-p1b", EventKind.CONNECTED, Role.PATIENT, 9, label_hint(numbers[1])),  # p1 comes back: tied again
        )
    ]
    assert [o.status for o in outcomes] == [
        "written",
        "skipped",
        "written",
        "written",
        "skipped",
        "skipped",
        "written",
        "skipped",
        "written",
    ]
    changed = {
        key: statuses(one, key[1], key[2]) - count
        for key, count in before.items()
        for one in seeded
        if one.csn == key[0]
    }
    assert {key: n for key, n in changed.items() if n} == {
        (seeded[0].csn, seeded[0].practitioner_id, "1"): 1,
        (seeded[0].csn, seeded[0].patient_id, "1"): 1,
        (seeded[1].csn, seeded[1].patient_id, "1"): 2,
        (seeded[1].csn, seeded[1].patient_id, "2"): 1,
    }
    # A repeated delivery is a duplicate of the member's own claim, not a second status.
    again = worker.handle(fact("leg-p1", EventKind.CONNECTED, Role.PATIENT, 3, label_hint(numbers[1])).to_json())
    assert again.status == "duplicate"
    stored = repository.get(Geography.AMERICAS, group.key)
    assert stored is not None
    assert {leg: a.member for leg, a in stored.attendees.items()} == {
        "leg-lee": members[0].key,
        "leg-p0": members[0].key,
        "leg-p1": members[1].key,
        "leg-x": None,
        "leg-y": None,
        "leg-copy": None,
        "leg-p1b": members[1].key,
    }
    assert ledger_state(storage, stored) == {}  # the group's row is nobody's: claims are on the members' rows
    assert len(ledger_state(storage, members[1])) == 3


def test_a_single_visits_colleagues_are_kept_apart_by_call_leg_and_patients_by_role_only(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-c-{unique}")
    for leg, role, second in (("kim", Role.STAFF, 1), ("ray", Role.STAFF, 1), ("sam", Role.PATIENT, 2)):
        event = replace(graph_event(visit, EventKind.CONNECTED, role, second), id="", attendee=attendee_key(leg))
        worker.handle(event.to_json())
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, visit.key)
    assert stored is not None and not stored.is_group
    # Two colleagues at one instant are two facts (two call legs); the patient's call leg is not kept.
    assert set(stored.attendees) == {attendee_key("kim"), attendee_key("ray")}
    assert [(c.label, c.number) for c in panel_of(stored).colleagues] == [("clinician", 2), ("clinician", 3)]


def test_a_guest_interpreter_in_a_single_visit_is_written_as_an_interpreter_never_as_the_patient(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    seeded = ehr.clinic.visits[1]

    def interpreting(visit: Visit, kind: EventKind, second: int) -> VisitEvent:
        base = graph_event(visit, kind, Role.PATIENT, second)
        return replace(base, id="", attendee=attendee_key("guest-leg"), interpreter=True)

    # Epic: SetExternalConnectionStatus has no participant role and the guest no Epic id: nothing is sent.
    epic = open_visit(storage, ehr, f"epic-{unique}", f"visit-ie-{unique}")
    before = ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.patient_id, status="1")
    assert worker.handle(interpreting(epic, EventKind.CONNECTED, 1).to_json()).status == "skipped"
    assert ehr.count_status_changes(conference_id=seeded.csn, external_id=seeded.patient_id, status="1") == before
    stored = VisitRepository(storage, SEALER).get(Geography.AMERICAS, epic.key)
    assert stored is not None and Role.PATIENT not in stored.roster  # the patient's row knows nothing of it
    assert [(c.label, c.number, c.state.value) for c in panel_of(stored).colleagues] == [
        ("interpreter", 1, "in_meeting")
    ]

    # FHIR: an AuditEvent whose agent is of type translator, naming no patient.
    fhir = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-if-{unique}")
    connected = interpreting(fhir, EventKind.CONNECTED, 2)
    assert worker.handle(connected.to_json()).status == "written"
    [audit] = [a for a in ehr.audit_events() if a["meta"]["tag"][0]["code"] == connected.id]
    assert audit["agent"][0]["type"]["coding"][0]["code"] == "translator"
    assert audit["agent"][0]["who"] == {"display": "interpreter (guest)"}
    assert f"Patient/{seeded.patient_id}" not in json.dumps(audit)
    assert any(e.get("name") == "CSN" for e in audit["entity"])  # written for the visit it happened in


def test_clinicians_who_launched_a_visit_are_written_as_themselves_and_a_staff_interpreter_as_an_interpreter(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    seeded = next(v for v in ehr.clinic.visits if v.interpreter_id)  # Ana Souza is booked as its interpreter
    assert seeded.interpreter_id
    souza, souza_oid = f"Practitioner/{seeded.interpreter_id}", "c0000000-0000-4000-8000-0000000000a5"
    repository = VisitRepository(storage, SEALER)

    def launched_by_souza(configuration: str, key: str) -> Visit:
        visit = repository.get_or_create(Geography.AMERICAS, key, configuration, visit_context(seeded))
        return repository.update(
            visit, with_colleague(Colleague(user_hint(SECRET, souza_oid), souza, interpreter=True))
        )

    def teams(visit: Visit, hint: str, kind: EventKind, second: int) -> VisitEvent:
        base = graph_event(visit, kind, Role.STAFF, second)
        return replace(base, id="", attendee=attendee_key(hint), member_hint=hint)

    # Epic: her own Practitioner id (ExternalIDType 1); a colleague who never launched it names nobody: not sent.
    epic = launched_by_souza(f"epic-{unique}", f"visit-si-{unique}")
    before = ehr.connection_status_changes(conference_id=seeded.csn)
    assert (
        worker.handle(teams(epic, user_hint(SECRET, souza_oid), EventKind.CONNECTED, 1).to_json()).status == "written"
    )
    assert (
        worker.handle(teams(epic, user_hint(SECRET, "someone-else"), EventKind.CONNECTED, 2).to_json()).status
        == "skipped"
    )
    new = ehr.connection_status_changes(conference_id=seeded.csn)[len(before) :]
    assert [(c.external_id, c.external_id_type, c.connection_status) for c in new] == [
        (seeded.interpreter_id, "1", "1")
    ]
    stored = repository.get(Geography.AMERICAS, epic.key)
    assert stored is not None  # on the panel: she is the interpreter, the other a further clinician
    assert [(c.label, c.number) for c in panel_of(stored).colleagues] == [("interpreter", 1), ("clinician", 2)]

    # FHIR: an AuditEvent whose agent is of type translator and is her own reference.
    fhir = launched_by_souza(f"fhir-auditevent-{unique}", f"visit-sf-{unique}")
    connected = teams(fhir, user_hint(SECRET, souza_oid), EventKind.CONNECTED, 3)
    assert worker.handle(connected.to_json()).status == "written"
    [audit] = [a for a in ehr.audit_events() if a["meta"]["tag"][0]["code"] == connected.id]
    [agent] = audit["agent"]
    assert agent["type"]["coding"][0]["code"] == "translator" and agent["who"] == {"reference": souza}


def test_an_organizer_who_never_launched_the_visit_names_nobody_and_a_relaunch_restores_its_clinician(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    """Dr. A launched (the visit's provider); Dr. B, the primary performer, organizes the meeting without launching."""
    seeded = ehr.clinic.visits[1]
    a, a_oid, b_oid = f"Practitioner/{seeded.practitioner_id}", "d0000000-0000-4000-8000-00000000000a", "d-b"
    repository = VisitRepository(storage, SEALER)
    visit = repository.get_or_create(Geography.AMERICAS, f"visit-org-{unique}", f"epic-{unique}", visit_context(seeded))
    # A's launch event names A's Teams account: the worker keeps it as the visit's colleague (a relaunch after
    # the context was released restores it the same way).
    launch = seal_event(
        SEALER,
        replace(launch_event(visit, Role.PROVIDER, a, 1, csn=seeded.csn), id="", member_hint=user_hint(SECRET, a_oid)),
    )
    worker.handle(launch.to_json())
    stored = repository.get(Geography.AMERICAS, visit.key)
    assert stored is not None and [(c.hint, c.reference) for c in stored.context.colleagues] == [
        (user_hint(SECRET, a_oid), a)
    ]

    def teams(role: Role, oid: str, second: int) -> VisitEvent:
        event = graph_event(visit, EventKind.CONNECTED, role, second)
        return replace(event, id="", attendee=attendee_key(oid), member_hint=user_hint(SECRET, oid))

    before = ehr.connection_status_changes(conference_id=seeded.csn)
    assert worker.handle(teams(Role.PROVIDER, b_oid, 2).to_json()).status == "skipped"  # B: not A, not anyone
    assert worker.handle(teams(Role.STAFF, a_oid, 3).to_json()).status == "written"  # A, a colleague in Teams
    new = ehr.connection_status_changes(conference_id=seeded.csn)[len(before) :]
    assert [(c.external_id, c.external_id_type) for c in new] == [(seeded.practitioner_id, "1")]  # A, once


def test_a_group_visits_usage_report_has_a_row_per_patient_with_their_own_facts_and_the_clinicians(
    storage: Storage,
    ehr: EhrSandbox,
    targets: Targets,
    failures: FailureLog,
    http: SafeHttp,
    client_keys: ClientKeys,
    unique: str,
) -> None:
    """Each member visit (a CSN) is a report row: its patient's facts, tied by their visit number, and the group's
    clinicians' (who see every patient); the group's own row is nobody's visit and has no report facts."""
    from shared.reports.days import ReportDays
    from shared.reports.facts import Status, summarize
    from shared.reports.fold import ReportFlush, ReportFold
    from shared.reports.preferences import ReportPreferences, ReportPreferenceStore
    from shared.reports.recorder import report_visit_id
    from shared.reports.store import ReportFacts

    configuration = f"fhir-auditevent-{unique}"
    preferences = ReportPreferenceStore(storage.app)
    preferences.save(configuration, ReportPreferences(analytics=True, geography=Geography.AMERICAS.value))
    fold = ReportFold(preferences, targets, secret="s" * 32, sealer=SEALER)
    worker = build_worker(storage, targets, failures, http, client_keys, report=fold.change_for)
    repository = VisitRepository(storage, SEALER)
    groups = GroupVisits(repository, SECRET)
    group, _, members = group_of_three(repository, ehr, configuration, f"r-{unique}")
    # Two patients launched before the clinician joined; the third launches (gets their number) later.
    numbers = [groups.patient_label(repository.get(Geography.AMERICAS, group.key) or group, m.key) for m in members[:2]]
    now = datetime.now(UTC).replace(microsecond=0)
    midnight = now.replace(hour=0, minute=0, second=0)
    if now - midnight < timedelta(minutes=25):  # the facts (up to 20 minutes back) all on one UTC day
        now = midnight - timedelta(minutes=5)

    def fact(leg: str, kind: EventKind, role: Role, minutes: int, hint: str | None) -> VisitEvent:
        at = now - timedelta(minutes=minutes)
        return replace(
            group_fact(group.key, configuration, leg, kind, role, 0), occurred_at=at, id="", member_hint=hint
        )

    for event in (
        fact("leg-lee", EventKind.CONNECTED, Role.PROVIDER, 20, None),  # the organizer: no launch of theirs here
        fact("leg-p0", EventKind.LOBBY, Role.PATIENT, 19, label_hint(numbers[0])),
        fact("leg-p0", EventKind.CONNECTED, Role.PATIENT, 18, label_hint(numbers[0])),
        fact("leg-p1", EventKind.LOBBY, Role.PATIENT, 17, label_hint(numbers[1])),  # never admitted
        fact("leg-p1", EventKind.DISCONNECTED, Role.PATIENT, 10, label_hint(numbers[1])),
        fact("leg-p0", EventKind.DISCONNECTED, Role.PATIENT, 5, label_hint(numbers[0])),
    ):
        worker.handle(event.to_json())
    numbers.append(groups.patient_label(repository.get(Geography.AMERICAS, group.key) or group, members[2].key))
    for event in (
        fact("leg-p2", EventKind.CONNECTED, Role.PATIENT, 8, label_hint(numbers[2])),  # admitted straight away
        fact("leg-p2", EventKind.DISCONNECTED, Role.PATIENT, 6, label_hint(numbers[2])),
        fact("leg-lee", EventKind.DISCONNECTED, Role.PROVIDER, 4, None),
    ):
        outcome = worker.handle(event.to_json())
        assert outcome.facts_kept  # a group's fact: its queued body names no one's visit to record it for

    facts = ReportFacts(storage, SEALER)
    flush = ReportFlush(repository, facts, ReportDays(storage, facts), preferences, secret="s" * 32, sealer=SEALER)
    flush.flush(Geography.AMERICAS)
    rows = {row.visit: row for row in facts.day(Geography.AMERICAS, configuration, now.date())}
    assert report_visit_id("s" * 32, configuration, group.key) not in rows  # the group's row is nobody's visit
    first, second, third = (rows[report_visit_id("s" * 32, configuration, m.key)] for m in members)
    assert summarize(first.facts).status is Status.COMPLETED  # a clinician and this patient in the meeting
    assert summarize(second.facts).status is Status.ABANDONED  # waited, left before being admitted
    # Tied after the clinician had joined: the clinician's earlier facts reached their row at the tie.
    assert summarize(third.facts).status is Status.COMPLETED
    assert [a.role for a in second.facts.attendees.values()].count(Role.PROVIDER) == 1  # the clinicians are theirs too
