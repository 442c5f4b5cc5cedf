"""The whole launch path on 127.0.0.1: the real function app in the local Functions host, Azurite, and the
wired sandbox Entra ID, Graph/Teams and EHR, with approved and unapproved configurations and the EHR's
integration (FDI) records pointing at the connector's launch URLs.

Used by the browser tests and ``benchmarks/launch.py``. Every request that reaches the EHR is counted
at the EHR (``ehr_requests``), so a test can prove that a refused launch sent nothing.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.services import reset as reset_services
from function_app import build_app
from sandbox import azurite
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID, DEMO_PROVIDER_CLIENT_ID
from sandbox.ehr.app import EhrSandbox
from sandbox.ehr.state import IntegrationRecord
from sandbox.host import LocalHost
from sandbox.local_settings import local_values
from sandbox.seed import CONTOSO, FABRIKAM
from sandbox.server import free_port
from sandbox.stand_ins import RunningStandIns, start_stand_ins
from shared.configurations.model import (
    Configuration,
    ConfigurationInput,
    Environment,
    Status,
    Vendor,
    WritebackMode,
    new_configuration,
)
from shared.configurations.repository import ConfigurationRepository
from shared.ehr.vendors import profile_for
from shared.kernel.clock import utcnow
from shared.kernel.settings import Geography, Settings
from shared.storage.accounts import Storage

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_CONTEXT = "sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%"
PATIENT_CONTEXT = "sessionId=%CSN%"
# The sandbox EHR's flavours (``sandbox/ehr/flavours.py``) and the configuration vendor each stands for.
FLAVOUR_VENDORS = {"epic": Vendor.EPIC, "oracle": Vendor.ORACLE, "smart": Vendor.SMART}

# Seeded EHR users and their Microsoft 365 accounts (sandbox/seed.py).
SMITH = "e-prac-smith"
LEE = "e-prac-lee"
NOPOLICY = "e-prac-nopolicy"
SOUZA = "e-prac-souza"  # the staff interpreter
SMITH_UPN = "dr.smith@contoso.example"
LEE_UPN = "dr.lee@contoso.example"
NOPOLICY_UPN = "dr.nopolicy@contoso.example"
SOUZA_UPN = "ana.souza@contoso.example"


WRITEBACK_PATHS = ("/AuditEvent", "/SetExternalConnectionStatus")


class RequestCounter:
    """ASGI middleware counting the requests that reach a stand-in."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with self._lock:
                self.requests.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def count(self, prefix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.split(" ", 1)[1].startswith(prefix))


@dataclass
class LaunchWorld:
    host: Any  # LocalHost, or a host in another process (``benchmarks.host_process.HostProcess``)
    stand_ins: RunningStandIns
    settings: Settings
    environ: dict[str, str]
    counter: RequestCounter
    configuration: Configuration
    records: dict[str, IntegrationRecord] = field(default_factory=dict)

    @property
    def ehr(self) -> EhrSandbox:
        return self.stand_ins.ehr

    @property
    def url(self) -> str:
        return str(self.host.url)

    @property
    def ehr_url(self) -> str:
        return self.ehr.config.origin

    def ehr_requests(self) -> list[str]:
        """Requests that reached the EHR's APIs (FHIR, OAuth, keys) for launches, in order: not its
        Hyperspace/MyChart pages, and not the writeback's own calls (AuditEvent, SetExternalConnectionStatus),
        which the host's queue trigger makes in the background for earlier tests' launches."""
        prefixes = self.ehr.config.spec.api_prefixes
        return [
            request
            for request in self.counter.snapshot()
            if request.split(" ", 1)[1].startswith(prefixes) and not request.endswith(WRITEBACK_PATHS)
        ]

    def launch_url(self, record: str, appointment_id: str, user_id: str) -> str:
        """What Epic opens when a user presses Begin virtual visit (a fresh single-use ``launch``)."""
        return self.ehr.create_launch(self.records[record].id, appointment_id, user_id)

    def appointment_of(self, practitioner: str, patient: str) -> str:
        visit = next(v for v in self.ehr.clinic.visits if v.practitioner_id == practitioner and v.patient_id == patient)
        return visit.appointment_id


def _configuration(
    tenant: str,
    fhir_base_url: str,
    *,
    environment: Environment,
    approved: bool,
    writeback_mode: WritebackMode = WritebackMode.EPIC,
    vendor: Vendor = Vendor.EPIC,
    patient_fhir_base_url: str = "",
) -> Configuration:
    data = ConfigurationInput(
        organization="Contoso Health" if tenant == CONTOSO.id else "Fabrikam Clinic",
        fhir_base_url=fhir_base_url,
        environment=environment,
        approver_upn="analyst@contoso.example",
        geography=Geography.EMEA,
        vendor=vendor,
        provider_client_id=DEMO_PROVIDER_CLIENT_ID,
        patient_client_id=DEMO_PATIENT_CLIENT_ID,
        writeback_mode=writeback_mode,
        patient_fhir_base_url=patient_fhir_base_url,
    )
    config = new_configuration(tenant, data, by="admin@contoso.example", now=utcnow())
    if approved:
        config = dataclasses.replace(
            config, status=Status.APPROVED, approved_by="analyst@contoso.example", approved_at=utcnow()
        )
    return config


