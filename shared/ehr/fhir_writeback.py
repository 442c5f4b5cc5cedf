"""FHIR R4 ``AuditEvent`` writeback: one conditional create per event (``If-None-Exist`` on the event tag)."""

from __future__ import annotations

from shared.ehr.audit_event import audit_event_json, if_none_exist
from shared.ehr.backend_services import BackendServices
from shared.ehr.vendors import profile_for
from shared.http.outbound import HttpResult, SafeHttp
from shared.visits.events import VisitEvent
from shared.writeback.model import WritebackTarget, Written

SCOPE = "system/AuditEvent.write"
FHIR_JSON = "application/fhir+json"


class FhirAuditEvents:
    idempotent = True  # If-None-Exist on the event's tag: a repeated delivery finds the first AuditEvent

    def __init__(self, http: SafeHttp, backend: BackendServices) -> None:
        self._http = http
        self._backend = backend

    def skips(self, event: VisitEvent) -> bool:
        return False

    def write(self, event: VisitEvent, target: WritebackTarget) -> Written:
        body = audit_event_json(event)

        def request(token: str) -> HttpResult:
            return self._http.post_json(
                f"{target.fhir_base_url.rstrip('/')}/AuditEvent",
                body,
                content_type=FHIR_JSON,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": FHIR_JSON,
                    "If-None-Exist": if_none_exist(event),
                    "Prefer": "return=minimal",
                    **profile_for(target.ehr_vendor).client_headers(target.client_id),
                },
            )

        self._backend.send(target.fhir_base_url, target.client_id, SCOPE, request, vendor=target.ehr_vendor)
        return Written.WRITTEN  # 201 created, or 200: an earlier delivery already created it


class NoWriteback:
    idempotent = True

    def skips(self, event: VisitEvent) -> bool:
        return True

    def write(self, event: VisitEvent, target: WritebackTarget) -> Written:
        return Written.SKIPPED
