"""Configurations: one FHIR base URL of one organization in one Microsoft 365 tenant.

Tables (app account):

* ``Configurations`` — PartitionKey = Entra tenant id, RowKey = configuration id.
* ``ConfigurationIndex`` — PartitionKey = SHA-256 of the normalised FHIR URL. Two rows per
  configuration, written and deleted together in one transaction: RowKey = configuration id
  (the launch's lookup: launch URL id + ``iss`` → tenant), and RowKey = ``tenant-{tid}`` (the
  guard that makes "one FHIR URL once per tenant" hold even under concurrent submissions).
* ``ConfigurationShares`` — PartitionKey = a tenant the configuration is shared with, RowKey =
  configuration id: how that tenant's admins find it. The configuration's own ``SharedWith``
  list is the truth; an index row it does not confirm (a share withdrawn or a write that
  failed half-way) is ignored.

Lifecycle (pure functions below, unit-tested)::

    pending ──EHR sign-in recorded──▶ pending (proven) ──approve──▶ approved
       ▲                                                               │
       └────────────────────────── edit ───────────────────────────────┘

Editing anything resets to pending and forgets the EHR sign-in. Writes are guarded by etags:
a stale edit fails with ``Conflict`` and changes nothing.

Sharing: the owning tenant's admin may share an approved configuration with other Microsoft 365
tenants (one Epic, several tenants). Their clinicians may then complete the launch's Microsoft
sign-in, and their meetings are organized in their own tenant; their admins see the
configuration and its integration records, read-only. Shares outlive an edit but, like every
launch, take effect only while the configuration is approved.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableTransactionError, UpdateMode

from shared.errors import BadRequest, Conflict, Forbidden, NotFound, StorageUnavailable, StoredDataError
from shared.settings import Geography
from shared.storage import StorageAccount, storage_errors, utcnow
from shared.urls import normalise_base_url

logger = logging.getLogger("connector.configurations")
TABLE = "Configurations"
INDEX_TABLE = "ConfigurationIndex"
SHARES_TABLE = "ConfigurationShares"
MAX_SHARES = 25
RESERVATION_GRACE = timedelta(minutes=2)  # a URL guard younger than this may belong to a create in flight


class Environment(enum.StrEnum):
    TEST = "test"
    PRODUCTION = "production"


class Vendor(enum.StrEnum):
    EPIC = "epic"
    ORACLE = "oracle"
    SMART = "smart"

    @property
    def label(self) -> str:
        return {"epic": "Epic", "oracle": "Oracle Health", "smart": "Other SMART 2.x EHR"}[self.value]


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
        return self.approver_upn.lower() == upn.lower()

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
    """Any edit sends the configuration back to pending and forgets the EHR sign-in and approval."""
    return replace(
        config,
        **_input_fields(data),
        status=Status.PENDING,
        updated_by=by,
        updated_at=now,
        ehr_signin=None,
        approved_by=None,
        approved_at=None,
    )


def with_ehr_signin(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Record that the named approver proved the FHIR URL by signing in to the EHR."""
    if not config.names_approver(upn):
        raise Forbidden("Only the approver named on this configuration can sign in to the EHR for it.")
    if config.is_approved:
        raise Conflict("This configuration is already approved.", code="already_approved")
    signin = EhrSignIn(by_upn=upn.lower(), by_oid=oid.lower(), at=now, fhir_base_url=config.fhir_base_url)
    return replace(config, ehr_signin=signin)


def approved(config: Configuration, *, upn: str, oid: str, now: datetime) -> Configuration:
    """Approve: only the named approver, only after their own EHR sign-in for this very FHIR URL."""
    if not config.names_approver(upn):
        raise Forbidden("Only the approver named on this configuration can approve it.")
    if config.is_approved:
        raise Conflict("This configuration is already approved.", code="already_approved")
    signin = config.ehr_signin
    if signin is None or signin.fhir_base_url != config.fhir_base_url:
        raise Conflict("Sign in to the EHR for this FHIR URL before approving it.", code="ehr_signin_required")
    if signin.by_oid != oid.lower():
        raise Conflict("Sign in to the EHR yourself before approving.", code="ehr_signin_required")
    return replace(config, status=Status.APPROVED, approved_by=upn.lower(), approved_at=now)


