"""The EHR sandbox: ``EhrSandbox(config)`` holds its state; ``create_app(config)`` is the ASGI app.

Tests reach the recorded writebacks through ``sandbox_of(app)`` (or ``app.state.ehr``):
``connection_status_changes(...)``, ``count_status_changes(...)``, ``audit_events()``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sandbox.ehr import admin, fhir, launcher, oauth, telehealth
from sandbox.ehr.client_auth import JwksCache
from sandbox.ehr.clinic import CSN_SYSTEM, Clinic, EhrUser, Visit
from sandbox.ehr.config import LAUNCH_CONTEXT_FIELDS, SCS_PATH, EhrConfig
from sandbox.ehr.faults import FaultInjector, FaultMiddleware
from sandbox.ehr.keys import SigningKey
from sandbox.ehr.launch_urls import LaunchError, build_launch_url, expand_context_tokens
from sandbox.ehr.state import ConnectionStatusChange, EhrState, IntegrationRecord, Launch, LaunchContext, new_token

TEMPLATES = Path(__file__).parent / "templates"


class EhrSandbox:
    def __init__(self, config: EhrConfig) -> None:
        self.config = config
        spec = config.spec
        visit_numbers = CSN_SYSTEM if spec.epic_extras else f"{config.origin}/visit-number"
        self.clinic = Clinic(
            config.today or dt.datetime.now(dt.UTC).date(), config.fhir_base, visit_number_system=visit_numbers
        )
        self.state = EhrState(config.clients, config.state_file)
        self.key = SigningKey(self.state.signing_key_pem)
        if self.state.signing_key_pem is None:
            self.state.signing_key_pem = self.key.private_pem()
            self.state.save()
        self.jwks_cache = JwksCache()
        self.faults = FaultInjector(config.faults, api_prefixes=spec.api_prefixes)
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), auto_reload=False
        )
        self.app = Starlette(routes=self._routes(), middleware=[Middleware(FaultMiddleware, injector=self.faults)])
        self.app.state.ehr = self

    def _routes(self) -> list[Route]:
        spec = self.config.spec
        fhir_base = spec.fhir_path
        vendor_apis = [  # Epic's non-FHIR web services and the FHIR-base OpenID configuration (Aug 2021+)
            Route(f"{fhir_base}/.well-known/openid-configuration", fhir.openid_configuration, methods=["GET"]),
            Route(SCS_PATH, telehealth.set_external_connection_status, methods=["GET", "POST"]),
        ]
        return [
            Route(f"{fhir_base}/metadata", fhir.metadata, methods=["GET"]),
            Route(f"{fhir_base}/.well-known/smart-configuration", fhir.smart_configuration, methods=["GET"]),
            Route(f"{spec.issuer_path}/.well-known/openid-configuration", fhir.openid_configuration, methods=["GET"]),
            Route(spec.jwks_path, fhir.jwks, methods=["GET"]),
            Route(spec.authorize_path, oauth.authorize, methods=["GET", "POST"]),
            Route(spec.authorize_path + "/signin", oauth.sign_in, methods=["POST"]),
            Route(spec.token_path, oauth.token, methods=["POST"]),
            *(vendor_apis if spec.epic_extras else []),
            Route(f"{fhir_base}/{{type}}/_search", fhir.search_type, methods=["POST"]),
            Route(f"{fhir_base}/{{type}}/{{id}}", fhir.read, methods=["GET"]),
            Route(f"{fhir_base}/{{type}}/{{id}}", fhir.not_allowed, methods=["PUT", "PATCH", "DELETE", "POST"]),
            Route(f"{fhir_base}/{{type}}", fhir.search_type, methods=["GET"]),
            Route(f"{fhir_base}/{{type}}", fhir.create, methods=["POST"]),
            *(self._patient_routes() if spec.patient_fhir_path else []),
            *launcher.routes(),
            *admin.routes(),
        ]

    def _patient_routes(self) -> list[Route]:
        """The patient-side FHIR base (Oracle's patient access): discovery, reads and searches, and its persona's
        authorize endpoint."""
        spec = self.config.spec
        base = spec.patient_fhir_path
        return [
            Route(f"{base}/metadata", fhir.metadata, methods=["GET"]),
            Route(f"{base}/.well-known/smart-configuration", fhir.smart_configuration, methods=["GET"]),
            Route(spec.patient_authorize_path, oauth.authorize, methods=["GET", "POST"]),
            Route(f"{base}/{{type}}/_search", fhir.search_type, methods=["POST"]),
            Route(f"{base}/{{type}}/{{id}}", fhir.read, methods=["GET"]),
            Route(f"{base}/{{type}}/{{id}}", fhir.not_allowed, methods=["PUT", "PATCH", "DELETE", "POST"]),
            Route(f"{base}/{{type}}", fhir.search_type, methods=["GET"]),
        ]

    # --- HTML -----------------------------------------------------------------------------------
    def render(
        self, template: str, status: int = 200, headers: dict[str, str] | None = None, **values: Any
    ) -> HTMLResponse:
        page = self.templates.get_template(template).render(config=self.config, **values)
        return HTMLResponse(page, status_code=status, headers=headers)

    def html_error(self, status: int, title: str, message: str) -> HTMLResponse:
        return self.render("error.html", status=status, title=title, message=message)

    # --- launches -------------------------------------------------------------------------------
    def context_values(self, visit: Visit, user: EhrUser) -> dict[str, str]:
        """What each context token expands to for this visit and user."""
        department = self.clinic.department(visit.department_id)
        login = self.clinic.department(user.login_department) if user.login_department else None
        return {
            "CSN": visit.csn,
            "CONFERENCEID": visit.conference_id,
            "PERFDEPID": department.epic_id if department else "",
            "LOGINDEPID": login.epic_id if login else "",
            "USERID": user.username if user.resource_type == "Practitioner" else "",
        }

    def create_launch(self, record_id: str, appointment_id: str, user_id: str) -> str:
        """Issue a single-use ``launch`` for this record, visit and user; return the URL Epic would open."""
        with self.state.lock:
            record = self.state.records.get(record_id)
        if record is None:
            raise LaunchError("unknown integration record")
        visit = self.clinic.visit_by_appointment(appointment_id)
        user = self.clinic.user(user_id)
        if visit is None or user is None:
            raise LaunchError("unknown visit or user")
        expected_type = "Practitioner" if record.kind == "provider" else "Patient"
        if user.resource_type != expected_type:
            raise LaunchError(f"a {record.kind} record launches for a {expected_type}")
        if user.resource_type == "Patient" and visit.patient_id != user.id:
            raise LaunchError("the visit belongs to another patient")
        values = self.context_values(visit, user)
        pairs = expand_context_tokens(record.context_tokens, values)
        # The token response carries what the client's integration is configured to return, nothing from the URL.
        client = self.state.client(record.client_id)
        configured = client.launch_context if client else LAUNCH_CONTEXT_FIELDS
        returned = tuple(name for name in configured if name in self.config.spec.launch_context)
        extra = dict(expand_context_tokens(client.token_fields, values)) if client else {}
        context = LaunchContext(
            user_id=user.id,
            user_type=user.resource_type,
            patient_id=visit.patient_id,
            encounter_id=visit.encounter_id if "encounter" in returned else None,
            appointment_id=visit.appointment_id if "appointment" in returned else None,
            location_id=visit.department_id if "location" in returned else None,
            login_department_id=(
                user.login_department
                if user.resource_type == "Practitioner" and "loginDepartment" in returned
                else None
            ),
            csn=visit.csn,
            extra=extra,
            ehr_launch=True,
        )
        iss = self.config.patient_fhir_base if record.kind == "patient" else self.config.fhir_base
        expires = time.time() + self.config.launch_seconds
        launch = Launch(new_token(), record.client_id, record.id, context, expires, fhir_base=iss)
        with self.state.lock:
            self.state.launches[launch.value] = launch
        # Epic links the visit's conference to the launching user (a covering clinician, say).
        self.state.link_launch({visit.csn, visit.conference_id}, user.id)
        return build_launch_url(record.launch_url, pairs, iss, launch.value)

    def linked_participants(self, conference_id: str) -> frozenset[str]:
        """Who may be reported on a conference: the visit's practitioner and patient, and whoever launched it."""
        return self.clinic.participants(conference_id) | self.state.launched_by(conference_id)

    def add_record(
        self, *, name: str, kind: str, launch_url: str, context_tokens: str, client_id: str, environment: str = ""
    ) -> IntegrationRecord:
        if kind not in ("provider", "patient"):
            raise ValueError("kind must be provider or patient")
        if not launch_url.startswith(("https://", "http://")):
            raise ValueError("the launch URL must be an http(s) URL")
        if not client_id.strip():
            raise ValueError("a client id is required")
        record = IntegrationRecord(
            id=new_token(8),
            name=name.strip() or f"{kind} launch",
            kind=kind,
            environment=environment.strip() or self.config.environment,
            launch_url=launch_url.strip(),
            context_tokens=context_tokens.strip(),
            client_id=client_id.strip(),
            created_at=time.time(),
        )
        self.state.add_record(record)
        return record

    # --- read-back for tests --------------------------------------------------------------------
    def connection_status_changes(
        self, conference_id: str | None = None, external_id: str | None = None, status: str | None = None
    ) -> list[ConnectionStatusChange]:
        with self.state.lock:
            return [
                c
                for c in self.state.status_changes
                if (conference_id is None or c.conference_id == conference_id)
                and (external_id is None or c.external_id == external_id)
                and (status is None or c.connection_status == status)
            ]

    def count_status_changes(
        self, conference_id: str | None = None, external_id: str | None = None, status: str | None = None
    ) -> int:
        return len(self.connection_status_changes(conference_id, external_id, status))

    def audit_events(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.audit_events)


def create_app(config: EhrConfig) -> Starlette:
    return EhrSandbox(config).app


def sandbox_of(app: Starlette) -> EhrSandbox:
    ehr: EhrSandbox = app.state.ehr
    return ehr
