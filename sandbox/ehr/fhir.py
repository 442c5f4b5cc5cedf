"""FHIR R4 endpoints: discovery (metadata, smart-configuration), reads, searches and AuditEvent create.

Discovery documents are public; every other call needs a bearer token whose scopes allow the
operation (see ``scopes``). ``patient/`` scopes confine reads and searches to the token's patient.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fhir.resources.R4B.auditevent import AuditEvent
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.ehr import scopes as scope_rules
from sandbox.ehr.bearer import BearerError, insufficient_scope, require_token
from sandbox.ehr.config import GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS
from sandbox.ehr.responses import FHIR_JSON, FhirJSONResponse, operation_outcome
from sandbox.ehr.search import SearchError, reference_id, search
from sandbox.ehr.state import AccessToken

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox

RESOURCE_TYPES = ("Patient", "Practitioner", "Location", "Appointment", "Encounter", "AuditEvent")
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
]
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "online_access",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
    "system/AuditEvent.write",
    "system/*.write",
    "patient/*.rs",
    "user/*.rs",
    "system/*.rs",
    "system/AuditEvent.c",
]


def _ehr(request: Request) -> EhrSandbox:
    ehr: EhrSandbox = request.app.state.ehr
    return ehr


def smart_configuration(request: Request) -> Response:
    config = _ehr(request).config
    spec = config.spec
    body: dict[str, Any] = {
        "authorization_endpoint": config.authorize_url_for(config.base_of(request.url.path)),
        "token_endpoint": config.token_url,
        "grant_types_supported": [GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS],
        "token_endpoint_auth_methods_supported": list(spec.auth_methods),
        "token_endpoint_auth_signing_alg_values_supported": list(spec.signing_algs),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": list(spec.capabilities),
        "jwks_uri": config.jwks_url,
    }
    if spec.discovery_names_issuer:  # Oracle's names none: clients find it in the id_token and its OpenID config
        body = {"issuer": config.issuer, **body}
    return JSONResponse(body)


def openid_configuration(request: Request) -> Response:
    config = _ehr(request).config
    return JSONResponse(
        {
            "issuer": config.issuer,
            "authorization_endpoint": config.authorize_url,
            "token_endpoint": config.token_url,
            "jwks_uri": config.jwks_url,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "fhirUser", "profile"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser", "preferred_username"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": list(config.spec.auth_methods),
        }
    )


def jwks(request: Request) -> Response:
    ehr = _ehr(request)
    return JSONResponse(ehr.key.jwks(with_kid=ehr.config.spec.id_token_kid))


def _wants_json(request: Request) -> bool:
    fmt = request.query_params.get("_format", "")
    if fmt:
        return "json" in fmt
    accept = request.headers.get("accept", "")
    return not accept or "json" in accept or "*/*" in accept or "application/*" in accept


def metadata(request: Request) -> Response:
    ehr = _ehr(request)
    if not _wants_json(request):
        return operation_outcome(406, "this sandbox serves the CapabilityStatement as JSON only; "
                                      "send Accept: application/fhir+json")  # fmt: skip
    config = ehr.config
    interactions = {
        "AuditEvent": [{"code": "create"}, {"code": "read"}, {"code": "search-type"}],
    }
    body = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": ehr.clinic.today.isoformat(),
        "publisher": "Teams EHR Connector sandbox",
        "kind": "instance",
        "software": {"name": f"{config.spec.product} (sandbox stand-in)", "version": "November 2025"},
        "implementation": {
            "description": f"{config.organization} ({config.environment})",
            "url": config.base_of(request.url.path),
        },
        "fhirVersion": config.fhir_version,
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "extension": [
                        {
                            "url": OAUTH_URIS,
                            "extension": [
                                {
                                    "url": "authorize",
                                    "valueUri": config.authorize_url_for(config.base_of(request.url.path)),
                                },
                                {"url": "token", "valueUri": config.token_url},
                            ],
                        }
                    ],
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                },
                "resource": [
                    {
                        "type": kind,
                        "interaction": interactions.get(kind, [{"code": "read"}, {"code": "search-type"}]),
                    }
                    for kind in RESOURCE_TYPES
                ],
            }
        ],
    }
    return FhirJSONResponse(body)


def _error(exc: BearerError) -> Response:
    return operation_outcome(exc.status, exc.description, headers=exc.headers)


def _patient_of(resource: dict[str, Any]) -> set[str]:
    """Patients whose compartment holds the resource (empty: not a patient-compartment resource)."""
    kind = resource.get("resourceType")
    if kind == "Patient":
        return {str(resource.get("id"))}
    refs: list[str] = []
    if kind == "Appointment":
        refs = [p.get("actor", {}).get("reference", "") for p in resource.get("participant") or []]
    elif kind == "Encounter":
        refs = [(resource.get("subject") or {}).get("reference", "")]
    elif kind == "AuditEvent":
        refs = [((e.get("what") or {}).get("reference") or "") for e in resource.get("entity") or []]
        refs += [((a.get("who") or {}).get("reference") or "") for a in resource.get("agent") or []]
    return {reference_id(r) for r in refs if r.split("/")[-2:-1] == ["Patient"]}


def _compartment(token: AccessToken, resource_type: str, operation: str) -> str | None:
    """``None`` = unrestricted; a patient id = restricted to that patient. Raises 403 when nothing grants."""
    contexts = scope_rules.granting_contexts(token.scopes, resource_type, operation)
    if "system" in contexts:
        return None
    if "user" in contexts:
        # user/ scopes reach what the user may see: everything for clinicians, their own record for patients
        if token.context and token.context.user_type == "Patient":
            return token.context.user_id
        return None
    if "patient" in contexts and token.context and token.context.patient_id:
        return token.context.patient_id
    raise insufficient_scope(f"the token's scopes do not allow {operation} on {resource_type}")


def _visible(resource: dict[str, Any], patient: str | None) -> bool:
    if patient is None:
        return True
    owners = _patient_of(resource)
    kind = resource.get("resourceType")
    if kind in ("Practitioner", "Location"):
        return True
    return patient in owners


def _all(ehr: EhrSandbox, resource_type: str) -> list[dict[str, Any]]:
    if resource_type == "AuditEvent":
        with ehr.state.lock:
            return list(ehr.state.audit_events)
    return ehr.clinic.resources(resource_type)


def read(request: Request) -> Response:
    ehr = _ehr(request)
    resource_type = request.path_params["type"]
    resource_id = request.path_params["id"]
    if resource_type not in RESOURCE_TYPES:
        return operation_outcome(404, f"unknown resource type {resource_type}", code="not-supported")
    try:
        token = require_token(ehr, request)
        patient = _compartment(token, resource_type, "read")
    except BearerError as exc:
        return _error(exc)
    resource = next((r for r in _all(ehr, resource_type) if r.get("id") == resource_id), None)
    if resource is None:
        return operation_outcome(404, f"{resource_type}/{resource_id} was not found")
    if not _visible(resource, patient):
        return operation_outcome(403, "the resource is outside the token's patient compartment")
    return FhirJSONResponse(resource)


async def search_type(request: Request) -> Response:
    ehr = _ehr(request)
    resource_type = request.path_params["type"]
    if resource_type not in RESOURCE_TYPES:
        return operation_outcome(404, f"unknown resource type {resource_type}", code="not-supported")
    try:
        token = require_token(ehr, request)
        patient = _compartment(token, resource_type, "search")
    except BearerError as exc:
        return _error(exc)
    params = list(request.query_params.multi_items())
    if request.method == "POST":  # POST [type]/_search with form parameters
        form = await request.form()
        params += [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    try:
        matches = search(_all(ehr, resource_type), resource_type, params)
    except SearchError as exc:
        return operation_outcome(400, str(exc))
    matches = [r for r in matches if _visible(r, patient)]
    base = ehr.config.base_of(request.url.path)
    return FhirJSONResponse(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "link": [{"relation": "self", "url": str(request.url)}],
            "entry": [
                {"fullUrl": f"{base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in matches
            ],
        }
    )


async def create(request: Request) -> Response:
    ehr = _ehr(request)
    resource_type = request.path_params["type"]
    if resource_type not in RESOURCE_TYPES:
        return operation_outcome(404, f"unknown resource type {resource_type}", code="not-supported")
    if resource_type != "AuditEvent":
        return operation_outcome(405, f"{resource_type} is read-only in this EHR")
    try:
        token = require_token(ehr, request)
        contexts = scope_rules.granting_contexts(token.scopes, "AuditEvent", "create")
        if not contexts & {"system", "user"}:
            raise insufficient_scope("creating AuditEvents needs system/AuditEvent.write (or .c)")
    except BearerError as exc:
        return _error(exc)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in (FHIR_JSON, "application/json"):
        return operation_outcome(415, "send the resource as application/fhir+json")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return operation_outcome(400, "the body is not valid JSON")
    if not isinstance(body, dict) or body.get("resourceType") != "AuditEvent":
        return operation_outcome(400, "the body must be an AuditEvent resource")
    try:
        AuditEvent.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        return operation_outcome(400, f"invalid AuditEvent: {problems}", code="structure")
    condition = request.headers.get("if-none-exist")
    with ehr.state.lock:  # check and insert atomically so concurrent retries cannot both create
        if condition:
            try:
                existing = search(list(ehr.state.audit_events), "AuditEvent", parse_qsl(condition))
            except SearchError as exc:
                return operation_outcome(400, f"If-None-Exist: {exc}")
            if len(existing) > 1:
                return operation_outcome(412, "If-None-Exist matches more than one AuditEvent")
            if existing:
                found = existing[0]
                return FhirJSONResponse(found, status_code=200, headers=_version_headers(ehr, found))
        resource = dict(body)
        resource["id"] = uuid.uuid4().hex
        resource["meta"] = {
            **(body.get("meta") or {}),
            "versionId": "1",
            "lastUpdated": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        ehr.state.add_audit_event(resource)
    headers = _version_headers(ehr, resource)
    headers["Location"] = f"{ehr.config.fhir_base}/AuditEvent/{resource['id']}/_history/1"
    return FhirJSONResponse(resource, status_code=201, headers=headers)


def _version_headers(ehr: EhrSandbox, resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta") or {}
    headers = {"ETag": f'W/"{meta.get("versionId", "1")}"'}
    try:
        updated = dt.datetime.fromisoformat(str(meta.get("lastUpdated")).replace("Z", "+00:00"))
        headers["Last-Modified"] = format_datetime(updated.astimezone(dt.UTC), usegmt=True)
    except ValueError:
        pass
    return headers


def not_allowed(request: Request) -> Response:
    return operation_outcome(405, f"{request.method} is not supported here")
