"""Configurations: one FHIR base URL of one organization in one Microsoft 365 tenant.

Lifecycle (pure functions below, unit-tested)::

    pending ──EHR sign-in recorded──▶ pending (proven) ──approve──▶ approved
       ▲                                                               │
       └────────────────────────── edit ───────────────────────────────┘

Editing anything resets to pending and forgets the EHR sign-in. Writes are guarded by etags:
a stale edit fails with ``Conflict`` and changes nothing.

The approver is named by Microsoft 365 user name (``approver_upn``), which Microsoft documents as
mutable: another person may hold that name tomorrow. So the first time the named user signs in
(or acts on the configuration) their Entra object id is bound to it (``approver_oid``), and from
then on only that object id is the approver. Renaming the approver in an edit unbinds it.

Sharing: the owning tenant's admin may share an approved configuration with other Microsoft 365
tenants (one Epic, several tenants). Their clinicians may then complete the launch's Microsoft
sign-in, and their meetings are organized in their own tenant; their admins see the
configuration and its integration records, read-only. Shares outlive an edit but, like every
launch, take effect only while the configuration is approved.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.http.outbound import normalise_base_url
from shared.kernel.errors import BadRequest, Conflict, Forbidden, NotFound
from shared.kernel.i18n import N_
from shared.kernel.settings import Geography

MAX_SHARES = 25


class Environment(enum.StrEnum):
    TEST = "test"
    PRODUCTION = "production"


class Vendor(enum.StrEnum):
    EPIC = "epic"
    ORACLE = "oracle"
    SMART = "smart"

    @property
    def label(self) -> str:
        return {"epic": "Epic", "oracle": "Oracle Health", "smart": N_("Other SMART 2.x EHR")}[self.value]


class WritebackMode(enum.StrEnum):
    EPIC = "epic"
    FHIR_AUDIT_EVENT = "fhir-auditevent"
    NONE = "none"


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"


@dataclass(frozen=True)
class ConfigurationInput:
    """What an admin submits (already validated field by field)."""

    organization: str
    fhir_base_url: str
    environment: Environment
    approver_upn: str
    geography: Geography
    vendor: Vendor
    provider_client_id: str
    patient_client_id: str
    writeback_mode: WritebackMode


@dataclass(frozen=True)
class EhrSignIn:
    by_upn: str
    by_oid: str
    at: datetime
    fhir_base_url: str


@dataclass(frozen=True)
class Configuration:
    id: str
    tenant_id: str
    organization: str
    fhir_base_url: str
    environment: Environment
    approver_upn: str
    geography: Geography
    vendor: Vendor
    provider_client_id: str
    patient_client_id: str
    writeback_mode: WritebackMode
    status: Status
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    ehr_signin: EhrSignIn | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    shared_with: tuple[str, ...] = ()  # other Entra tenant ids, lower case
    approver_oid: str | None = None  # the approver's Entra object id, bound at their first sign-in
    etag: str | None = None

    @property
    def is_approved(self) -> bool:
        return self.status is Status.APPROVED

    @property
    def signin_tenants(self) -> frozenset[str]:
        """Tenants whose users may use this configuration: its own and those it is shared with."""
        return frozenset({self.tenant_id, *self.shared_with})

    def is_shared_with(self, tenant_id: str) -> bool:
        return tenant_id.lower() in self.shared_with

    def names_approver(self, upn: str) -> bool:
        """The user name matches (who may bind the approver; not enough to *be* the approver)."""
        return self.approver_upn.lower() == upn.lower()

    def is_approver(self, upn: str, oid: str) -> bool:
        """The named approver: the user name matches and, once bound, so does the Entra object id."""
        return self.names_approver(upn) and (self.approver_oid is None or self.approver_oid == oid.lower())

    def input(self) -> ConfigurationInput:
        return ConfigurationInput(
            organization=self.organization,
            fhir_base_url=self.fhir_base_url,
            environment=self.environment,
            approver_upn=self.approver_upn,
            geography=self.geography,
            vendor=self.vendor,
            provider_client_id=self.provider_client_id,
            patient_client_id=self.patient_client_id,
            writeback_mode=self.writeback_mode,
        )


# --- the state machine: pure functions ------------------------------------------------------


def _input_fields(data: ConfigurationInput) -> dict[str, Any]:
    """The fields an admin types, normalised as stored."""
    return {
        "organization": data.organization,
        "fhir_base_url": normalise_base_url(data.fhir_base_url),
        "environment": data.environment,
        "approver_upn": data.approver_upn.lower(),
        "geography": data.geography,
        "vendor": data.vendor,
        "provider_client_id": data.provider_client_id,
        "patient_client_id": data.patient_client_id,
        "writeback_mode": data.writeback_mode,
    }


def new_configuration(tenant_id: str, data: ConfigurationInput, *, by: str, now: datetime) -> Configuration:
    return Configuration(
        id=str(uuid.uuid4()),
        tenant_id=tenant_id.lower(),
        **_input_fields(data),
        status=Status.PENDING,
        created_by=by,
        created_at=now,
        updated_by=by,
        updated_at=now,
    )


def edited(config: Configuration, data: ConfigurationInput, *, by: str, now: datetime) -> Configuration:
    """Any edit sends the configuration back to pending and forgets the EHR sign-in and approval.

    Naming another approver also forgets whom the old name was bound to.
    """
    fields = _input_fields(data)
    same_approver = fields["approver_upn"] == config.approver_upn.lower()
    return replace(
        config,
        **fields,
        approver_oid=config.approver_oid if same_approver else None,
        status=Status.PENDING,
        updated_by=by,
        updated_at=now,
        ehr_signin=None,
        approved_by=None,
        approved_at=None,
    )


def bound_approver(config: Configuration, *, upn: str, oid: str) -> Configuration:
    """Bind the approver's name to the object id of the user holding it now (their first sign-in).

    A configuration already bound stays as it is: a later holder of the name is not its approver.
    """
    if not config.names_approver(upn) or config.approver_oid is not None:
        return config
    return replace(config, approver_oid=oid.lower())


def with_ehr_signin(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Record that the named approver proved the FHIR URL by signing in to the EHR (binding them if not yet)."""
    if not config.is_approver(upn, oid):
        raise Forbidden(N_("Only the approver named on this configuration can sign in to the EHR for it."))
    if config.is_approved:
        raise Conflict(N_("This configuration is already approved."), code="already_approved")
    signin = EhrSignIn(by_upn=upn.lower(), by_oid=oid.lower(), at=now, fhir_base_url=config.fhir_base_url)
    return replace(bound_approver(config, upn=upn, oid=oid), ehr_signin=signin)


