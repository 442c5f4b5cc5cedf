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
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
import jwt
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.ehr import EhrConfig, EhrSandbox, RegisteredClient
from sandbox.host import LocalHost
from sandbox.server import ServerThread, free_port
from shared.backend_services import BackendServices
from shared.events import EventKind, Role, Source, VisitEvent
from shared.settings import Geography, Settings
from shared.storage import Storage
from shared.visits import VisitContext, VisitRepository
from shared.writeback import WritebackMode
from shared.writeback.epic import EpicConnectionStatus
from shared.writeback.fhir import FhirAuditEvents, NoWriteback
from shared.writeback.targets import TABLE as CONFIGURATIONS
from shared.writeback.targets import ConfigurationTargets
from shared.writeback.worker import FailureLog, RetryPolicy, WritebackWorker

CLIENT_ID = "load-backend"
TENANT = "11111111-1111-4111-8111-111111111111"

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


class BackendSigner:
    """The backend client's private_key_jwt signer (RS384, kid), with its JWKS served over HTTP."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**public, "kid": "load-1", "alg": "RS384", "use": "sig"}]}

    def client_assertion(self, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 240}
        claims["jti"] = uuid.uuid4().hex  # type: ignore[assignment]
        return jwt.encode(claims, self.key, algorithm="RS384", headers={"kid": "load-1", "typ": "JWT"})


@dataclass
class WritebackLoad:
    env: dict[str, str]
    faults: dict[str, Any] = field(default_factory=dict)
    host_json: dict[str, Any] = field(default_factory=lambda: TEST_HOST_JSON)
    visits: int = 100
    http_timeout: float = 1.0
    ehr_latency_ms: int = 0

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:10]
        self.run = run
        self.queue_name = f"wb-load-{run}"
        self.configuration_id = str(uuid.uuid4())
        self.pending_configuration_id = str(uuid.uuid4())
        self.signer = BackendSigner()
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
        signer = self.signer

        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse(signer.jwks)

        jwks_server = self._stack.enter_context(ServerThread(Starlette(routes=[Route("/jwks", jwks)])))
        port = free_port()
        self.ehr = EhrSandbox(
            EhrConfig(
                base_url=f"http://127.0.0.1:{port}",
                clients=(
                    RegisteredClient(
                        CLIENT_ID, (), jwks_url=jwks_server.url + "/jwks", grant_types=("client_credentials",)
                    ),
                ),
                backend_token_seconds=300,
            )
        )
        self._stack.enter_context(ServerThread(self.ehr.app, port=port))
        settings = {
            **self.env,
            "WRITEBACK_QUEUE_NAME": self.queue_name,
            "AzureWebJobs.subscription_upkeep.Disabled": "true",
            "AzureWebJobs.sweep_expired_state.Disabled": "true",
        }
        self.settings = Settings.from_env(settings)
        self.storage = Storage(self.settings)
        self._seed()
        from connector import events_wiring

        http = httpx.Client(timeout=self.http_timeout, limits=httpx.Limits(max_connections=64))
        self._stack.callback(http.close)
        backend = BackendServices(http, signer)
        self.worker = WritebackWorker(
            VisitRepository(self.storage),
            ConfigurationTargets(self.storage.app, ttl=1.0),
            {
                WritebackMode.EPIC: EpicConnectionStatus(http, backend),
                WritebackMode.FHIR_AUDIT_EVENT: FhirAuditEvents(http, backend),
                WritebackMode.NONE: NoWriteback(),
            },
            FailureLog(self.storage.app, self.queue_name),
            retry=RetryPolicy(attempts=3, base_delay=0.05, max_retry_after=1.0),
        )
        events_wiring.install_worker(self.worker)
        self._stack.callback(events_wiring.reset)
        # Faults start once the EHR is set up; the host starts last, so every event sees them.
        self.ehr.faults.update({"latency_ms": self.ehr_latency_ms, **self.faults})
        import function_app

        self.host = self._stack.enter_context(LocalHost(function_app.app, settings, host_json=self.host_json))

    def _seed(self) -> None:
        table = self.storage.app.table(CONFIGURATIONS)
        for configuration_id, status in (
            (self.configuration_id, "approved"),
            (self.pending_configuration_id, "pending"),
        ):
            table.upsert_entity(
                {
                    "PartitionKey": TENANT,
                    "RowKey": configuration_id,
                    "FhirBaseUrl": self.ehr.config.fhir_base,
                    "ProviderClientId": CLIENT_ID,
                    "WritebackMode": WritebackMode.EPIC.value,
                    "Status": status,
                }
            )
        repository = VisitRepository(self.storage)
        seeded = self.ehr.clinic.visits
        self.visit_keys: list[tuple[str, str]] = []
        for n in range(self.visits):
            clinic_visit = seeded[n % len(seeded)]
            context = VisitContext(
                csn=clinic_visit.csn,
                appointment=clinic_visit.appointment_id,
                encounter=clinic_visit.encounter_id,
                patient=f"Patient/{clinic_visit.patient_id}",
                provider=f"Practitioner/{clinic_visit.practitioner_id}",
            )
            key = f"load-{self.run}-{n}"
            configuration = self.pending_configuration_id if n == 0 else self.configuration_id
            repository.get_or_create(Geography.AMERICAS, key, configuration, context)
            self.visit_keys.append((key, clinic_visit.csn))

    def approve_pending_configuration(self) -> None:
        table = self.storage.app.table(CONFIGURATIONS)
        entity = table.get_entity(TENANT, self.pending_configuration_id)
        entity["Status"] = "approved"
        table.update_entity(entity)

    # --- events --------------------------------------------------------------------------------
    def events(self, count: int, *, pending: int = 0) -> list[VisitEvent]:
        """``count`` events on approved visits plus ``pending`` on the not-yet-approved configuration's visit."""
        base = datetime.now(UTC).replace(microsecond=0)
        made: list[VisitEvent] = []
        for n in range(count + pending):
            index = 0 if n >= count else 1 + n % (self.visits - 1)
            key, csn = self.visit_keys[index]
            made.append(
                VisitEvent(
                    configuration_id=self.pending_configuration_id if index == 0 else self.configuration_id,
                    geography=Geography.AMERICAS.value,
                    visit_key=key,
                    kind=EventKind.CONNECTED if n % 2 == 0 else EventKind.DISCONNECTED,
                    role=Role.PROVIDER if n % 3 else Role.PATIENT,
                    occurred_at=base + timedelta(milliseconds=n),
                    source=Source.LAUNCH,
                    participant=f"{'Practitioner' if n % 3 else 'Patient'}/load-{self.run}-{n}",
                    csn=csn,
                )
            )
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
        queue = self.queue()
        for body in bodies:
            queue.send_message(body)

    def enqueue_raw(self, content: str) -> None:
        """A message stored as is (e.g. not base64: the host cannot decode it)."""
        QueueClient.from_connection_string(self.env["AzureWebJobsStorage"], self.queue_name).send_message(content)

    # --- observation ---------------------------------------------------------------------------
    def written(self) -> Counter[str]:
        """How many times the EHR recorded each ExternalID of this run."""
        prefix = f"load-{self.run}-"
        return Counter(c.external_id for c in self.ehr.connection_status_changes() if c.external_id.startswith(prefix))

    def external_id(self, event: VisitEvent) -> str:
        assert event.participant is not None
        return event.participant.rsplit("/", 1)[-1]

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
