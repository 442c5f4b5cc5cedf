"""Configuration rows in the app's storage account, guarded by etags and transactions.

Tables (app account):

* ``Configurations`` — PartitionKey = Entra tenant id, RowKey = configuration id. Its columns are the
  live version (what launches and writeback read); an edit awaiting approval is kept beside it, as
  JSON in ``PendingEdit``, and replaces those columns only when approved.
* ``ConfigurationIndex`` — PartitionKey = SHA-256 of the normalised FHIR URL. Two rows per
  configuration, written and deleted together in one transaction: RowKey = configuration id
  (the launch's lookup: launch URL id + ``iss`` → tenant), and RowKey = ``tenant-{tid}`` (the
  guard that makes "one FHIR URL once per tenant" hold even under concurrent submissions).
  While an edit awaits approval, the configuration holds two URLs (the approved one and the
  edited one), each with its rows; launches still only accept the approved URL (``find_for_launch``
  compares it with ``iss``), so an edited URL is allowed from the moment it is approved, not before.
  A configuration's patient-side FHIR URL (Oracle Health) has rows of its own, the same way: it is
  reserved in the tenant like the main URL, and the launch lookup accepts it for patient launches only.
* ``ConfigurationShares`` — PartitionKey = a tenant the configuration is shared with, RowKey =
  configuration id: how that tenant's admins find it. The configuration's own ``SharedWith``
  list is the truth; an index row it does not confirm (a share withdrawn or a write that
  failed half-way) is ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
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

from shared.configurations.model import (
    Configuration,
    EhrSignIn,
    Environment,
    PendingEdit,
    Status,
    Vendor,
    WritebackMode,
    input_from_plain,
    input_to_plain,
    is_configuration_id,
    url_key,
)
from shared.http.outbound import normalise_base_url
from shared.kernel.clock import utcnow
from shared.kernel.errors import Conflict, NotFound, StorageUnavailable, StoredDataError
from shared.kernel.i18n import N_
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, operational
from shared.kernel.settings import Geography
from shared.storage.accounts import StorageAccount, insert_row, storage_errors

logger = logging.getLogger(__name__)
TABLE = "Configurations"
INDEX_TABLE = "ConfigurationIndex"
SHARES_TABLE = "ConfigurationShares"
RESERVATION_GRACE = timedelta(minutes=2)  # a URL guard younger than this may belong to a create in flight
NO_SUCH_CONFIGURATION = N_("There is no such configuration.")

_UNTIL_DELETED = "until an admin deletes the configuration"
_DELETE = "ConfigurationRepository.delete (portal: Delete)"
_WHO = "UPN of the admin or approver who did it"
INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "the configurations the portal manages",
        (
            Field("PartitionKey", Classification.TENANT, Protection.CLEAR, "Entra tenant id"),
            Field("RowKey", Classification.TENANT, Protection.CLEAR, "configuration id (random UUID)"),
            *(
                Field(name, Classification.TENANT, Protection.CLEAR)
                for name in ("Organization", "FhirBaseUrl", "PatientFhirBaseUrl", "Environment", "Geography", "Vendor")
            ),
            *(Field(name, Classification.TENANT, Protection.CLEAR) for name in ("ProviderClientId", "PatientClientId")),
            Field("WritebackMode", Classification.TENANT, Protection.CLEAR),
            Field("Status", Classification.OPERATIONAL, Protection.CLEAR),
            Field("ApproverUpn", Classification.PERSONAL, Protection.CLEAR, "UPN of the approver an admin named"),
            Field(
                "ApproverOid",
                Classification.PERSONAL,
                Protection.CLEAR,
                "Entra object id of the approver, bound at their first sign-in (a renamed UPN cannot approve)",
            ),
            Field("CreatedBy", Classification.PERSONAL, Protection.CLEAR, _WHO),
            Field("UpdatedBy", Classification.PERSONAL, Protection.CLEAR, _WHO),
            Field("EhrSigninBy", Classification.PERSONAL, Protection.CLEAR, _WHO),
            Field("EhrSigninOid", Classification.PERSONAL, Protection.CLEAR, "Entra object id of the approver"),
            Field("ApprovedBy", Classification.PERSONAL, Protection.CLEAR, _WHO),
            Field("EhrSigninFhirUrl", Classification.TENANT, Protection.CLEAR, "the FHIR URL the approver proved"),
            Field(
                "EhrSigninPatientFhirUrl",
                Classification.TENANT,
                Protection.CLEAR,
                "the patient-side FHIR URL checked with that sign-in (discovery, R4, same tenant id)",
            ),
            Field("SharedWith", Classification.TENANT, Protection.CLEAR, "tenant ids"),
            Field(
                "PendingEdit",
                Classification.PERSONAL,
                Protection.CLEAR,
                "an edit awaiting approval, as JSON: the edited fields above (approver UPN included), who edited "
                "it and when, the approver's object id and EHR sign-in for it; emptied when approved or rejected",
            ),
            *operational("CreatedAt", "UpdatedAt", "EhrSigninAt", "ApprovedAt"),
        ),
        _UNTIL_DELETED,
        _DELETE,
    ),
    Store(
        INDEX_TABLE,
        Kind.TABLE,
        Account.APP,
        "launch lookup (configuration id + iss) and the one-FHIR-URL-per-tenant guard",
        (
            Field("PartitionKey", Classification.TENANT, Protection.HASHED, "SHA-256 of the normalised FHIR URL"),
            Field("RowKey", Classification.TENANT, Protection.CLEAR, "configuration id, or tenant-<tenant id>"),
            Field("TenantId", Classification.TENANT, Protection.CLEAR),
            Field("ConfigurationId", Classification.TENANT, Protection.CLEAR),
        ),
        _UNTIL_DELETED,
        "ConfigurationRepository.delete, edits of the FHIR URL once approved, rejected or withdrawn",
    ),
    Store(
        SHARES_TABLE,
        Kind.TABLE,
        Account.APP,
        "how a tenant's admins find configurations shared with them",
        (
            Field("PartitionKey", Classification.TENANT, Protection.CLEAR, "the tenant shared with"),
            Field("RowKey", Classification.TENANT, Protection.CLEAR, "configuration id"),
            Field("OwnerTenantId", Classification.TENANT, Protection.CLEAR),
        ),
        "while the configuration is shared with that tenant",
        "Stop sharing, and ConfigurationRepository.delete",
    ),
)


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
        return _from_entity(self._row(self._table(), tenant_id, configuration_id))

    def list_for_tenant(self, tenant_id: str) -> list[Configuration]:
        return self._listed("PartitionKey eq @pk", {"pk": tenant_id.lower()})

    def list_for_approver(self, tenant_id: str, upn: str) -> list[Configuration]:
        """Configurations naming ``upn`` as approver, of the approved version or of the edit awaiting approval."""
        found = self.list_for_tenant(tenant_id)  # one partition: the approver named in an edit is inside JSON
        return [c for c in found if c.names_approver(upn) or c.proposed.names_approver(upn)]

    def get_shared(self, tenant_id: str, configuration_id: str) -> Configuration:
        """A configuration another tenant shares with ``tenant_id``, or ``NotFound``."""
        row = self._row(self._shares(), tenant_id, configuration_id)
        config = self.get(str(row.get("OwnerTenantId", "")), configuration_id)
        if not config.is_shared_with(tenant_id):
            raise NotFound(NO_SUCH_CONFIGURATION)
        return config

    def _row(self, table: Any, tenant_id: str, configuration_id: str) -> Any:
        """The row of ``table`` keyed (tenant, configuration id), or ``NotFound``, also for a malformed id."""
        if not is_configuration_id(configuration_id):
            raise NotFound(NO_SUCH_CONFIGURATION)
        with storage_errors(self._account.name):
            try:
                return table.get_entity(tenant_id.lower(), configuration_id)
            except ResourceNotFoundError:
                raise NotFound(NO_SUCH_CONFIGURATION) from None

    def _listed(self, query: str, parameters: dict[str, str]) -> list[Configuration]:
        """The configurations whose rows match ``query``."""
        with storage_errors(self._account.name):
            found = [_from_entity(e) for e in self._table().query_entities(query, parameters=parameters)]
        return _in_portal_order(found)

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
        return _in_portal_order(found)

    def find_for_launch(self, configuration_id: str, iss: str, *, patient: bool = False) -> Configuration | None:
        """The configuration a launch URL names, if ``iss`` is its FHIR URL (approved or not: the caller decides).

        The configuration's live version: while an edit awaits approval, that is the approved version, so
        only the approved FHIR URL matches ``iss`` (the edited one is reserved, not allowed). A patient
        launch (``patient``) may also name the patient-side FHIR URL; a provider launch never.
        """
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
        return config if config.launch_base(wanted, patient=patient) else None

    def find_approved(self, configuration_id: str) -> Configuration | None:
        """The approved configuration with this id in any tenant (a visit event names no tenant), else None."""
        if not is_configuration_id(configuration_id):
            return None
        with storage_errors(self._account.name):
            rows = list(self._table().query_entities("RowKey eq @id", parameters={"id": configuration_id}))
        if len(rows) != 1 or rows[0].get("Status") != Status.APPROVED.value:
            return None
        return _from_entity(rows[0])

    # writes

    def create(self, config: Configuration) -> Configuration:
        """Store a new configuration; the same FHIR URL twice in one tenant → ``Conflict``."""
        reserved: list[str] = []
        try:
            for url in sorted(held_urls(config)):
                self._reserve(url, config.tenant_id, config.id)
                reserved.append(url)
            with storage_errors(self._account.name):
                metadata = insert_row(self._table(), _to_entity(config))
        except Exception:
            for url in reserved:
                self._release(url, config.tenant_id, config.id)
            raise
        return replace(config, etag=metadata.get("etag"))

    def update(self, previous: Configuration, updated: Configuration, *, etag: str) -> Configuration:
        """Replace ``previous`` with ``updated`` if nobody changed it since ``etag`` was read.

        A new share's index row is written before the configuration and a withdrawn one's deleted
        after it, so a failure in between leaves only an index row that readers ignore.
        """
        gained = held_urls(updated) - held_urls(previous)
        lost = held_urls(previous) - held_urls(updated)
        reserved: list[str] = []
        try:
            for url in sorted(gained):
                self._reserve(url, updated.tenant_id, updated.id)
                reserved.append(url)
        except Exception:
            for url in reserved:
                self._release(url, updated.tenant_id, updated.id)
            raise
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
            for url in reserved:  # whatever failed, a new URL must not stay reserved for an edit that never landed
                self._release(url, updated.tenant_id, updated.id)
            stale = isinstance(exc, ResourceModifiedError | ResourceNotFoundError) or (
                isinstance(exc, HttpResponseError) and exc.status_code in (409, 412)
            )
            if stale:
                raise Conflict(
                    N_(
                        "Someone else changed or deleted this configuration while you were working on it. "
                        "Nothing was saved; review the current version and apply your changes again."
                    ),
                    code="edit_conflict",
                ) from None
            raise
        for url in lost:
            self._release(url, previous.tenant_id, previous.id)
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
                    N_(
                        "Someone else changed this configuration just now; it was not deleted. Review it and try again."
                    ),
                    code="edit_conflict",
                ) from None
        for url in held_urls(config):
            self._release(url, config.tenant_id, config.id)
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
                        N_(
                            "This FHIR URL is already configured in your organization. Edit that configuration instead."
                        ),
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
            holder = _from_entity(self._table().get_entity(tenant_id, owner))
        except ResourceNotFoundError:
            pass
        else:
            if partition in {url_key(url) for url in held_urls(holder)}:
                return False  # the owner holds this URL: a real duplicate
            # else: left behind by an edit rejected, withdrawn or moved on whose release failed
        try:
            self._index().delete_entity(
                partition,
                f"tenant-{tenant_id}",
                etag=guard.metadata["etag"],
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


def held_urls(config: Configuration) -> set[str]:
    """The FHIR URLs a configuration keeps reserved: its live ones (the patient-side one too) and, while an edit
    awaits approval, the edit's."""
    versions = [config.input()] + ([config.edit.data] if config.edit is not None else [])
    return {url for data in versions for url in (data.fhir_base_url, data.patient_fhir_base_url) if url}


