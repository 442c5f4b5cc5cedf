"""The writeback ledger on Azurite: one row per event, so busy visits neither contend nor forget.

Through the worker against the sandbox EHR's Epic ``SetExternalConnectionStatus`` (not idempotent: the EHR
records every call, and each event here has an ExternalID of its own, so the record counts each event's effect).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.ehr import EhrSandbox
from shared.configurations.model import WritebackMode
from shared.kernel.errors import AlreadyWritten, ClaimedElsewhere, StorageUnavailable
from shared.kernel.settings import Geography, Settings
from shared.storage.accounts import Storage
from shared.storage.sweep import sweep_expired
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import Visit, with_presence
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import seal_event
from shared.writeback.ledger import CLAIMED, DONE, FAILED, RELEASED, RETRY_SPAN, TABLE, Claim, WritebackLedger
from shared.writeback.worker import ClaimHeld, FailureLog, WritebackWorker
from tests.integration.test_writeback_adapters import checked_http
from tests.integration.test_writeback_worker import SEALER, Targets, build_worker, open_visit
from tests.sandbox.ehr_support import *  # noqa: F403 - fixtures
from tests.sandbox.ehr_support import ClientKeys

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def reset_faults(ehr: EhrSandbox) -> Iterator[None]:
    ehr.faults.reset()
    yield
    ehr.faults.reset()


@pytest.fixture
def epic(ehr: EhrSandbox, unique: str) -> Targets:
    targets = Targets(ehr)
    targets.add(f"epic-{unique}", WritebackMode.EPIC)
    return targets


@pytest.fixture
def failure_log(storage: Storage, unique: str) -> FailureLog:
    return FailureLog(storage.app, f"wb-{unique}", SEALER)


def new_worker(settings: Settings, targets: Targets, failures: FailureLog, client_keys: ClientKeys) -> WritebackWorker:
    """A worker as one Functions instance builds it: its own storage clients, ledger, HTTP client and caches."""
    return build_worker(Storage(settings), targets, failures, checked_http(5.0), client_keys)


def events_of(ehr: EhrSandbox, visit: Visit, count: int, unique: str) -> list[VisitEvent]:
    """``count`` roster facts of one visit, each with an ExternalID of its own (so the EHR counts each one).

    Sealed as queued (no clear reference on the queue); each made-up participant is linked to the visit's
    conference, as Epic requires of a status.
    """
    assert visit.context.csn is not None
    made = []
    for n in range(count):
        role = Role.PROVIDER if n % 3 else Role.PATIENT
        ehr.state.link_launch({visit.context.csn}, f"ev-{unique}-{n}")
        made.append(
            seal_event(
                SEALER,
                VisitEvent(
                    configuration_id=visit.configuration_id,
                    geography=visit.geography.value,
                    visit_key=visit.key,
                    kind=EventKind.CONNECTED if n % 2 == 0 else EventKind.DISCONNECTED,
                    role=role,
                    occurred_at=T0 + timedelta(milliseconds=n),
                    source=Source.GRAPH,
                    participant=f"{'Practitioner' if role is Role.PROVIDER else 'Patient'}/ev-{unique}-{n}",
                ),
            )
        )
    return made


def with_a_colleague(storage: Storage, visit: Visit) -> Visit:
    """A colleague stays in the meeting, so shuffled roster facts never end it (and release its context) mid-burst."""
    return VisitRepository(storage, SEALER).update(
        visit, with_presence(Role.STAFF, EventKind.CONNECTED, T0 + timedelta(1))
    )


def effects(ehr: EhrSandbox, unique: str) -> Counter[str]:
    """How many times the EHR recorded each event of this test."""
    prefix = f"ev-{unique}-"
    return Counter(c.external_id for c in ehr.connection_status_changes() if c.external_id.startswith(prefix))


def deliver_until_complete(worker: WritebackWorker, body: str, deadline: float = 30.0) -> str:
    """What the queue does with a message whose claim is held elsewhere: deliver it again a little later."""
    started = time.monotonic()
    while True:
        try:
            return worker.handle(body).status
        except ClaimHeld:
            if time.monotonic() - started > deadline:
                raise
            time.sleep(0.02)


# --- the ledger itself --------------------------------------------------------------------------------------


def expires(hours: int = 24) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


def test_one_claim_wins_among_concurrent_claimants_and_done_is_final(
    settings: Settings, storage: Storage, unique: str
) -> None:
    outcomes: list[str] = []
    barrier = threading.Barrier(8)
    ledgers = [WritebackLedger(Storage(settings)) for _ in range(8)]  # eight instances, clients of their own

    def claim(ledger: WritebackLedger) -> None:
        barrier.wait()
        try:
            ledger.claim(Geography.AMERICAS, f"v-{unique}", "e1", expires_at=expires())
            outcomes.append("won")
        except ClaimedElsewhere:
            outcomes.append("held")

    threads = [threading.Thread(target=claim, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["held"] * 7 + ["won"]

    ledger = WritebackLedger(storage)
    [entry] = ledger.entries(Geography.AMERICAS, f"v-{unique}")
    assert entry.state == CLAIMED
    later = WritebackLedger(storage, clock=lambda: datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(ClaimedElsewhere):  # a live claim from the test's own ledger object
        ledger.claim(Geography.AMERICAS, f"v-{unique}", "e1", expires_at=expires())
    taken = later.claim(Geography.AMERICAS, f"v-{unique}", "e1", expires_at=expires())  # its lease has run out
    assert later.mark_done(taken) is True
    for clock in (datetime.now(UTC), datetime.now(UTC) + timedelta(days=3)):
        with pytest.raises(AlreadyWritten):
            WritebackLedger(storage, clock=lambda c=clock: c).claim(  # type: ignore[misc]
                Geography.AMERICAS, f"v-{unique}", "e1", expires_at=expires()
            )


def test_an_expired_claim_is_taken_over_once_and_the_late_worker_cannot_undo_it(storage: Storage, unique: str) -> None:
    key = f"v-{unique}"
    crashed = WritebackLedger(storage, clock=lambda: datetime.now(UTC) - timedelta(minutes=5))
    stale = crashed.claim(Geography.AMERICAS, key, "e1", expires_at=expires())
    outcomes: list[object] = []
    barrier = threading.Barrier(6)

    def take_over() -> None:
        barrier.wait()
        try:
            outcomes.append(WritebackLedger(storage).claim(Geography.AMERICAS, key, "e1", expires_at=expires()))
        except ClaimedElsewhere:
            outcomes.append("held")

    threads = [threading.Thread(target=take_over) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claims = [o for o in outcomes if o != "held"]
    assert len(claims) == 1 and outcomes.count("held") == 5
    ledger = WritebackLedger(storage)
    [entry] = ledger.entries(Geography.AMERICAS, key)
    assert (entry.state, entry.attempt) == (CLAIMED, 2)

    crashed.release(stale)  # the overrunning worker gives up: it must not delete the new owner's claim
    [entry] = ledger.entries(Geography.AMERICAS, key)
    assert entry.state == CLAIMED
    assert crashed.mark_done(stale) is False  # it did write after all: recorded, and reported as overrun
    [entry] = ledger.entries(Geography.AMERICAS, key)
    assert entry.state == DONE


def test_a_released_claim_stays_pending_and_can_be_claimed_again_at_once(storage: Storage, unique: str) -> None:
    ledger = WritebackLedger(storage)
    claim = ledger.claim(Geography.EMEA, f"v-{unique}", "e1", expires_at=expires())
    ledger.release(claim)
    [entry] = ledger.entries(Geography.EMEA, f"v-{unique}")
    assert entry.state == RELEASED and ledger.pending(Geography.EMEA, f"v-{unique}")  # its retry still needs it
    again = ledger.claim(Geography.EMEA, f"v-{unique}", "e1", expires_at=expires())  # no lease to wait out
    assert again.attempt == 2
    assert ledger.mark_done(again) is True
    assert not ledger.pending(Geography.EMEA, f"v-{unique}")


def test_a_failed_event_is_not_pending_and_a_replay_may_claim_it(storage: Storage, unique: str) -> None:
    ledger = WritebackLedger(storage)
    ledger.mark_done(ledger.claim(Geography.EMEA, f"v-{unique}", "e-done", expires_at=expires()))
    ledger.mark_failed(ledger.claim(Geography.EMEA, f"v-{unique}", "e1", expires_at=expires()))
    states = {entry.event_id: entry.state for entry in ledger.entries(Geography.EMEA, f"v-{unique}")}
    assert states == {"e-done": DONE, "e1": FAILED}
    assert not ledger.pending(Geography.EMEA, f"v-{unique}")
    replay = ledger.claim(Geography.EMEA, f"v-{unique}", "e1", expires_at=expires())
    assert replay.attempt == 2 and ledger.pending(Geography.EMEA, f"v-{unique}")


def test_release_and_failure_marks_of_a_claim_taken_over_change_nothing(storage: Storage, unique: str) -> None:
    crashed_at = datetime.now(UTC) - timedelta(minutes=5)
    stale = WritebackLedger(storage, clock=lambda: crashed_at).claim(
        Geography.EMEA, f"v-{unique}", "e1", expires_at=expires()
    )
    ledger = WritebackLedger(storage)
    ledger.claim(Geography.EMEA, f"v-{unique}", "e1", expires_at=expires())
    ledger.release(stale)
    ledger.mark_failed(stale)
    [entry] = ledger.entries(Geography.EMEA, f"v-{unique}")
    assert (entry.state, entry.attempt) == (CLAIMED, 2)


def test_rows_live_in_the_visits_geography_hold_no_identifiers_and_are_swept(storage: Storage, unique: str) -> None:
    ledger = WritebackLedger(storage)
    past = datetime.now(UTC) - timedelta(seconds=1)
    ledger.mark_done(ledger.claim(Geography.APAC, f"v-{unique}", "e-old", expires_at=past))
    ledger.claim(Geography.APAC, f"v-{unique}", "e-live", expires_at=expires())
    table = storage.for_geography(Geography.APAC).table(TABLE)
    rows = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": f"v-{unique}"}))
    assert {row["RowKey"] for row in rows} == {"e-old", "e-live"}
    assert set(rows[0]) <= {"PartitionKey", "RowKey", "State", "ClaimedAt", "Attempt", "ExpiresAt"}
    for other in (Geography.AMERICAS, Geography.EMEA):
        assert ledger.entries(other, f"v-{unique}") == []
    sweep_expired(storage.for_geography(Geography.APAC), TABLE)
    assert [e.event_id for e in ledger.entries(Geography.APAC, f"v-{unique}")] == ["e-live"]


# --- through the worker -------------------------------------------------------------------------------------


def test_a_busy_visit_writes_1000_events_once_each_without_contention_or_eviction(
    settings: Settings,
    storage: Storage,
    ehr: EhrSandbox,
    epic: Targets,
    failure_log: FailureLog,
    client_keys: ClientKeys,
    unique: str,
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    visit = with_a_colleague(storage, visit)
    events = events_of(ehr, visit, 1000, unique)
    random.Random(5).shuffle(events)  # out of order, as Graph delivers them
    worker = new_worker(settings, epic, failure_log, client_keys)

    with ThreadPoolExecutor(max_workers=24) as pool:  # the host's batchSize + newBatchThreshold, and more
        outcomes = list(pool.map(lambda e: _attempt(worker.handle, e.to_json()), events))
    assert Counter(outcomes) == {"written": 1000}  # no claim held, no "changing too quickly", no failure

    assert sorted(effects(ehr, unique).values()) == [1] * 1000  # every event once, none twice
    entries = WritebackLedger(storage).entries(visit.geography, visit.key)
    assert len(entries) == 1000 and {e.state for e in entries} == {DONE}  # no done mark evicted
    stored = VisitRepository(storage, SEALER).get(visit.geography, visit.key)
    assert stored is not None
    newest = {
        role: max((e for e in events if e.role is role), key=lambda e: e.occurred_at)
        for role in stored.presence
        if role is not Role.STAFF
    }
    stored_states = {role: p.state for role, p in stored.presence.items() if role is not Role.STAFF}  # the colleague
    assert stored_states == {r: e.kind for r, e in newest.items()}

    # The whole burst delivered again: every message completes without calling the EHR.
    with ThreadPoolExecutor(max_workers=24) as pool:
        again = list(pool.map(lambda e: _attempt(worker.handle, e.to_json()), events))
    assert Counter(again) == {"duplicate": 1000}
    assert sorted(effects(ehr, unique).values()) == [1] * 1000


def _attempt(handle: Callable[[str], object], body: str) -> str:
    try:
        return str(handle(body).status)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - counted as the failure it is
        return f"raised {type(exc).__name__}"


def test_concurrent_workers_on_the_same_events_write_each_once(
    settings: Settings,
    storage: Storage,
    ehr: EhrSandbox,
    epic: Targets,
    failure_log: FailureLog,
    client_keys: ClientKeys,
    unique: str,
) -> None:
    """Two instances get every message of a burst (Graph retries, a redelivery): each effect happens once."""
    visits = [open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}-{n}") for n in range(4)]
    visits = [with_a_colleague(storage, visit) for visit in visits]
    events = [e for n, visit in enumerate(visits) for e in events_of(ehr, visit, 50, f"{unique}-{n}")]
    workers = [new_worker(settings, epic, failure_log, client_keys) for _ in range(2)]
    ehr.faults.update({"latency_ms": 30})  # claims stay in flight while the other instance arrives
    deliveries = [(worker, e.to_json()) for e in events for worker in workers]
    random.Random(6).shuffle(deliveries)
    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(lambda d: deliver_until_complete(*d), deliveries))
    assert Counter(outcomes) == {"written": 200, "duplicate": 200}
    for n in range(4):
        assert sorted(effects(ehr, f"{unique}-{n}").values()) == [1] * 50


def test_redelivery_after_done_completes_without_the_ehr_and_still_records_presence(
    settings: Settings,
    storage: Storage,
    ehr: EhrSandbox,
    epic: Targets,
    failure_log: FailureLog,
    client_keys: ClientKeys,
    unique: str,
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    first, second = events_of(ehr, visit, 2, unique)
    worker = new_worker(settings, epic, failure_log, client_keys)
    assert worker.handle(first.to_json()).status == "written"
    assert worker.handle(first.to_json()).status == "duplicate"

    # A worker died after the EHR's answer and its done mark, before the presence write: the redelivery
    # completes from the done mark, never calls the EHR, and records the presence the first one could not.
    ledger = WritebackLedger(storage)
    ledger.mark_done(ledger.claim(visit.geography, visit.key, second.id, expires_at=visit.expires_at))
    outcome = worker.handle(second.to_json())
    assert outcome.status == "duplicate"
    assert effects(ehr, unique) == {f"ev-{unique}-0": 1}
    assert outcome.visit is not None and outcome.visit.presence[second.role].state is second.kind


def test_a_done_mark_that_fails_for_a_moment_is_stored_without_repeating_the_ehr_call(
    settings: Settings,
    storage: Storage,
    ehr: EhrSandbox,
    epic: Targets,
    failure_log: FailureLog,
    client_keys: ClientKeys,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    visit = open_visit(storage, ehr, f"epic-{unique}", f"visit-{unique}")
    [event] = events_of(ehr, visit, 1, unique)
    worker = new_worker(settings, epic, failure_log, client_keys)
    ledger: WritebackLedger = worker._ledger  # noqa: SLF001 - the storage hiccup is injected at the ledger
    real = ledger.mark_done
    failures_left = [2]

    def hiccup(claim: Claim) -> bool:
        if failures_left[0]:
            failures_left[0] -= 1
            raise StorageUnavailable("Storage americas is unavailable.")
        return real(claim)

    monkeypatch.setattr(ledger, "mark_done", hiccup)
    assert worker.handle(event.to_json()).status == "written"
    assert failures_left == [0]
    assert [e.state for e in WritebackLedger(storage).entries(visit.geography, visit.key)] == [DONE]
    assert effects(ehr, unique) == {f"ev-{unique}-0": 1}


def test_pending_asks_the_service_for_pending_rows_only_and_counts_a_claim_for_the_retry_span(
    storage: Storage, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query returns only claimed or released rows, two columns (the visit's done and failed rows stay at the
    service), and a pending row older than ``RETRY_SPAN`` (its queue gave up on it) no longer counts."""
    visit = f"v-{unique}"
    ledger = WritebackLedger(storage)
    for n in range(3):
        ledger.mark_done(ledger.claim(Geography.EMEA, visit, f"e-done-{n}", expires_at=expires()))
    ledger.mark_failed(ledger.claim(Geography.EMEA, visit, "e-failed", expires_at=expires()))
    client = storage.for_geography(Geography.EMEA).table(TABLE)  # the client the ledger uses (one per table)
    returned: list[list[dict[str, object]]] = []  # per query, the rows the service sent back
    query = client.query_entities

    def recording(*args: object, **kwargs: object) -> list[dict[str, object]]:
        rows = [dict(row) for row in query(*args, **kwargs)]  # type: ignore[arg-type]
        returned.append(rows)
        return rows

    monkeypatch.setattr(client, "query_entities", recording)
    assert not ledger.pending(Geography.EMEA, visit)
    assert returned == [[]]  # one query; four rows of the visit, none pending: none sent back
    ledger.claim(Geography.EMEA, visit, "e-live", expires_at=expires())
    assert ledger.pending(Geography.EMEA, visit)
    assert [[set(row) for row in rows] for rows in returned] == [[], [{"State", "ClaimedAt"}]]
    later = datetime.now(UTC) + RETRY_SPAN + timedelta(seconds=1)
    assert not WritebackLedger(storage, clock=lambda: later).pending(Geography.EMEA, visit)
