"""Backend Services tokens, FHIR reads and searches under each scope, and AuditEvent conditional create."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.location import Location
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner

from sandbox.ehr import EhrSandbox
from sandbox.ehr.clinic import CSN_SYSTEM
from tests.sandbox.ehr_support import *  # noqa: F403
from tests.sandbox.ehr_support import (
    APP,
    BACKEND,
    JWT_BEARER,
    ClientKeys,
    assertion,
    authorize_params,
    backend_token,
    pkce,
    redirect_query,
    token_request,
    user_token,
)

FHIR = "/api/FHIR/R4"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_backend_services_token(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/AuditEvent.write system/*.read patient/*.read launch",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(client_keys, ehr.config.token_url, BACKEND),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "system/AuditEvent.write system/*.read"  # non-system scopes are not granted
    assert "refresh_token" not in body and "id_token" not in body


def test_backend_services_rejections(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    def post(scope: str = "system/*.read", client: str = BACKEND, **form: str) -> httpx.Response:
        data = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(client_keys, ehr.config.token_url, client),
        }
        data.update(form)
        return http.post("/oauth2/token", data=data)

    assert post(scope="patient/*.read").json()["error"] == "invalid_scope"
    assert post(scope="").json()["error"] == "invalid_scope"
    replayed = assertion(client_keys, ehr.config.token_url, BACKEND, jti="fixed-jti")
    assert post(client_assertion=replayed).status_code == 200
    replay = post(client_assertion=replayed)
    assert replay.status_code == 401 and "already used" in replay.json()["error_description"]
    expired = post(client_assertion=assertion(client_keys, ehr.config.token_url, BACKEND, lifetime=-100))
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_client"
    too_long = post(client_assertion=assertion(client_keys, ehr.config.token_url, BACKEND, lifetime=900))
    assert too_long.status_code == 401
    assert post(client=APP).status_code == 200  # a launch app may also be a backend app when registered so
    secret = http.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.read",
            "client_id": "app-secret",
            "client_secret": "s3cret/with+chars",
        },
    )
    assert secret.status_code == 400 and secret.json()["error"] == "unauthorized_client"
    unknown = post(client="nobody")
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"


def test_fhir_calls_need_a_valid_token(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    missing = http.get(f"{FHIR}/Patient/e-pat-rivera")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["resourceType"] == "OperationOutcome"
    invalid = http.get(f"{FHIR}/Patient/e-pat-rivera", headers=bearer("forged"))
    assert invalid.status_code == 401
    assert 'error="invalid_token"' in invalid.headers["www-authenticate"]
    token = backend_token(http, ehr, client_keys, "system/*.read")
    with ehr.state.lock:
        ehr.state.tokens[token].expires_at = 0
    expired = http.get(f"{FHIR}/Patient/e-pat-rivera", headers=bearer(token))
    assert expired.status_code == 401 and 'error="invalid_token"' in expired.headers["www-authenticate"]
    assert "expired" in expired.json()["issue"][0]["diagnostics"]


def test_scope_decides_what_may_be_read(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    audit_only = backend_token(http, ehr, client_keys, "system/AuditEvent.write")
    forbidden = http.get(f"{FHIR}/Patient/e-pat-rivera", headers=bearer(audit_only))
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["www-authenticate"]
    assert forbidden.json()["issue"][0]["code"] == "forbidden"
    appointments_only = backend_token(http, ehr, client_keys, "system/Appointment.rs")
    assert http.get(f"{FHIR}/Appointment/e-appt-001", headers=bearer(appointments_only)).status_code == 200
    assert http.get(f"{FHIR}/Encounter/e-enc-001", headers=bearer(appointments_only)).status_code == 403


def test_patient_scope_is_confined_to_the_launch_patient(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    body = user_token(http, ehr, client_keys, "launch openid fhirUser patient/*.read")
    token = body["access_token"]
    assert body["patient"] == "e-pat-rivera"
    assert http.get(f"{FHIR}/Patient/e-pat-rivera", headers=bearer(token)).status_code == 200
    assert http.get(f"{FHIR}/Patient/e-pat-patel", headers=bearer(token)).status_code == 403
    bundle = http.get(f"{FHIR}/Appointment", params={"practitioner": "e-prac-lee"}, headers=bearer(token)).json()
    assert {e["resource"]["id"] for e in bundle["entry"]} == {"e-appt-006"}  # Lee's visits with Alex Rivera only
    assert http.get(f"{FHIR}/Practitioner/e-prac-lee", headers=bearer(token)).status_code == 200


def test_a_patient_launch_reads_its_appointments_start_as_epic_serves_it(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    """What the waiting room reads: the launch's Appointment (named in the token response, or by its Encounter's
    ``appointment`` reference), whose ``start`` is a FHIR instant in UTC ("Z"), readable with patient scopes."""
    body = user_token(http, ehr, client_keys, "launch openid fhirUser patient/*.read")
    token, appointment_id = body["access_token"], body["appointment"]
    appointment = http.get(f"{FHIR}/Appointment/{appointment_id}", headers=bearer(token))
    assert appointment.status_code == 200
    start = appointment.json()["start"]
    assert start.endswith("Z") and dt.datetime.fromisoformat(start).tzinfo is not None
    visit = ehr.clinic.visit_by_appointment(appointment_id)
    assert visit is not None and dt.datetime.fromisoformat(start) == visit.start
    encounter = http.get(f"{FHIR}/Encounter/{body['encounter']}", headers=bearer(token)).json()
    assert encounter["appointment"] == [{"reference": f"Appointment/{appointment_id}"}]


def test_user_scope_of_a_patient_user_reaches_only_their_own_record(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    url = ehr.create_launch(ehr.state.records_of("patient")[0].id, "e-appt-002", "e-pat-patel")
    launch = parse_qs(urlsplit(url).query)["launch"][0]
    verifier, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=launch, scope="launch openid fhirUser user/*.read")
    code = redirect_query(http.get("/oauth2/authorize", params=params))["code"]
    token = token_request(http, ehr, client_keys, code, verifier).json()["access_token"]
    assert http.get(f"{FHIR}/Patient/e-pat-patel", headers=bearer(token)).status_code == 200
    assert http.get(f"{FHIR}/Patient/e-pat-rivera", headers=bearer(token)).status_code == 403
    own = entries(http.get(f"{FHIR}/Encounter", headers=bearer(token)))
    assert {e["subject"]["reference"] for e in own} == {"Patient/e-pat-patel"}


def test_reads_and_not_found(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    token = backend_token(http, ehr, client_keys, "system/*.read")
    practitioner = http.get(f"{FHIR}/Practitioner/e-prac-smith", headers=bearer(token))
    assert practitioner.headers["content-type"].startswith("application/fhir+json")
    assert practitioner.json()["name"][0]["text"] == "Dr. Jordan Smith"
    missing = http.get(f"{FHIR}/Patient/nope", headers=bearer(token))
    assert missing.status_code == 404 and missing.json()["issue"][0]["code"] == "not-found"
    assert http.get(f"{FHIR}/Observation/1", headers=bearer(token)).status_code == 404
    assert http.put(f"{FHIR}/Patient/e-pat-rivera", headers=bearer(token)).status_code == 405


def entries(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle.get("entry", []))
    return [e["resource"] for e in bundle.get("entry", [])]


def test_searches(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    token = backend_token(http, ehr, client_keys, "system/*.rs")
    today = ehr.clinic.today.isoformat()
    tomorrow = (ehr.clinic.today + dt.timedelta(days=1)).isoformat()

    def search(resource: str, **params: str) -> list[dict[str, Any]]:
        return entries(http.get(f"{FHIR}/{resource}", params=params, headers=bearer(token)))

    smith_today = search("Appointment", practitioner="Practitioner/e-prac-smith", date=today)
    assert [a["id"] for a in smith_today] == ["e-appt-001", "e-appt-002", "e-appt-003"]
    assert search("Appointment", actor="e-prac-smith", date=tomorrow) == []
    window = search("Appointment", actor="e-prac-smith", date=[f"ge{today}T09:30:00Z", f"le{today}T12:00:00Z"])  # type: ignore[arg-type]
    assert [a["id"] for a in window] == ["e-appt-002"]
    appointment = smith_today[0]
    participants = {p["actor"]["reference"] for p in appointment["participant"]}
    assert participants == {"Patient/e-pat-rivera", "Practitioner/e-prac-smith", "Location/e-loc-virtual-care"}
    assert [e["id"] for e in search("Encounter", identifier=f"{CSN_SYSTEM}|1000004")] == ["e-enc-004"]
    assert [e["id"] for e in search("Encounter", identifier="1000004")] == ["e-enc-004"]
    assert len(search("Encounter", patient="e-pat-rivera")) == 2
    assert [e["id"] for e in search("Encounter", _id="e-enc-002,e-enc-003")] == ["e-enc-002", "e-enc-003"]
    assert [p["id"] for p in search("Patient", family="riv")] == ["e-pat-rivera"]
    assert [p["id"] for p in search("Practitioner", name="Morgan")] == ["e-prac-lee"]
    post = http.post(f"{FHIR}/Encounter/_search", data={"patient": "e-pat-chen"}, headers=bearer(token))
    assert {e["id"] for e in entries(post)} == {"e-enc-003", "e-enc-010"}
    bad = http.get(f"{FHIR}/Appointment", params={"date": "yesterday"}, headers=bearer(token))
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    unknown = http.get(f"{FHIR}/Appointment", params={"colour": "red"}, headers=bearer(token))
    assert unknown.status_code == 400


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        (Patient, "Patient"),
        (Practitioner, "Practitioner"),
        (Location, "Location"),
        (Appointment, "Appointment"),
        (Encounter, "Encounter"),
    ],
)
def test_seeded_resources_are_valid_r4(ehr: EhrSandbox, model: Any, kind: str) -> None:
    resources = ehr.clinic.resources(kind)
    assert resources
    for resource in resources:
        model.model_validate(resource)


def audit_event(event_id: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity",
        },
        "subtype": [{"system": "urn:teams-ehr-connector", "code": "connected"}],
        "action": "E",
        "recorded": dt.datetime.now(dt.UTC).isoformat(),
        "outcome": "0",
        "agent": [{"who": {"reference": "Practitioner/e-prac-smith"}, "requestor": True}],
        "source": {"observer": {"display": "Teams EHR Connector"}},
        "entity": [
            {"what": {"identifier": {"system": "urn:teams-ehr-connector:event", "value": event_id}}},
            {"what": {"reference": "Encounter/e-enc-001"}},
        ],
    }


def test_audit_event_conditional_create_is_idempotent(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    token = backend_token(http, ehr, client_keys, "system/AuditEvent.write system/AuditEvent.rs")
    event_id = str(uuid.uuid4())
    headers = {
        **bearer(token),
        "Content-Type": "application/fhir+json",
        "If-None-Exist": f"identifier=urn:teams-ehr-connector:event|{event_id}",
    }
    created = http.post(f"{FHIR}/AuditEvent", json=audit_event(event_id), headers=headers)
    assert created.status_code == 201, created.text
    resource = created.json()
    assert created.headers["location"] == f"{ehr.config.fhir_base}/AuditEvent/{resource['id']}/_history/1"
    assert created.headers["etag"] == 'W/"1"'
    again = http.post(f"{FHIR}/AuditEvent", json=audit_event(event_id), headers=headers)
    assert again.status_code == 200 and again.json()["id"] == resource["id"]
    assert sum(1 for e in ehr.audit_events() if e["id"] == resource["id"]) == 1
    found = entries(
        http.get(
            f"{FHIR}/AuditEvent",
            params={
                "entity": "Encounter/e-enc-001",
                "identifier": f"urn:teams-ehr-connector:event|{event_id}",
                "date": f"ge{ehr.clinic.today.isoformat()}",
            },
            headers=bearer(token),
        )
    )
    assert [e["id"] for e in found] == [resource["id"]]
    assert http.get(f"{FHIR}/AuditEvent/{resource['id']}", headers=bearer(token)).json()["id"] == resource["id"]
    unconditional = http.post(
        f"{FHIR}/AuditEvent",
        json=audit_event(str(uuid.uuid4())),
        headers={**bearer(token), "Content-Type": "application/fhir+json"},
    )
    assert unconditional.status_code == 201


def test_audit_event_create_rejections(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys) -> None:
    reader = backend_token(http, ehr, client_keys, "system/*.read")
    headers = {**bearer(reader), "Content-Type": "application/fhir+json"}
    assert http.post(f"{FHIR}/AuditEvent", json=audit_event("a"), headers=headers).status_code == 403
    writer = backend_token(http, ehr, client_keys, "system/*.write")
    headers = {**bearer(writer), "Content-Type": "application/fhir+json"}
    invalid = audit_event("b")
    del invalid["agent"]
    invalid["action"] = "Z"
    response = http.post(f"{FHIR}/AuditEvent", json=invalid, headers=headers)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    assert http.post(f"{FHIR}/AuditEvent", content=b"{", headers=headers).status_code == 400
    assert http.post(f"{FHIR}/AuditEvent", json={"resourceType": "Patient"}, headers=headers).status_code == 400
    wrong_type = http.post(
        f"{FHIR}/AuditEvent", content=b"<AuditEvent/>", headers={**bearer(writer), "Content-Type": "application/xml"}
    )
    assert wrong_type.status_code == 415
    assert http.post(f"{FHIR}/Patient", json={"resourceType": "Patient"}, headers=headers).status_code == 405
    assert http.post(f"{FHIR}/AuditEvent", json=audit_event("c")).status_code == 401