@contextmanager
def launch_world(
    azurite_port_base: int,
    state_dir: Path,
    *,
    app_account: str = "apac",
    writeback_mode: WritebackMode | None = None,
    group_records: bool = False,
    host_factory: Callable[[dict[str, str], int], Any] | None = None,
    **ehr_options: Any,
) -> Iterator[LaunchWorld]:
    """``flavour`` (an EHR option) picks the sandbox EHR's vendor; the configurations and the EHR's records follow
    that vendor's profile (its context tokens, and its writeback: Epic's by default, else FHIR AuditEvent).
    ``host_factory(settings, port)``: a host of the caller's (e.g. one in a process of its own, for the launch
    benchmark) instead of the local host in this process."""
    vendor = FLAVOUR_VENDORS[ehr_options.get("flavour", "epic")]
    profile = profile_for(vendor)
    if writeback_mode is None:
        writeback_mode = WritebackMode.EPIC if vendor is Vendor.EPIC else WritebackMode.FHIR_AUDIT_EVENT
    port = free_port()
    connector = f"http://127.0.0.1:{port}"
    stand_ins = start_stand_ins(state_dir, connector_url=connector, ehr_options=ehr_options or None)
    # Count at the EHR's server: uvicorn hands each new connection ``config.loaded_app``.
    server_config = stand_ins.ehr_server._server.config
    counter = RequestCounter(server_config.loaded_app)
    server_config.loaded_app = counter
    environ = local_values(azurite_port_base, PUBLIC_BASE_URL=connector, **stand_ins.settings)
    # The app's own tables in an account no other test uses as its app account, so the configurations
    # seeded here never show up in another test's tenant listing (a private Azurite may keep the default).
    environ["AzureWebJobsStorage"] = azurite.connection_string(app_account, azurite_port_base)
    # A queue of its own: every world's host listens on its queue, and the suite's workers share one Azurite. On a
    # shared queue another world's host could take this world's events and fail them for good (its own secrets do
    # not open their seals): a writeback this world waits for would never come.
    environ["WRITEBACK_QUEUE_NAME"] = f"writeback-{uuid.uuid4().hex[:12]}"
    settings = Settings.from_env(environ)
    storage = Storage(settings)
    configurations = ConfigurationRepository(storage.app)
    fhir = stand_ins.ehr.config.fhir_base
    # Oracle's patient-access service root (the flavour's patient-side base), where the EHR has one.
    patient_fhir = stand_ins.ehr.config.patient_fhir_base if profile.patient_fhir_base else ""
    test_config = configurations.create(
        _configuration(
            CONTOSO.id,
            fhir,
            environment=Environment.TEST,
            approved=True,
            writeback_mode=writeback_mode,
            vendor=vendor,
            patient_fhir_base_url=patient_fhir,
        )
    )
    # The same FHIR URL in another tenant, not yet approved; and Contoso's production configuration (its URL is
    # unique to this world: worlds of other test files may be alive at the same time in other xdist workers).
    pending = configurations.create(
        _configuration(FABRIKAM.id, fhir, environment=Environment.TEST, approved=False, vendor=vendor)
    )
    production = configurations.create(
        _configuration(
            CONTOSO.id,
            f"https://epic-{uuid.uuid4().hex[:12]}.contoso.example/api/FHIR/R4",
            environment=Environment.PRODUCTION,
            approved=True,
            writeback_mode=writeback_mode,
            vendor=vendor,
        )
    )
    records: dict[str, IntegrationRecord] = {}
    # What the portal's integration records tell the analyst to build (Epic's FDI context tokens; none elsewhere).
    provider_context, patient_context = profile.provider_context_tokens, profile.patient_context_tokens
    for name, config, kind, context in (
        ("provider", test_config, "provider", provider_context),
        ("patient", test_config, "patient", patient_context),
        ("pending provider", pending, "provider", provider_context),
        ("production provider", production, "provider", provider_context),
        ("unknown provider", None, "provider", provider_context),
        # Epic's separate group-visit records (``group_records``): the conference id beside each CSN.
        *(
            (
                ("group provider", test_config, "provider", profile.group_provider_context_tokens),
                ("group patient", test_config, "patient", profile.group_patient_context_tokens),
            )
            if group_records
            else ()
        ),
    ):
        configuration_id = config.id if config else str(uuid.uuid4())
        records[name] = stand_ins.ehr.add_record(
            name=name,
            kind=kind,
            launch_url=f"{connector}/api/launch/{configuration_id}/{kind}",
            context_tokens=context,
            client_id=DEMO_PROVIDER_CLIENT_ID if kind == "provider" else DEMO_PATIENT_CLIENT_ID,
        )
    saved = {key: os.environ.get(key) for key in environ}
    for key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):  # the host keeps values already set: trust this sandbox
        os.environ[key] = environ[key]
    reset_services()
    # A fresh app object: the Functions library indexes an app object only once, and other tests index the
    # imported ``function_app.app`` themselves.
    host = host_factory(environ, port) if host_factory else LocalHost(build_app(), environ, port=port, app_dir=ROOT)
    try:
        host.start()
        yield LaunchWorld(host, stand_ins, settings, environ, counter, test_config, records)
    finally:
        host.stop()
        stand_ins.stop()
        for config in (test_config, pending, production):
            configurations.delete(config)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_services()
