"""The Epic and FHIR AuditEvent adapters against the sandbox EHR over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.ehr import EhrSandbox
from shared.configurations.model import WritebackMode
from shared.ehr.audit_event import EVENT_TAG_SYSTEM
from shared.ehr.backend_services import BackendServices
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.ehr.fhir_writeback import FhirAuditEvents
from shared.ehr.smart import SmartClient
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.kernel.errors import UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.writeback.model import WritebackTarget, Written
from tests.sandbox.ehr_support import *  # noqa: F403 - fixtures
from tests.sandbox.ehr_support import BACKEND, NO_SCS, ClientKeys, assertion


class KeysSigner:
    """The test EHR client's keys in ``shared.jose.keys.SigningKeys``' shape: RS384 assertions with kid, fresh jti."""

    def __init__(self, keys: ClientKeys) -> None:
        self.keys = keys

    def client_assertion(self, client_id: str, audience: str) -> str:
        return assertion(self.keys, audience, client_id)


def smart_client(keys: ClientKeys, timeout: float = 5.0) -> SmartClient:
    policy = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=timeout)
    return SmartClient(SafeHttp(policy), KeysSigner(keys))  # type: ignore[arg-type]


def checked_http(timeout: float = 5.0) -> SafeHttp:
    """The adapters' transport: the same checked SafeHttp production uses, allowing the sandbox on 127.0.0.1."""
    return SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=timeout))


@pytest.fixture
def http() -> Iterator[SafeHttp]:
    client = checked_http()
    yield client
    client.close()


@pytest.fixture
def backend(http: SafeHttp, client_keys: ClientKeys) -> BackendServices:
    return BackendServices(smart_client(client_keys))


@pytest.fixture(autouse=True)
def no_faults(ehr: EhrSandbox) -> Iterator[None]:
    ehr.faults.reset()
    yield
    ehr.faults.reset()


def target(ehr: EhrSandbox, mode: WritebackMode, client_id: str = BACKEND) -> WritebackTarget:
    return WritebackTarget(mode=mode, fhir_base_url=ehr.config.fhir_base, client_id=client_id)


def event(
    ehr: EhrSandbox, kind: EventKind, role: Role, *, seconds: int = 0, participant: str | None = None
) -> VisitEvent:
    visit = ehr.clinic.visits[0]
    default = f"Practitioner/{visit.practitioner_id}" if role is Role.PROVIDER else f"Patient/{visit.patient_id}"
    return VisitEvent(
        configuration_id="cfg-1",
        geography="americas",
        visit_key="v" * 64,
        kind=kind,
        role=role,
        occurred_at=datetime(2026, 11, 25, 15, 0, tzinfo=UTC) + timedelta(seconds=seconds),
        source=Source.GRAPH,
        participant=participant or default,
        csn=visit.csn,
        appointment=visit.appointment_id,
        encounter=visit.encounter_id,
    )


