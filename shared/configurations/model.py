"""Configurations: one FHIR base URL of one organization in one Microsoft 365 tenant.

Lifecycle (pure functions below, unit-tested)::

    pending ──EHR sign-in recorded──▶ pending (proven) ──approve──▶ approved
                                                                      │ ▲
                              edit (stored beside the approved version) │ │ approve the edit
                                                                      ▼ │
                                          approved + edit awaiting approval ──reject/withdraw──▶ approved

Editing an approved configuration does not take production down: the edit is kept beside it
(``PendingEdit``) and launches keep using the approved version until the approver approves the
edit; rejecting or withdrawing it leaves the approved version as it was. An edit that changes
nothing the EHR sign-in proves (``PROOF_FIELDS``: e.g. only the organization's display name)
keeps that sign-in, so approving it needs no new one. A configuration never approved is simply
changed (still pending). Writes are guarded by etags: a stale edit fails with ``Conflict`` and
changes nothing.

The approver is named by Microsoft 365 user name (``approver_upn``), which Microsoft documents as
mutable: another person may hold that name tomorrow. So the first time the named user signs in
(or acts on the configuration) their Entra object id is bound to it (``approver_oid``), and from
then on only that object id is the approver. Renaming the approver in an edit unbinds it.

Sharing: the owning tenant's admin may share an approved configuration with other Microsoft 365
tenants (one Epic, several tenants). Their clinicians may then complete the launch's Microsoft
sign-in, and their meetings are organized in their own tenant; their admins see the
configuration and its integration records, read-only. Shares belong to the configuration, not to
a version: they keep working with the approved version while an edit awaits approval.
"""

from __future__ import annotations

import enum
import hashlib
import re
import typing
import uuid
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from datetime import datetime
from typing import Any

from shared.http.outbound import normalise_base_url
from shared.kernel.errors import BadRequest, Conflict, Forbidden, NotFound
from shared.kernel.i18n import N_
from shared.kernel.settings import Geography

MAX_SHARES = 25
# What the approver's EHR sign-in proves: this user can sign in to this FHIR URL with this provider client
# of this vendor. An edit that changes none of these keeps the sign-in; any other field needs approval only.
# The patient-side FHIR URL (Oracle Health) is proven with it: see ``with_ehr_signin``.
PROOF_FIELDS = ("fhir_base_url", "patient_fhir_base_url", "vendor", "provider_client_id", "approver_upn")


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
    # The EHR's patient-side FHIR base, where it has one (Oracle Health's patient-access service root,
    # ``https://fhir-myrecord.cerner.com/r4/{tenant}``): patient launches carry it as ``iss``. "" = none.
    patient_fhir_base_url: str = ""


@dataclass(frozen=True)
class EhrSignIn:
    by_upn: str
    by_oid: str
    at: datetime
    fhir_base_url: str
    # The patient-side FHIR URL checked when the sign-in was recorded ("" = none): no patient signs in, so
    # what is proven for it is SMART discovery, R4 and the same tenant id (``shared.ehr.vendors``).
    patient_fhir_base_url: str = ""


@dataclass(frozen=True)
class PendingEdit:
    """An admin's edit of an approved configuration, awaiting approval; the approved version stays live."""

    data: ConfigurationInput  # normalised as stored
    by: str
    at: datetime
    approver_oid: str | None = None  # the edit's approver, once bound (the live one's if the name is the same)
    ehr_signin: EhrSignIn | None = None  # kept from the approved version when no PROOF_FIELDS changed