_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")  # lower case


def shared(config: Configuration, tenant_id: str, *, allowed_tenants: frozenset[str]) -> Configuration:
    """Share an approved configuration with another tenant that may sign in to this deployment."""
    tenant = tenant_id.strip().lower()
    if not _GUID_RE.match(tenant):
        raise BadRequest(
            "A tenant id looks like 00000000-0000-0000-0000-000000000000 "
            "(Microsoft Entra admin center → Overview → Tenant ID)."
        )
    if tenant == config.tenant_id:
        raise BadRequest("That is your own tenant: its users can already use this configuration.")
    if tenant not in {t.lower() for t in allowed_tenants}:
        raise BadRequest(
            f"Users of tenant {tenant} cannot sign in to this connector. Ask whoever deployed it to add the "
            "tenant id to ENTRA_ALLOWED_TENANT_IDS, then share again."
        )
    if not config.is_approved:
        raise Conflict("Approve this configuration before sharing it.", code="not_approved")
    if tenant in config.shared_with:
        raise Conflict(f"This configuration is already shared with tenant {tenant}.", code="already_shared")
    if len(config.shared_with) >= MAX_SHARES:
        raise Conflict(f"A configuration can be shared with at most {MAX_SHARES} tenants.", code="too_many_shares")
    return replace(config, shared_with=(*config.shared_with, tenant))


def unshared(config: Configuration, tenant_id: str) -> Configuration:
    """Stop sharing with a tenant; its clinicians' launches are refused from now on."""
    tenant = tenant_id.strip().lower()
    if tenant not in config.shared_with:
        raise NotFound("This configuration is not shared with that tenant.")
    return replace(config, shared_with=tuple(t for t in config.shared_with if t != tenant))


def url_key(fhir_base_url: str) -> str:
    """ConfigurationIndex partition: a hash of the normalised URL (Table keys cannot hold '/')."""
    return hashlib.sha256(normalise_base_url(fhir_base_url).encode()).hexdigest()


# --- storage ------------------------------------------------------------------------------


def is_configuration_id(value: str) -> bool:
    return bool(_GUID_RE.match(value))