def test_epic_adapter_sends_connect_and_disconnect_for_both_roles(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    adapter = EpicConnectionStatus(http, backend)
    visit = ehr.clinic.visits[0]
    before = ehr.count_status_changes(conference_id=visit.csn)
    for kind in (EventKind.CONNECTED, EventKind.DISCONNECTED):
        for role in (Role.PROVIDER, Role.PATIENT):
            assert adapter.write(event(ehr, kind, role), target(ehr, WritebackMode.EPIC)) is Written.WRITTEN
    changes = ehr.connection_status_changes(conference_id=visit.csn)[before:]
    assert [(c.external_id, c.external_id_type, c.connection_status) for c in changes] == [
        (visit.practitioner_id, "1", "1"),
        (visit.patient_id, "2", "1"),
        (visit.practitioner_id, "1", "2"),
        (visit.patient_id, "2", "2"),
    ]
    assert {c.vendor_name for c in changes} == {"Microsoft Teams"}
    assert {c.client_id for c in changes} == {BACKEND}
    assert backend.requests == 1  # one Backend Services token, cached for every call


def test_epic_adapter_skips_lobby_a_colleague_who_never_launched_and_a_guest_interpreter(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    adapter = EpicConnectionStatus(http, backend)
    before = ehr.count_status_changes()
    lobby = event(ehr, EventKind.LOBBY, Role.PATIENT)
    unknown_colleague = replace(event(ehr, EventKind.CONNECTED, Role.STAFF), participant=None)
    guest = replace(event(ehr, EventKind.CONNECTED, Role.PATIENT), interpreter=True)  # the patient's id at hand
    for skipped in (lobby, unknown_colleague, guest):
        assert adapter.write(skipped, target(ehr, WritebackMode.EPIC)) is Written.SKIPPED
    assert ehr.count_status_changes() == before


def test_epic_adapter_refused_when_the_web_service_is_not_enabled(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    adapter = EpicConnectionStatus(http, backend)
    with pytest.raises(UpstreamRejected) as caught:
        adapter.write(event(ehr, EventKind.CONNECTED, Role.PROVIDER), target(ehr, WritebackMode.EPIC, NO_SCS))
    assert caught.value.code == "http_403"


def test_audit_event_conditional_create_is_idempotent_and_searchable_by_tag_and_identifier(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    adapter = FhirAuditEvents(http, backend)
    connected = event(ehr, EventKind.CONNECTED, Role.PATIENT, seconds=7)
    for _ in range(3):
        assert adapter.write(connected, target(ehr, WritebackMode.FHIR_AUDIT_EVENT)) is Written.WRITTEN
    tagged = [e for e in ehr.audit_events() if {"system": EVENT_TAG_SYSTEM, "code": connected.id} in e["meta"]["tag"]]
    assert len(tagged) == 1
    [created] = tagged
    assert created["agent"][0]["who"] == {"reference": connected.participant}
    assert created["subtype"][0]["code"] == "participant-connected"

    token = backend.access_token(ehr.config.fhir_base, BACKEND, "system/AuditEvent.read")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    for query in ({"_tag": f"{EVENT_TAG_SYSTEM}|{connected.id}"}, {"identifier": f"{EVENT_TAG_SYSTEM}|{connected.id}"}):
        bundle = http.get(f"{ehr.config.fhir_base}/AuditEvent", params=query, headers=headers).json()
        assert [entry["resource"]["id"] for entry in bundle["entry"]] == [created["id"]], query


@pytest.mark.parametrize(
    ("faults", "error", "retry_after"),
    [
        ({"fail_next": 1, "fail_status": 503}, UpstreamUnavailable, None),
        ({"fail_next": 1, "fail_status": 500}, UpstreamUnavailable, None),
        ({"fail_next": 1, "fail_status": 408}, UpstreamUnavailable, None),
        ({"throttle_rate": 1.0, "retry_after": 7}, UpstreamThrottled, 7.0),
        ({"outage_seconds": 30}, UpstreamUnavailable, None),
        ({"fail_next": 1, "fail_status": 400}, UpstreamRejected, None),
        ({"fail_next": 1, "fail_status": 404}, UpstreamRejected, None),
    ],
)
def test_failures_are_classified_for_retry(
    ehr: EhrSandbox,
    http: SafeHttp,
    backend: BackendServices,
    faults: dict[str, object],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    adapter = FhirAuditEvents(http, backend)
    backend.access_token(ehr.config.fhir_base, BACKEND, "system/AuditEvent.write")  # token first: fault the write
    ehr.faults.update(faults)
    with pytest.raises(error) as caught:
        adapter.write(event(ehr, EventKind.DISCONNECTED, Role.PROVIDER), target(ehr, WritebackMode.FHIR_AUDIT_EVENT))
    if retry_after is not None:
        assert isinstance(caught.value, UpstreamThrottled) and caught.value.retry_after == retry_after


def test_a_refused_token_is_forgotten_so_the_next_attempt_fetches_a_new_one(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    for adapter, mode in ((FhirAuditEvents(http, backend), WritebackMode.FHIR_AUDIT_EVENT),
                          (EpicConnectionStatus(http, backend), WritebackMode.EPIC)):  # fmt: skip
        written = event(ehr, EventKind.CONNECTED, Role.PATIENT, seconds=7)
        adapter.write(written, target(ehr, mode))  # a cached token
        tokens = backend.requests
        ehr.faults.update({"fail_next": 1, "fail_status": 401})
        with pytest.raises(UpstreamRejected) as refused:
            adapter.write(written, target(ehr, mode))
        assert refused.value.code == "http_401" and backend.requests == tokens
        assert adapter.write(written, target(ehr, mode)) is Written.WRITTEN
        assert backend.requests == tokens + 1


def test_timeouts_are_retryable(ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    quick = checked_http(0.3)
    try:
        backend = BackendServices(smart_client(client_keys))
        backend.access_token(ehr.config.fhir_base, BACKEND, "system/Encounter.write")
        ehr.faults.update({"timeout_rate": 1.0, "hang_seconds": 5})
        with pytest.raises(UpstreamUnavailable):
            EpicConnectionStatus(quick, backend).write(
                event(ehr, EventKind.CONNECTED, Role.PROVIDER), target(ehr, WritebackMode.EPIC)
            )
    finally:
        quick.close()


def test_epic_adapter_leaves_launch_events_to_teams_roster(
    ehr: EhrSandbox, http: SafeHttp, backend: BackendServices
) -> None:
    from dataclasses import replace

    launched = replace(event(ehr, EventKind.CONNECTED, Role.PROVIDER, seconds=99), source=Source.LAUNCH, id="")
    before = ehr.count_status_changes()
    assert EpicConnectionStatus(http, backend).write(launched, target(ehr, WritebackMode.EPIC)) is Written.SKIPPED
    assert ehr.count_status_changes() == before


def test_the_writebacks_messages_in_flight_keep_their_connections_to_the_ehr(
    ehr: EhrSandbox, http: SafeHttp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 requests in flight at once (the writeback queue's batchSize + newBatchThreshold) keep their connections:
    a second round opens none (with 10 kept of 20 it reopened one for almost every event); the pools behind them in
    ``tests/integration/test_outbound_connections.py``."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.http import outbound

    opened = []
    connect = outbound._CheckedBackend.connect_tcp

    def counted(self: outbound._CheckedBackend, *args: Any, **kwargs: Any) -> Any:
        opened.append(1)
        return connect(self, *args, **kwargs)

    monkeypatch.setattr(outbound._CheckedBackend, "connect_tcp", counted)
    ehr.faults.update({"latency_ms": 50})  # each request holds its connection, as an EHR call does
    url = f"{ehr.config.fhir_base}/.well-known/smart-configuration"

    workers = ThreadPoolExecutor(max_workers=24)  # the worker's threads live as long as the process

    def round_of_requests() -> int:
        before = len(opened)
        assert {r.status for r in workers.map(lambda _: http.request("GET", url), range(48))} == {200}
        return len(opened) - before

    try:
        assert 0 < round_of_requests() <= 24
        assert round_of_requests() == 0
        assert round_of_requests() == 0
    finally:
        workers.shutdown()
        ehr.faults.reset()