@dataclass(frozen=True)
class Change:
    """One field of a pending edit: its approved value and the proposed one."""

    field: str
    old: Any
    new: Any


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
    edit: PendingEdit | None = None  # an edit awaiting approval (only ever beside an approved version)
    patient_fhir_base_url: str = ""  # see ConfigurationInput
    etag: str | None = None

    @property
    def is_approved(self) -> bool:
        """The configuration's live version is approved: launches may use it (even while an edit awaits)."""
        return self.status is Status.APPROVED

    @property
    def awaits_approval(self) -> bool:
        """Something awaits the approver: a configuration never approved, or an edit of an approved one."""
        return not self.is_approved or self.edit is not None

    @property
    def proposed(self) -> Configuration:
        """The version awaiting approval (the edit applied), or the configuration itself when there is no edit.

        For showing and checking only: what is stored is always this configuration, with its edit beside it.
        """
        edit = self.edit
        if edit is None:
            return self
        return replace(
            self,
            **input_values(edit.data),
            approver_oid=edit.approver_oid,
            status=Status.PENDING,
            updated_by=edit.by,
            updated_at=edit.at,
            ehr_signin=edit.ehr_signin,
            approved_by=None,
            approved_at=None,
            edit=None,
        )

    @property
    def changes(self) -> tuple[Change, ...]:
        """What the pending edit changes, field by field in form order (empty without an edit)."""
        if self.edit is None:
            return ()
        old, new = input_values(self.input()), input_values(self.edit.data)
        return tuple(Change(name, old[name], new[name]) for name in old if old[name] != new[name])

    @property
    def edit_needs_ehr_signin(self) -> bool:
        """The pending edit changes something the EHR sign-in proves (FHIR URL, vendor, client id, approver)."""
        return any(change.field in PROOF_FIELDS for change in self.changes)

    @property
    def signin_tenants(self) -> frozenset[str]:
        """Tenants whose users may use this configuration: its own and those it is shared with."""
        return frozenset({self.tenant_id, *self.shared_with})

    def launch_base(self, iss: str, *, patient: bool) -> str | None:
        """The FHIR URL of this version that ``iss`` names, if a launch of this kind may use it, else None.

        Provider launches only ever accept the FHIR URL; patient launches also the patient-side one.
        """
        try:
            wanted = normalise_base_url(iss)
        except ValueError:
            return None
        if wanted == self.fhir_base_url:
            return wanted
        if patient and self.patient_fhir_base_url and wanted == self.patient_fhir_base_url:
            return wanted
        return None

    def is_shared_with(self, tenant_id: str) -> bool:
        return tenant_id.lower() in self.shared_with

    def names_approver(self, upn: str) -> bool:
        """The user name matches (who may bind the approver; not enough to *be* the approver)."""
        return self.approver_upn.lower() == upn.lower()

    def is_approver(self, upn: str, oid: str) -> bool:
        """The named approver: the user name matches and, once bound, so does the Entra object id."""
        return self.names_approver(upn) and (self.approver_oid is None or self.approver_oid == oid.lower())

    def input(self) -> ConfigurationInput:
        return ConfigurationInput(**{f.name: getattr(self, f.name) for f in fields(ConfigurationInput)})


def input_values(data: ConfigurationInput) -> dict[str, Any]:
    """The typed fields of ``data`` by name, in form order."""
    return {f.name: getattr(data, f.name) for f in fields(ConfigurationInput)}


def input_to_plain(data: ConfigurationInput) -> dict[str, str]:
    """``data`` as strings (enums by value), e.g. to store a pending edit as JSON."""
    values = input_values(data).items()
    return {name: str(value.value if isinstance(value, enum.Enum) else value) for name, value in values}


def input_from_plain(plain: Mapping[str, Any]) -> ConfigurationInput:
    """The inverse of ``input_to_plain``; ``KeyError``/``ValueError`` on a missing field or an unknown code."""
    hints = typing.get_type_hints(ConfigurationInput)
    values: dict[str, Any] = {}
    for f in fields(ConfigurationInput):
        # a field added later (with a default) may be missing from an edit stored before it existed
        kind, raw = hints[f.name], plain[f.name] if f.name in plain or f.default is MISSING else f.default
        values[f.name] = kind(raw) if isinstance(kind, type) and issubclass(kind, enum.Enum) else str(raw)
    return ConfigurationInput(**values)


# --- the state machine: pure functions ------------------------------------------------------


def _input_fields(data: ConfigurationInput) -> dict[str, Any]:
    """The fields an admin types, normalised as stored."""
    values = input_values(data)
    values["fhir_base_url"] = normalise_base_url(data.fhir_base_url)
    values["approver_upn"] = data.approver_upn.lower()
    if data.patient_fhir_base_url:
        values["patient_fhir_base_url"] = normalise_base_url(data.patient_fhir_base_url)
    return values


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
    """Apply an admin's edit.

    A configuration never approved is changed in place (still pending). An approved one keeps its
    approved version live and carries the edit beside it until the approver approves it; an edit that
    restores every approved value leaves nothing awaiting approval. Either way the EHR sign-in is kept
    only if no ``PROOF_FIELDS`` changed, and naming another approver forgets whom the old name was bound to.
    """
    values = _input_fields(data)
    if not config.is_approved:
        return replace(
            config,
            **values,
            approver_oid=_kept_approver_oid(values, config),
            updated_by=by,
            updated_at=now,
            ehr_signin=_kept_signin(values, config),
        )
    if values == _input_fields(config.input()):
        return replace(config, edit=None)
    base = config.proposed  # the edit so far (or the approved version): its sign-in and binding may still hold
    edit = PendingEdit(
        data=ConfigurationInput(**values),
        by=by,
        at=now,
        approver_oid=_kept_approver_oid(values, base, config),
        ehr_signin=_kept_signin(values, base, config),
    )
    return replace(config, edit=edit)


