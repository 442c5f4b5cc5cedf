"""Push visit events through the local Functions host's writeback queue trigger against a faulty sandbox EHR.

Shared by the reliability test (CI size) and ``benchmarks/writeback.py`` (full size):

    with WritebackLoad(env, faults={...}, host_json=...) as load:
        events = load.events(1000)
        load.enqueue([e.to_json() for e in events])
        load.wait_until_written(events, timeout=60)

Every event is an Epic ``SetExternalConnectionStatus`` call with its own ``ExternalID``, so the
sandbox EHR's record shows exactly how often each event's effect happened (the call itself is
not idempotent, unlike an AuditEvent conditional create).
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from connector.services import reset as reset_services
from function_app import build_app
from sandbox.ehr import EhrConfig, EhrSandbox, RegisteredClient
from sandbox.ehr.clinic import Visit as ClinicVisit
from sandbox.host import LocalHost
from sandbox.server import ServerThread, free_port
from shared.configurations.model import (
    Configuration,
    ConfigurationInput,
    Environment,
    Vendor,
    WritebackMode,
    approved,
    new_configuration,
    with_ehr_signin,
)
from shared.configurations.repository import ConfigurationRepository
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography, Settings
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import VisitContext
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import seal_event

CLIENT_ID = "load-backend"

# Quick retries so a run finishes in seconds; production host.json keeps 5 attempts 10 s apart.
TEST_HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "maxDequeueCount": 10,
            "visibilityTimeout": "00:00:01",
            "maxPollingInterval": "00:00:00.200",
            "batchSize": 32,
            "newBatchThreshold": 16,
            "messageEncoding": "base64",
        },
    },
}


@dataclass
class WritebackLoad:
    env: dict[str, str]
    faults: dict[str, Any] = field(default_factory=dict)
    host_json: dict[str, Any] = field(default_factory=lambda: TEST_HOST_JSON)
    visits: int = 100
    http_timeout: float = 1.0  # seconds; HTTP_TIMEOUT_SECONDS, so hung EHR calls fail fast
    ehr_latency_ms: int = 0
    extra_settings: dict[str, str] = field(default_factory=dict)
    # The configuration's writeback: Epic's SetExternalConnectionStatus (through the ledger) or FHIR AuditEvents
    # (idempotent: no ledger).
    mode: WritebackMode = WritebackMode.EPIC
    # The host in a process of its own with the app's production host.json (``benchmarks.host_process``), so
    # its CPU and Table operations are measurable alone; ``host_json`` then does not apply.
    separate_host: bool = False
    phases: bool = False  # the separate host times each event's phases (``HostProcess.phases``)

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:10]
        self.run = run
        self.queue_name = f"wb-load-{run}"
        self._stack = contextlib.ExitStack()

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> WritebackLoad:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()

    def _start(self) -> None:
        port = free_port()
        connector = f"http://127.0.0.1:{port}"
        ehr_port = free_port()
        # The EHR knows the connector's backend client by its published key set, as in production.
        self.ehr = EhrSandbox(
            EhrConfig(
                base_url=f"http://127.0.0.1:{ehr_port}",
                clients=(
                    RegisteredClient(
                        CLIENT_ID,
                        (),
                        jwks_url=f"{connector}/api/.well-known/jwks.json",
                        grant_types=("client_credentials",),
                    ),
                ),
            )
        )
        self._stack.enter_context(ServerThread(self.ehr.app, port=ehr_port))
        settings = {
            **self.env,
            "PUBLIC_BASE_URL": connector,
            "WRITEBACK_QUEUE_NAME": self.queue_name,
            "HTTP_TIMEOUT_SECONDS": str(self.http_timeout),
            "AzureWebJobs.subscription_upkeep.Disabled": "true",
            "AzureWebJobs.sweep_expired_state.Disabled": "true",
            "AzureWebJobs.report_upkeep.Disabled": "true",  # a timer: its work is no event's
            **self.extra_settings,
        }
        self.environ = settings
        self.settings = Settings.from_env(settings)
        self.storage = Storage(self.settings)
        self._seed()
        reset_services()  # per-process objects are rebuilt from the host's settings
        self._stack.callback(reset_services)
        # Faults start once the EHR is set up; the host starts last, so every event sees them.
        self.ehr.faults.update({"latency_ms": self.ehr_latency_ms, **self.faults})
        self.host: Any
        if self.separate_host:
            from benchmarks.host_process import HostProcess

            self.host = HostProcess(settings, port, phases=self.phases).start()
            self._stack.callback(self.host.stop)
        else:
            self.host = self._stack.enter_context(LocalHost(build_app(), settings, port=port, host_json=self.host_json))

    def _seed(self) -> None:
        fhir = self.ehr.config.fhir_base
        self.configuration_id = seed_configuration(self.storage, fhir, CLIENT_ID, self.mode).id
        self._pending = seed_configuration(self.storage, fhir, CLIENT_ID, self.mode, approve=False)
        self.pending_configuration_id = self._pending.id
        self.sealer = Sealer.from_text(self.settings.sealing_keys.reveal())
        self._external_ids: dict[str, str] = {}
        repository = VisitRepository(self.storage, self.sealer)
        seeded = self.ehr.clinic.visits
        self.visit_keys: list[tuple[str, str]] = []
        for n in range(self.visits):
            clinic_visit = seeded[n % len(seeded)]
            key = f"load-{self.run}-{n}"
            configuration = self.pending_configuration_id if n == 0 else self.configuration_id
            repository.get_or_create(Geography.AMERICAS, key, configuration, visit_context(clinic_visit))
            self.visit_keys.append((key, clinic_visit.csn))

    def approve_pending_configuration(self) -> None:
        approve_configuration(self.storage, self._pending)

    # --- events --------------------------------------------------------------------------------
    def events(self, count: int, *, pending: int = 0) -> list[VisitEvent]:
        """``count`` events on approved visits plus ``pending`` on the not-yet-approved configuration's visit."""
        base = datetime.now(UTC).replace(microsecond=0)
        made: list[VisitEvent] = []
        approved = self.visits - 1
        for n in range(count + pending):
            index = 0 if n >= count else 1 + n % approved
            # A visit's k-th event: joined and left in turn, by the provider twice for each time the patient, so
            # that each visit's meeting ends now and then whatever the number of visits (with n % 2 and n % 3, a
            # number of visits divisible by 2 or 3 gave every event of a visit one kind or one role).
            turn = index + n // approved
            key, csn = self.visit_keys[index]
            external_id = f"load-{self.run}-{n}"
            event = VisitEvent(
                configuration_id=self.pending_configuration_id if index == 0 else self.configuration_id,
                geography=Geography.AMERICAS.value,
                visit_key=key,
                kind=EventKind.CONNECTED if turn % 2 == 0 else EventKind.DISCONNECTED,
                role=Role.PROVIDER if turn % 3 else Role.PATIENT,
                occurred_at=base + timedelta(milliseconds=n),
                source=Source.GRAPH,
                # A participant of its own per event, so the EHR's record counts each event's effect.
                participant=f"{'Practitioner' if n % 3 else 'Patient'}/{external_id}",
                csn=csn,
            )
            # Epic accepts a status only for a participant linked to the conference: each made-up participant
            # "launched" its visit, as a covering clinician would.
            self.ehr.state.link_launch({csn}, external_id)
            sealed = seal_event(self.sealer, event)  # as a launch event's references are: nothing in clear on the queue
            self._external_ids[sealed.id] = external_id
            made.append(sealed)
        return made

    def queue(self, name: str | None = None) -> QueueClient:
        client = QueueClient.from_connection_string(
            self.env["AzureWebJobsStorage"],
            name or self.queue_name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        return client

    def enqueue(self, bodies: list[str]) -> None:
        """Send in parallel (a burst, as Graph and launches produce them), creating the queue first."""
        queue = self.queue()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(queue.send_message, bodies))

    # --- observation ---------------------------------------------------------------------------
    def written(self) -> Counter[str]:
        """How many times the EHR recorded each ExternalID of this run (an AuditEvent: its agent's reference)."""
        prefix = f"load-{self.run}-"
        if self.mode is WritebackMode.FHIR_AUDIT_EVENT:
            agents = (
                str((agent.get("who") or {}).get("reference") or "").rsplit("/", 1)[-1]
                for audit in self.ehr.audit_events()
                for agent in audit.get("agent") or []
            )
            return Counter(agent for agent in agents if agent.startswith(prefix))
        return Counter(c.external_id for c in self.ehr.connection_status_changes() if c.external_id.startswith(prefix))

    def external_id(self, event: VisitEvent) -> str:
        return self._external_ids[event.id]

    def wait_until_written(self, events: list[VisitEvent], timeout: float) -> float:
        """Seconds until every event's effect is recorded; raises at the deadline."""
        wanted = {self.external_id(e) for e in events}
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if wanted <= set(self.written()):
                return time.monotonic() - started
            time.sleep(0.1)
        missing = len(wanted - set(self.written()))
        raise AssertionError(f"{missing} of {len(wanted)} events not written within {timeout} s")

    def wait_until_queue_empty(self, timeout: float) -> None:
        queue = self.queue()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if queue.get_queue_properties().approximate_message_count == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the writeback queue did not drain")

    def poison(self) -> list[str]:
        """Bodies in the poison queue (base64-decoded when they are base64, as stored by the host)."""
        queue = QueueClient.from_connection_string(self.env["AzureWebJobsStorage"], f"{self.queue_name}-poison")
        with contextlib.suppress(ResourceExistsError):
            queue.create_queue()
        bodies = []
        for message in queue.peek_messages(max_messages=32):
            try:
                bodies.append(base64.b64decode(message.content, validate=True).decode())
            except (ValueError, UnicodeDecodeError):
                bodies.append(message.content)
        return bodies