class ConfigurationRepository:
    def __init__(self, account: StorageAccount) -> None:
        self._account = account

    def _table(self) -> Any:
        return self._account.table(TABLE)

    def _index(self) -> Any:
        return self._account.table(INDEX_TABLE)

    def _shares(self) -> Any:
        return self._account.table(SHARES_TABLE)

    # reads

    def get(self, tenant_id: str, configuration_id: str) -> Configuration:
        """The configuration, or ``NotFound`` (also for another tenant's id: no existence leak)."""
        if not is_configuration_id(configuration_id):
            raise NotFound("There is no such configuration.")
        with storage_errors(self._account.name):
            try:
                entity = self._table().get_entity(tenant_id.lower(), configuration_id)
            except ResourceNotFoundError:
                raise NotFound("There is no such configuration.") from None
        return _from_entity(entity)

    def list_for_tenant(self, tenant_id: str) -> list[Configuration]:
        with storage_errors(self._account.name):
            entities = self._table().query_entities("PartitionKey eq @pk", parameters={"pk": tenant_id.lower()})
            found = [_from_entity(e) for e in entities]
        return sorted(found, key=lambda c: (c.organization.lower(), c.environment.value, c.fhir_base_url))

    def list_for_approver(self, tenant_id: str, upn: str) -> list[Configuration]:
        with storage_errors(self._account.name):
            entities = self._table().query_entities(
                "PartitionKey eq @pk and ApproverUpn eq @upn", parameters={"pk": tenant_id.lower(), "upn": upn.lower()}
            )
            found = [_from_entity(e) for e in entities]
        return sorted(found, key=lambda c: (c.organization.lower(), c.environment.value, c.fhir_base_url))

    def get_shared(self, tenant_id: str, configuration_id: str) -> Configuration:
        """A configuration another tenant shares with ``tenant_id``, or ``NotFound``."""
        if not is_configuration_id(configuration_id):
            raise NotFound("There is no such configuration.")
        with storage_errors(self._account.name):
            try:
                row = self._shares().get_entity(tenant_id.lower(), configuration_id)
            except ResourceNotFoundError:
                raise NotFound("There is no such configuration.") from None
        config = self.get(str(row.get("OwnerTenantId", "")), configuration_id)
        if not config.is_shared_with(tenant_id):
            raise NotFound("There is no such configuration.")
        return config

    def list_shared_with(self, tenant_id: str) -> list[Configuration]:
        """Configurations other tenants share with ``tenant_id`` (each confirmed by its own row)."""
        with storage_errors(self._account.name):
            rows = list(self._shares().query_entities("PartitionKey eq @pk", parameters={"pk": tenant_id.lower()}))
        found: list[Configuration] = []
        for row in rows:
            with suppress(NotFound):
                config = self.get(str(row.get("OwnerTenantId", "")), row["RowKey"])
                if config.is_shared_with(tenant_id):
                    found.append(config)
        return sorted(found, key=lambda c: (c.organization.lower(), c.environment.value, c.fhir_base_url))

    def find_for_launch(self, configuration_id: str, iss: str) -> Configuration | None:
        """The configuration a launch URL names, if ``iss`` is its FHIR URL (approved or not: the caller decides)."""
        if not is_configuration_id(configuration_id):
            return None
        try:
            partition, wanted = url_key(iss), normalise_base_url(iss)
        except ValueError:  # e.g. a non-numeric port in a forged iss
            return None
        with storage_errors(self._account.name):
            try:
                row = self._index().get_entity(partition, configuration_id)
            except ResourceNotFoundError:
                return None
        try:
            config = self.get(row["TenantId"], configuration_id)
        except NotFound:
            return None
        return config if config.fhir_base_url == wanted else None

    # writes

    def create(self, config: Configuration) -> Configuration:
        """Store a new configuration; the same FHIR URL twice in one tenant → ``Conflict``."""
        self._reserve(config.fhir_base_url, config.tenant_id, config.id)
        try:
            with storage_errors(self._account.name):
                metadata = self._table().create_entity(_to_entity(config))
        except Exception:
            self._release(config.fhir_base_url, config.tenant_id, config.id)
            raise
        return replace(config, etag=metadata.get("etag"))

    def update(self, previous: Configuration, updated: Configuration, *, etag: str) -> Configuration:
        """Replace ``previous`` with ``updated`` if nobody changed it since ``etag`` was read.

        A new share's index row is written before the configuration and a withdrawn one's deleted
        after it, so a failure in between leaves only an index row that readers ignore.
        """
        url_changed = previous.fhir_base_url != updated.fhir_base_url
        if url_changed:
            self._reserve(updated.fhir_base_url, updated.tenant_id, updated.id)
        for tenant in set(updated.shared_with) - set(previous.shared_with):
            with storage_errors(self._account.name):
                self._shares().upsert_entity(
                    {"PartitionKey": tenant, "RowKey": updated.id, "OwnerTenantId": updated.tenant_id}
                )
        try:
            with storage_errors(self._account.name):
                metadata = self._table().update_entity(
                    _to_entity(updated),
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except Exception as exc:
            if url_changed:  # whatever failed, the new URL must not stay reserved for an edit that never landed
                self._release(updated.fhir_base_url, updated.tenant_id, updated.id)
            stale = isinstance(exc, ResourceModifiedError | ResourceNotFoundError) or (
                isinstance(exc, HttpResponseError) and exc.status_code in (409, 412)
            )
            if stale:
                raise Conflict(
                    "Someone else changed or deleted this configuration while you were working on it. "
                    "Nothing was saved; review the current version and apply your changes again.",
                    code="edit_conflict",
                ) from None
            raise
        if url_changed:
            self._release(previous.fhir_base_url, previous.tenant_id, previous.id)
        self._forget_shares(updated.tenant_id, updated.id, set(previous.shared_with) - set(updated.shared_with))
        return replace(updated, etag=metadata.get("etag"))

    def delete(self, config: Configuration, *, etag: str | None = None) -> None:
        """Delete the configuration row (etag-guarded), then its index rows.

        In this order launches stop at once (a launch needs the row), and a failure in between
        leaves only orphaned index rows, which launches ignore and ``_reserve`` reclaims; the
        other order could leave an approved configuration that nothing can launch.
        """
        with storage_errors(self._account.name):
            try:
                if etag:
                    self._table().delete_entity(
                        config.tenant_id, config.id, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                else:
                    self._table().delete_entity(config.tenant_id, config.id)
            except ResourceModifiedError:
                raise Conflict(
                    "Someone else changed this configuration just now; it was not deleted. Review it and try again.",
                    code="edit_conflict",
                ) from None
        self._release(config.fhir_base_url, config.tenant_id, config.id)
        self._forget_shares(config.tenant_id, config.id, set(config.shared_with))

    def _forget_shares(self, owner_tenant_id: str, configuration_id: str, tenants: set[str]) -> None:
        """Delete withdrawn shares' index rows, after the configuration no longer lists them.

        Best effort: a row left behind grants nothing, since readers check the configuration.
        If another admin re-shared a tenant meanwhile, its row is put back, so a configuration
        that lists a tenant never stays without the row its admins need to find it.
        """
        if not tenants:
            return
        try:
            with storage_errors(self._account.name):
                for tenant in tenants:
                    self._shares().delete_entity(tenant, configuration_id)  # a missing row is ignored
                try:
                    current = self.get(owner_tenant_id, configuration_id)
                except NotFound:
                    return
                for tenant in tenants & set(current.shared_with):
                    self._shares().upsert_entity(
                        {"PartitionKey": tenant, "RowKey": configuration_id, "OwnerTenantId": owner_tenant_id}
                    )
        except StorageUnavailable:
            logger.warning("Share index rows of configuration %s were not cleaned up", configuration_id)

    def _reserve(self, fhir_base_url: str, tenant_id: str, configuration_id: str) -> None:
        partition = url_key(fhir_base_url)
        guard = {"PartitionKey": partition, "RowKey": f"tenant-{tenant_id}", "ConfigurationId": configuration_id}
        operations = [
            ("create", {"PartitionKey": partition, "RowKey": configuration_id, "TenantId": tenant_id}),
            ("create", guard),
        ]
        with storage_errors(self._account.name):
            for attempt in range(2):
                try:
                    self._index().submit_transaction(operations)
                    return
                except (TableTransactionError, ResourceExistsError):
                    if attempt == 0 and self._reclaim_orphaned_guard(partition, tenant_id):
                        continue
                    raise Conflict(
                        "This FHIR URL is already configured in your organization. Edit that configuration instead.",
                        code="duplicate_fhir_url",
                    ) from None

    def _reclaim_orphaned_guard(self, partition: str, tenant_id: str) -> bool:
        """Delete a URL guard left behind by a configuration that no longer exists; True if one was removed.

        A guard younger than ``RESERVATION_GRACE`` is left alone: ``create`` reserves before it
        writes the configuration row, so a fresh guard may belong to a submission in flight.
        """
        try:
            guard = self._index().get_entity(partition, f"tenant-{tenant_id}")
        except ResourceNotFoundError:
            return True  # released meanwhile: worth one more try
        owner = str(guard.get("ConfigurationId") or "")
        written = (getattr(guard, "metadata", {}) or {}).get("timestamp")
        if isinstance(written, datetime) and utcnow() - written < RESERVATION_GRACE:
            return False
        try:
            self._table().get_entity(tenant_id, owner)
            return False  # the owner exists: a real duplicate
        except ResourceNotFoundError:
            pass
        try:
            self._index().delete_entity(
                partition, f"tenant-{tenant_id}", etag=guard.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except ResourceModifiedError:
            return False
        except ResourceNotFoundError:
            pass
        if owner:
            self._index().delete_entity(partition, owner)  # the orphan's launch row (missing rows are ignored)
        return True

    def _release(self, fhir_base_url: str, tenant_id: str, configuration_id: str) -> None:
        partition = url_key(fhir_base_url)
        with storage_errors(self._account.name):
            guard = None
            with suppress(ResourceNotFoundError):
                guard = self._index().get_entity(partition, f"tenant-{tenant_id}")
            if guard is not None and guard.get("ConfigurationId") == configuration_id:
                self._index().delete_entity(partition, f"tenant-{tenant_id}")
            self._index().delete_entity(partition, configuration_id)


def _to_entity(config: Configuration) -> dict[str, Any]:
    signin = config.ehr_signin
    return {
        "PartitionKey": config.tenant_id,
        "RowKey": config.id,
        "Organization": config.organization,
        "FhirBaseUrl": config.fhir_base_url,
        "Environment": config.environment.value,
        "ApproverUpn": config.approver_upn,
        "Geography": config.geography.value,
        "Vendor": config.vendor.value,
        "ProviderClientId": config.provider_client_id,
        "PatientClientId": config.patient_client_id,
        "WritebackMode": config.writeback_mode.value,
        "Status": config.status.value,
        "CreatedBy": config.created_by,
        "CreatedAt": config.created_at,
        "UpdatedBy": config.updated_by,
        "UpdatedAt": config.updated_at,
        "EhrSigninBy": signin.by_upn if signin else "",
        "EhrSigninOid": signin.by_oid if signin else "",
        "EhrSigninAt": signin.at if signin else None,
        "EhrSigninFhirUrl": signin.fhir_base_url if signin else "",
        "ApprovedBy": config.approved_by or "",
        "ApprovedAt": config.approved_at,
        "SharedWith": ",".join(config.shared_with),
    }


def _from_entity(entity: Mapping[str, Any]) -> Configuration:
    signin = None
    if entity.get("EhrSigninBy") and entity.get("EhrSigninAt"):
        signin = EhrSignIn(
            by_upn=entity["EhrSigninBy"],
            by_oid=entity.get("EhrSigninOid", ""),
            at=entity["EhrSigninAt"],
            fhir_base_url=entity.get("EhrSigninFhirUrl", ""),
        )
    metadata = getattr(entity, "metadata", {}) or {}
    try:
        return Configuration(
            id=entity["RowKey"],
            tenant_id=entity["PartitionKey"],
            organization=entity["Organization"],
            fhir_base_url=entity["FhirBaseUrl"],
            environment=Environment(entity["Environment"]),
            approver_upn=entity["ApproverUpn"],
            geography=Geography(entity["Geography"]),
            vendor=Vendor(entity["Vendor"]),
            provider_client_id=entity["ProviderClientId"],
            patient_client_id=entity["PatientClientId"],
            writeback_mode=WritebackMode(entity["WritebackMode"]),
            status=Status(entity["Status"]),
            created_by=entity["CreatedBy"],
            created_at=entity["CreatedAt"],
            updated_by=entity["UpdatedBy"],
            updated_at=entity["UpdatedAt"],
            ehr_signin=signin,
            approved_by=entity.get("ApprovedBy") or None,
            approved_at=entity.get("ApprovedAt") if entity.get("ApprovedBy") else None,
            shared_with=tuple(t for t in str(entity.get("SharedWith") or "").split(",") if t),
            etag=metadata.get("etag"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StoredDataError("A stored configuration could not be read.") from exc
