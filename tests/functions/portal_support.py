"""Helpers for calling the portal's functions as the host calls them, with real Azurite storage."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import azure.functions as func

from connector import portal
from connector.services import services
from shared.configurations.repository import ConfigurationRepository
from shared.kernel.settings import get_settings
from shared.microsoft.entra import GLOBAL_ADMINISTRATOR, PortalIdentity
from shared.portal.sessions import PortalSession, SessionStore


@dataclass(frozen=True)
class Tenant:
    id: str
    admin: PortalSession
    approver: PortalSession
    member: PortalSession


def new_tenant() -> Tenant:
    tid = str(uuid.uuid4())
    store = SessionStore(services().storage.app)

    def user(upn: str, name: str, *, admin: bool = False) -> PortalSession:
        identity = PortalIdentity(
            tenant_id=tid,
            object_id=str(uuid.uuid4()),
            upn=upn,
            name=name,
            wids=(GLOBAL_ADMINISTRATOR,) if admin else (),
        )
        return store.create(identity)

    return Tenant(
        id=tid,
        admin=user("admin@contoso.example", "Avery Admin", admin=True),
        approver=user("analyst@contoso.example", "Erin Analyst"),
        member=user("dr.smith@contoso.example", "Dr. Jordan Smith"),
    )


def call(
    handler: Any,
    method: str,
    path: str,
    *,
    session: PortalSession | None = None,
    form: Mapping[str, str] | None = None,
    body: bytes | None = None,
    params: Mapping[str, str] | None = None,
    route: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> func.HttpResponse:
    all_headers = dict(headers or {})
    if session is not None:
        all_headers["cookie"] = f"{portal.cookie_name(get_settings())}={session.id}"
    if form is not None:
        body = urlencode(form).encode()
        all_headers.setdefault("content-type", "application/x-www-form-urlencoded")
    request = func.HttpRequest(
        method,
        f"http://localhost:7071/api/{path}",
        headers=all_headers,
        params=dict(params or {}),
        route_params=dict(route or {}),
        body=body or b"",
    )
    response: func.HttpResponse = handler(request)
    return response


def text(response: func.HttpResponse) -> str:
    return response.get_body().decode()


def location_query(response: func.HttpResponse) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def configuration_form(fhir_base_url: str, *, prefix: str = "", **overrides: str) -> dict[str, str]:
    values = {
        "organization": "Contoso Health",
        "fhir_base_url": fhir_base_url,
        "environment": "test",
        "approver_upn": "Analyst@contoso.example",
        "geography": "americas",
        "vendor": "epic",
        "provider_client_id": "provider-client",
        "patient_client_id": "patient-client",
        "writeback_mode": "epic",
        **overrides,
    }
    return {f"{prefix}{k}": v for k, v in values.items()}


def repository() -> ConfigurationRepository:
    return ConfigurationRepository(services().storage.app)


def submit(tenant: Tenant, url: str, **overrides: str) -> func.HttpResponse:
    """One configuration through the admin's "Add configurations" form (``overrides``: its fields)."""
    form = {"csrf": tenant.admin.csrf_token, "rows": "1", **configuration_form(url, prefix="c0-", **overrides)}
    return call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