def visit_context(clinic_visit: ClinicVisit) -> VisitContext:
    """The launch context a launch of this sandbox clinic visit would leave on the visit row."""
    return VisitContext(
        csn=clinic_visit.csn,
        appointment=clinic_visit.appointment_id,
        encounter=clinic_visit.encounter_id,
        patient=f"Patient/{clinic_visit.patient_id}",
        provider=f"Practitioner/{clinic_visit.practitioner_id}",
        confirmed=True,  # a launch's context is the one the EHR confirmed
    )


APPROVER = "approver@contoso.example"
APPROVER_OID = "a0000000-0000-4000-8000-0000000000ff"


def seed_configuration(
    storage: Storage, fhir_base_url: str, client_id: str, mode: WritebackMode, *, approve: bool = True
) -> Configuration:
    """A configuration stored through the portal's repository, in a tenant of its own (no clash with others)."""
    data = ConfigurationInput(
        organization="Writeback load clinic",
        fhir_base_url=fhir_base_url,
        environment=Environment.TEST,
        approver_upn=APPROVER,
        geography=Geography.AMERICAS,
        vendor=Vendor.EPIC,
        provider_client_id=client_id,
        patient_client_id=client_id,
        writeback_mode=mode,
    )
    now = datetime.now(UTC)
    config = ConfigurationRepository(storage.app).create(
        new_configuration(str(uuid.uuid4()), data, by=APPROVER, now=now)
    )
    return approve_configuration(storage, config) if approve else config


def approve_configuration(storage: Storage, config: Configuration) -> Configuration:
    """The approver's EHR sign-in and approval, as the portal records them."""
    now = datetime.now(UTC)
    signed = with_ehr_signin(config, upn=APPROVER, oid=APPROVER_OID, now=now)
    assert config.etag is not None
    return ConfigurationRepository(storage.app).update(
        config, approved(signed, upn=APPROVER, oid=APPROVER_OID, now=now), etag=config.etag
    )