def _kept_signin(values: Mapping[str, Any], *versions: Configuration) -> EhrSignIn | None:
    """The first version's EHR sign-in that still proves ``values`` (no ``PROOF_FIELDS`` changed), if any."""
    for version in versions:
        signin = version.ehr_signin
        unchanged = all(values[name] == getattr(version, name) for name in PROOF_FIELDS)
        if signin is None or not unchanged:
            continue
        if (signin.fhir_base_url, signin.patient_fhir_base_url) == (
            values["fhir_base_url"],
            values["patient_fhir_base_url"],
        ):
            return signin
    return None


def _kept_approver_oid(values: Mapping[str, Any], *versions: Configuration) -> str | None:
    """The object id the approver's name is bound to in a version naming the same approver, if any."""
    for version in versions:
        if version.approver_upn.lower() == values["approver_upn"] and version.approver_oid is not None:
            return version.approver_oid
    return None


def edit_discarded(config: Configuration) -> Configuration:
    """Reject or withdraw the pending edit: the approved version stays exactly as it was."""
    if config.edit is None:
        raise Conflict(N_("No edit of this configuration awaits approval."), code="no_pending_edit")
    return replace(config, edit=None)


def bound_approver(config: Configuration, *, upn: str, oid: str) -> Configuration:
    """Bind the approver's name to the object id of the user holding it now (their first sign-in).

    A configuration already bound stays as it is: a later holder of the name is not its approver.
    The pending edit's approver (when it names one) is bound the same way.
    """
    if config.names_approver(upn) and config.approver_oid is None:
        config = replace(config, approver_oid=oid.lower())
    edit = config.edit
    if edit is not None and edit.data.approver_upn == upn.lower() and edit.approver_oid is None:
        config = replace(config, edit=replace(edit, approver_oid=oid.lower()))
    return config


def with_ehr_signin(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Record that the named approver proved the FHIR URL awaiting approval by signing in to the EHR."""
    target = config.proposed
    if not target.is_approver(upn, oid):
        raise Forbidden(N_("Only the approver named on this configuration can sign in to the EHR for it."))
    if not config.awaits_approval:
        raise Conflict(N_("This configuration is already approved."), code="already_approved")
    signin = EhrSignIn(
        by_upn=upn.lower(),
        by_oid=oid.lower(),
        at=now,
        fhir_base_url=target.fhir_base_url,
        patient_fhir_base_url=target.patient_fhir_base_url,
    )
    bound = bound_approver(config, upn=upn, oid=oid)
    if bound.edit is not None:
        return replace(bound, edit=replace(bound.edit, ehr_signin=signin))
    return replace(bound, ehr_signin=signin)


def approved(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Approve what awaits approval (a new configuration, or an edit, which then replaces the approved version).

    Only the named approver, and only with their own EHR sign-in for this very FHIR URL (for an edit that
    changes nothing the sign-in proves, the approved version's sign-in still counts).
    """
    target = config.proposed
    if not target.is_approver(upn, oid):
        raise Forbidden(N_("Only the approver named on this configuration can approve it."))
    if not config.awaits_approval:
        raise Conflict(N_("This configuration is already approved."), code="already_approved")
    signin = target.ehr_signin
    proven = signin is not None and signin.patient_fhir_base_url == target.patient_fhir_base_url
    if signin is None or signin.fhir_base_url != target.fhir_base_url or not proven:
        raise Conflict(N_("Sign in to the EHR for this FHIR URL before approving it."), code="ehr_signin_required")
    if signin.by_oid != oid.lower():
        raise Conflict(N_("Sign in to the EHR yourself before approving."), code="ehr_signin_required")
    return replace(target, status=Status.APPROVED, approved_by=upn.lower(), approved_at=now)


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