def _signin_to_json(signin: EhrSignIn | None) -> dict[str, str] | None:
    if signin is None:
        return None
    return {
        "by": signin.by_upn,
        "oid": signin.by_oid,
        "at": signin.at.isoformat(),
        "fhirBaseUrl": signin.fhir_base_url,
        "patientFhirBaseUrl": signin.patient_fhir_base_url,
    }


def _signin_from_json(value: Any) -> EhrSignIn | None:
    if value is None:
        return None
    return EhrSignIn(
        by_upn=str(value["by"]),
        by_oid=str(value["oid"]),
        at=datetime.fromisoformat(str(value["at"])),
        fhir_base_url=str(value["fhirBaseUrl"]),
        patient_fhir_base_url=str(value.get("patientFhirBaseUrl") or ""),
    )


def _edit_to_json(edit: PendingEdit | None) -> str:
    if edit is None:
        return ""
    document = {
        "fields": input_to_plain(edit.data),
        "by": edit.by,
        "at": edit.at.isoformat(),
        "approverOid": edit.approver_oid,
        "ehrSignin": _signin_to_json(edit.ehr_signin),
    }
    return json.dumps(document, separators=(",", ":"))


def _edit_from_json(text: str) -> PendingEdit | None:
    if not text:
        return None
    document = json.loads(text)
    oid = document.get("approverOid")
    return PendingEdit(
        data=input_from_plain(document["fields"]),
        by=str(document["by"]),
        at=datetime.fromisoformat(str(document["at"])),
        approver_oid=str(oid) if oid else None,
        ehr_signin=_signin_from_json(document.get("ehrSignin")),
    )


