"""The writeback worker: exactly-once EHR effects under duplicate delivery, retries and permanent failures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.writeback_load import visit_context
from sandbox.ehr import EhrSandbox
from shared.configurations.model import WritebackMode
from shared.ehr.backend_services import BackendServices
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.ehr.fhir_writeback import FhirAuditEvents, NoWriteback
from shared.http.outbound import SafeHttp
from shared.kernel.errors import NotFound, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import Visit
from shared.visits.repository import VisitRepository
from shared.writeback.model import WritebackTarget
from shared.writeback.worker import FAILURES_TABLE, ClaimHeld, FailureLog, RetryPolicy, WritebackWorker
from tests.integration.test_writeback_adapters import checked_http, smart_client
from tests.sandbox.ehr_support import *  # noqa: F403 - fixtures
from tests.sandbox.ehr_support import BACKEND, NO_SCS, ClientKeys

pytestmark = pytest.mark.azurite


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
    return FailureLog(storage.app, f"wb-{unique}")


@pytest.fixture
def worker(
    storage: Storage, targets: Targets, failures: FailureLog, http: SafeHttp, client_keys: ClientKeys
) -> WritebackWorker:
    backend = BackendServices(smart_client(client_keys))
    adapters = {
        WritebackMode.EPIC: EpicConnectionStatus(http, backend),
        WritebackMode.FHIR_AUDIT_EVENT: FhirAuditEvents(http, backend),
        WritebackMode.NONE: NoWriteback(),
    }
    return WritebackWorker(
        VisitRepository(storage), targets, adapters, failures, retry=RetryPolicy(attempts=2, base_delay=0.01)
    )


def open_visit(storage: Storage, ehr: EhrSandbox, configuration_id: str, key: str) -> Visit:
    context = visit_context(ehr.clinic.visits[1])
    return VisitRepository(storage).get_or_create(Geography.AMERICAS, key, configuration_id, context)


def graph_event(visit: Visit, kind: EventKind, role: Role, second: int = 0) -> VisitEvent:
    return VisitEvent(
        configuration_id=visit.configuration_id,
        geography=visit.geography.value,
        visit_key=visit.key,
        kind=kind,
        role=role,
        occurred_at=datetime(2026, 11, 25, 15, 0, second, tzinfo=UTC),
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
    stored = VisitRepository(storage).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PATIENT].state is EventKind.CONNECTED
    assert stored.writeback[event.id] == "done"


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
    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.LOBBY, Role.PATIENT, 5)
    ehr.faults.update({"error_rate": 1.0})
    with pytest.raises(UpstreamUnavailable):
        worker.handle(event.to_json())
    stored = VisitRepository(storage).get(Geography.AMERICAS, visit.key)
    assert stored is not None and event.id not in stored.writeback  # released: the retry may claim at once
    ehr.faults.reset()
    assert worker.handle(event.to_json()).status == "written"


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
    stored = VisitRepository(storage).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PROVIDER].state is EventKind.CONNECTED


@pytest.mark.parametrize("body", ["not json", '{"v": 2}', '{"v": 1, "kind": "lobby"}'])
def test_invalid_messages_go_to_the_poison_queue(
    storage: Storage, worker: WritebackWorker, failures: FailureLog, body: str
) -> None:
    assert worker.handle(body).status == "failed"
    assert body in poisoned(storage, failures)


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
    stored = VisitRepository(storage).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.presence[Role.PATIENT].state is EventKind.CONNECTED
    assert ehr.count_status_changes() == before


def test_a_stale_claim_of_a_crashed_worker_can_be_taken_over(
    storage: Storage, ehr: EhrSandbox, worker: WritebackWorker, unique: str
) -> None:
    from shared.visits.model import claim_writeback

    visit = open_visit(storage, ehr, f"fhir-auditevent-{unique}", f"visit-{unique}")
    event = graph_event(visit, EventKind.CONNECTED, Role.PROVIDER, 40)
    crashed_at = datetime.now(UTC) - timedelta(minutes=5)
    VisitRepository(storage).update(visit, claim_writeback(event.id, lease=timedelta(seconds=60), now=crashed_at))
    assert worker.handle(event.to_json()).status == "written"
