"""Fault injection (latency, 5xx, 429, hangs, outage windows), persistence, and the seed's tie to Entra."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandbox.ehr import EhrConfig, EhrSandbox, Faults, RegisteredClient
from sandbox.seed import DIRECTORY
from sandbox.server import ServerThread, free_port

SMART = "/api/FHIR/R4/.well-known/smart-configuration"


@pytest.fixture
def faulty() -> Iterator[tuple[httpx.Client, EhrSandbox]]:
    port = free_port()
    ehr = EhrSandbox(EhrConfig(base_url=f"http://127.0.0.1:{port}", faults=Faults(seed=7)))
    with ServerThread(ehr.app, port=port) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        yield client, ehr


def statuses(client: httpx.Client, n: int) -> list[int]:
    return [client.get(SMART).status_code for _ in range(n)]


def test_error_rate_is_reproducible_with_a_seed(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    assert client.post("/_sandbox/faults", json={"error_rate": 0.5, "seed": 42}).status_code == 200
    first = statuses(client, 30)
    client.post("/_sandbox/faults", json={"seed": 42})
    assert statuses(client, 30) == first
    assert {500, 503} & set(first) and 200 in first
    client.post("/_sandbox/faults", json={"error_rate": 1.0})
    failed = client.get("/api/FHIR/R4/Patient/x")
    assert failed.status_code in (500, 503) and failed.json()["resourceType"] == "OperationOutcome"
    token = client.post("/oauth2/token", data={"grant_type": "client_credentials"})
    assert token.json()["error"] == "temporarily_unavailable"
    assert client.get("/_sandbox/faults").json()["injected"] >= 2  # the admin API itself is never faulted
    assert client.get("/hyperspace").status_code == 200  # launcher pages are outside the faulted paths


def test_throttle_returns_429_with_retry_after(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    client.post("/_sandbox/faults", json={"throttle_rate": 1.0, "retry_after": 7})
    response = client.get(SMART)
    assert response.status_code == 429 and response.headers["retry-after"] == "7"


def test_latency_and_fail_next(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    client.post("/_sandbox/faults", json={"latency_ms": 300, "fail_next": 2, "fail_status": 502})
    started = time.monotonic()
    assert statuses(client, 3) == [502, 502, 200]
    assert time.monotonic() - started >= 0.9
    assert client.get("/_sandbox/faults").json()["fail_next"] == 0


def test_timeout_hangs_longer_than_the_client_waits(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    client.post("/_sandbox/faults", json={"timeout_rate": 1.0, "hang_seconds": 3})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.get(SMART, timeout=0.3)
    assert time.monotonic() - started < 2
    client.post("/_sandbox/faults", json={"hang_seconds": 0.2})
    assert client.get(SMART).status_code == 504


def test_outage_window_ends(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    client.post("/_sandbox/faults", json={"outage_seconds": 0.6})
    down = client.get(SMART)
    assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 5
    while client.get(SMART).status_code == 503:
        assert time.monotonic() < deadline, "the outage did not end"
        time.sleep(0.1)
    assert client.delete("/_sandbox/faults").json()["outage_until"] is None


def test_fault_admin_rejects_bad_switches(faulty: tuple[httpx.Client, EhrSandbox]) -> None:
    client, _ = faulty
    assert client.post("/_sandbox/faults", json={"error_rate": 2}).status_code == 400
    assert client.post("/_sandbox/faults", json={"colour": "red"}).status_code == 400
    assert client.post("/_sandbox/faults", content=b"nope").status_code == 400


def test_configured_faults_apply_from_start() -> None:
    port = free_port()
    config = EhrConfig(base_url=f"http://127.0.0.1:{port}", faults=Faults(fail_next=1, fail_status=500))
    with ServerThread(EhrSandbox(config).app, port=port) as server, httpx.Client(base_url=server.url) as client:
        assert statuses(client, 2) == [500, 200]


def test_state_file_persists_records_clients_writebacks_and_key(tmp_path: Path) -> None:
    state_file = tmp_path / "ehr.json"
    config = EhrConfig(base_url="http://127.0.0.1:1", state_file=state_file)
    first = EhrSandbox(config)
    first.state.register_client(RegisteredClient("persisted", ("https://x/cb",), jwks_url="https://x/jwks"))
    first.add_record(
        name="r", kind="provider", launch_url="https://x/launch", context_tokens="a=%CSN%", client_id="persisted"
    )
    first.state.add_audit_event({"resourceType": "AuditEvent", "id": "1"})
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"
    second = EhrSandbox(config)
    assert second.key.kid == first.key.kid
    assert second.state.client("persisted") is not None
    assert [r.name for r in second.state.records_of("provider")] == ["r"]
    assert second.audit_events() == [{"resourceType": "AuditEvent", "id": "1"}]


def test_practitioners_match_the_seeded_entra_providers() -> None:
    ehr = EhrSandbox(EhrConfig(base_url="http://127.0.0.1:1"))
    entra_names = {
        u.name
        for u in DIRECTORY.users
        if u.description in ("Provider", "Staff") or u.description.startswith("Provider ")
    }
    assert entra_names == {
        "Dr. Jordan Smith", "Dr. Morgan Lee", "Dr. Casey Nopolicy", "Nurse Robin Kim", "Dr. Quinn Garcia"
    }  # fmt: skip
    assert entra_names <= {p.display for p in ehr.clinic.practitioners}
    for practitioner in ehr.clinic.practitioners:
        if practitioner.display in entra_names:
            assert ehr.clinic.visits_for_practitioner(practitioner.id), practitioner.display