def _to_entity(config: Configuration) -> dict[str, Any]:
    signin = config.ehr_signin
    return {
        "PartitionKey": config.tenant_id,
        "RowKey": config.id,
        "Organization": config.organization,
        "FhirBaseUrl": config.fhir_base_url,
        "PatientFhirBaseUrl": config.patient_fhir_base_url,
        "Environment": config.environment.value,
        "ApproverUpn": config.approver_upn,
        "ApproverOid": config.approver_oid or "",
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
        "EhrSigninPatientFhirUrl": signin.patient_fhir_base_url if signin else "",
        "ApprovedBy": config.approved_by or "",
        "ApprovedAt": config.approved_at,
        "SharedWith": ",".join(config.shared_with),
        "PendingEdit": _edit_to_json(config.edit),
    }


def _in_portal_order(found: list[Configuration]) -> list[Configuration]:
    """By organization, environment and URL, as the portal lists them."""
    return sorted(found, key=lambda c: (c.organization.lower(), c.environment.value, c.fhir_base_url))


def _from_entity(entity: Mapping[str, Any]) -> Configuration:
    signin = None
    if entity.get("EhrSigninBy") and entity.get("EhrSigninAt"):
        signin = EhrSignIn(
            by_upn=entity["EhrSigninBy"],
            by_oid=entity.get("EhrSigninOid", ""),
            at=entity["EhrSigninAt"],
            fhir_base_url=entity.get("EhrSigninFhirUrl", ""),
            patient_fhir_base_url=entity.get("EhrSigninPatientFhirUrl") or "",
        )
    metadata = getattr(entity, "metadata", {}) or {}
    try:
        return Configuration(
            id=entity["RowKey"],
            tenant_id=entity["PartitionKey"],
            organization=entity["Organization"],
            fhir_base_url=entity["FhirBaseUrl"],
            patient_fhir_base_url=entity.get("PatientFhirBaseUrl") or "",  # rows written before it existed: none
            environment=Environment(entity["Environment"]),
            approver_upn=entity["ApproverUpn"],
            approver_oid=entity.get("ApproverOid") or None,  # rows written before binding: bound at first sign-in
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
            edit=_edit_from_json(str(entity.get("PendingEdit") or "")),
            etag=metadata.get("etag"),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StoredDataError(N_("A stored configuration could not be read.")) from exc