def approved(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Approve: only the named approver, only after their own EHR sign-in for this very FHIR URL."""
    if not config.is_approver(upn, oid):
        raise Forbidden(N_("Only the approver named on this configuration can approve it."))
    if config.is_approved:
        raise Conflict(N_("This configuration is already approved."), code="already_approved")
    signin = config.ehr_signin
    if signin is None or signin.fhir_base_url != config.fhir_base_url:
        raise Conflict(N_("Sign in to the EHR for this FHIR URL before approving it."), code="ehr_signin_required")
    if signin.by_oid != oid.lower():
        raise Conflict(N_("Sign in to the EHR yourself before approving."), code="ehr_signin_required")
    return replace(config, status=Status.APPROVED, approved_by=upn.lower(), approved_at=now)


_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # lower case


def shared(config: Configuration, tenant_id: str, *, allowed_tenants: frozenset[str]) -> Configuration:
    """Share an approved configuration with another tenant that may sign in to this deployment."""
    tenant = tenant_id.strip().lower()
    if not _GUID_RE.match(tenant):
        raise BadRequest(
            N_(
                "A tenant id looks like 00000000-0000-0000-0000-000000000000 "
                "(Microsoft Entra admin center → Overview → Tenant ID)."
            )
        )
    if tenant == config.tenant_id:
        raise BadRequest(N_("That is your own tenant: its users can already use this configuration."))
    if tenant not in {t.lower() for t in allowed_tenants}:
        raise BadRequest(
            N_(
                "Users of tenant %(tenant)s cannot sign in to this connector. Ask whoever deployed it to add the "
                "tenant id to ENTRA_ALLOWED_TENANT_IDS, then share again.",
                tenant=tenant,
            )
        )
    if not config.is_approved:
        raise Conflict(N_("Approve this configuration before sharing it."), code="not_approved")
    if tenant in config.shared_with:
        raise Conflict(
            N_("This configuration is already shared with tenant %(tenant)s.", tenant=tenant), code="already_shared"
        )
    if len(config.shared_with) >= MAX_SHARES:
        raise Conflict(
            N_("A configuration can be shared with at most %(max_shares)s tenants.", max_shares=MAX_SHARES),
            code="too_many_shares",
        )
    return replace(config, shared_with=(*config.shared_with, tenant))


def unshared(config: Configuration, tenant_id: str) -> Configuration:
    """Stop sharing with a tenant; its clinicians' launches are refused from now on."""
    tenant = tenant_id.strip().lower()
    if tenant not in config.shared_with:
        raise NotFound(N_("This configuration is not shared with that tenant."))
    return replace(config, shared_with=tuple(t for t in config.shared_with if t != tenant))


def url_key(fhir_base_url: str) -> str:
    """ConfigurationIndex partition: a hash of the normalised URL (Table keys cannot hold '/')."""
    return hashlib.sha256(normalise_base_url(fhir_base_url).encode()).hexdigest()


# --- storage ------------------------------------------------------------------------------


def is_configuration_id(value: str) -> bool:
    return bool(_GUID_RE.match(value))
