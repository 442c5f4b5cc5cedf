"""The EHR user → Microsoft 365 user mapping: the connector's only durable personal datum.

Table ``EhrUserMap`` in the storage account of the configuration's geography, and nowhere else.

    PartitionKey  HMAC("ehr-user-map", configuration id)  one partition per configuration, so an admin
                                                          can list and remove their clinicians' links
    RowKey        HMAC("ehr-user", configuration id, EHR user id)   reveals no EHR identifier
    TenantId, ObjectId   the Microsoft 365 user (Entra ids, what Graph needs to organize meetings)
    UpnSealed     the user's UPN at the time of linking, sealed (``shared.kernel.sealing``, bound to this row),
                  shown only to the configuration's admins so they can recognise their clinician
    CreatedAt, LastUsedAt   LastUsedAt moves at most once a day (``LAST_USED_PRECISION``)

Rows written before the per-configuration partitions (PartitionKey = the geography name, same RowKey) are
still read: the first launch that finds one moves it into its configuration's partition (migrate on read).
Until its clinician launches again such a row cannot be attributed to a configuration, so the portal does
not list it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.errors import NotFound, SealedValueInvalid
from shared.kernel.i18n import N_
from shared.kernel.identifiers import keyed_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, operational
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage, StorageAccount, storage_errors

logger = logging.getLogger(__name__)

TABLE = "EhrUserMap"
LAST_USED_PRECISION = timedelta(days=1)
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_BATCH = 100  # Table Storage's limit of operations per transaction (one partition)

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "the EHR user -> Microsoft 365 user mapping, created when the clinician confirms it: the one durable "
        "personal datum",
        (
            Field("PartitionKey", Classification.TENANT, Protection.HMAC, "HMAC(configuration id)"),
            Field("RowKey", Classification.EHR_ID, Protection.HMAC, "HMAC(configuration id, EHR user id)"),
            Field("TenantId", Classification.TENANT, Protection.CLEAR, "Entra tenant of the clinician"),
            Field("ObjectId", Classification.PERSONAL, Protection.CLEAR, "Entra object id of the clinician"),
            Field(
                "UpnSealed",
                Classification.PERSONAL,
                Protection.SEALED,
                "the clinician's UPN at linking, shown only to the configuration's admins",
            ),
            *operational("CreatedAt", "LastUsedAt"),
        ),
        "durable: until the clinician links another account, an admin removes the link or deletes the configuration",
        "UserMapRepository.put replaces it; the portal deletes it (Clinician links, or the configuration's deletion)",
    ),
)


@dataclass(frozen=True)
class UserMapping:
    tenant_id: str
    object_id: str
    created_at: datetime
    last_used_at: datetime


@dataclass(frozen=True)
class ListedMapping:
    """One row as a configuration's admin sees it: an opaque key, the Microsoft 365 user, the dates."""

    key: str  # the RowKey: opaque, stable, names the row to remove
    tenant_id: str
    object_id: str
    upn: str | None  # None for rows linked before UPNs were kept, or sealed under a retired key
    created_at: datetime
    last_used_at: datetime

    @property
    def short_key(self) -> str:
        return self.key[:12]


class UserMapRepository:
    def __init__(self, storage: Storage, secret: str, sealer: Sealer) -> None:
        self._storage = storage
        self._secret = secret
        self._sealer = sealer

    def row_key(self, configuration_id: str, ehr_user_id: str) -> str:
        return keyed_id(self._secret, "ehr-user", configuration_id, ehr_user_id)

    def partition_key(self, configuration_id: str) -> str:
        return keyed_id(self._secret, "ehr-user-map", configuration_id)

    def get(self, geography: Geography, configuration_id: str, ehr_user_id: str) -> UserMapping | None:
        account = self._storage.for_geography(geography)
        partition, row = self.partition_key(configuration_id), self.row_key(configuration_id, ehr_user_id)
        with storage_errors(account.name):
            entity = _get(account, partition, row)
            if entity is None:
                entity = self._migrate(account, geography, partition, row)
        return None if entity is None else _mapping(entity)

    def _migrate(
        self, account: StorageAccount, geography: Geography, partition: str, row: str
    ) -> dict[str, Any] | None:
        """A row of the old layout (PartitionKey = geography) moves into its configuration's partition."""
        legacy = _get(account, geography.value, row)
        if legacy is None:
            return None
        moved = {
            "PartitionKey": partition,
            "RowKey": row,
            "TenantId": legacy["TenantId"],
            "ObjectId": legacy["ObjectId"],
            "CreatedAt": legacy["CreatedAt"],
            "LastUsedAt": legacy["LastUsedAt"],
        }
        table = account.table(TABLE)
        table.upsert_entity(moved)
        table.delete_entity(geography.value, row)
        logger.info("EHR user mapping moved to its configuration's partition")
        return moved

    def put(
        self,
        geography: Geography,
        configuration_id: str,
        ehr_user_id: str,
        *,
        tenant_id: str,
        object_id: str,
        upn: str | None = None,
    ) -> UserMapping:
        """Create or replace the mapping (a provider re-linking to another account replaces it)."""
        account = self._storage.for_geography(geography)
        partition, row = self.partition_key(configuration_id), self.row_key(configuration_id, ehr_user_id)
        now = utcnow()
        entity: dict[str, Any] = {
            "PartitionKey": partition,
            "RowKey": row,
            "TenantId": tenant_id,
            "ObjectId": object_id,
            "CreatedAt": now,
            "LastUsedAt": now,
        }
        if upn:
            entity["UpnSealed"] = self._sealer.seal(upn, purpose=_upn_purpose(geography, partition, row))
        with storage_errors(account.name):
            table = account.table(TABLE)
            table.upsert_entity(entity)
            table.delete_entity(geography.value, row)  # an old-layout row of the same user, if any
        return UserMapping(tenant_id=tenant_id, object_id=object_id, created_at=now, last_used_at=now)

    def touch(self, geography: Geography, configuration_id: str, ehr_user_id: str, mapping: UserMapping) -> UserMapping:
        """Record a use, at most once per ``LAST_USED_PRECISION`` (a write per launch would cost every launch)."""
        now = utcnow()
        if now - mapping.last_used_at < LAST_USED_PRECISION:
            return mapping
        account = self._storage.for_geography(geography)
        entity = {
            "PartitionKey": self.partition_key(configuration_id),
            "RowKey": self.row_key(configuration_id, ehr_user_id),
            "LastUsedAt": now,
        }
        with storage_errors(account.name):
            try:
                account.table(TABLE).update_entity(entity)  # merge: only LastUsedAt changes
            except ResourceNotFoundError:
                return mapping  # removed meanwhile by an admin: nothing to record
        return UserMapping(mapping.tenant_id, mapping.object_id, mapping.created_at, now)

    def list_for_configuration(self, geography: Geography, configuration_id: str) -> list[ListedMapping]:
        account = self._storage.for_geography(geography)
        partition = self.partition_key(configuration_id)
        with storage_errors(account.name):
            entities = list(account.table(TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": partition}))
        listed = [
            ListedMapping(
                key=str(e["RowKey"]),
                tenant_id=str(e["TenantId"]),
                object_id=str(e["ObjectId"]),
                upn=self._open_upn(geography, partition, e),
                created_at=e["CreatedAt"],
                last_used_at=e["LastUsedAt"],
            )
            for e in entities
        ]
        return sorted(listed, key=lambda m: m.last_used_at, reverse=True)

    def delete_key(self, geography: Geography, configuration_id: str, key: str) -> None:
        """Remove the row ``key`` of this configuration; an unknown key (or another configuration's) → NotFound."""
        if not _KEY_RE.match(key):
            raise NotFound(N_("There is no such clinician link."), code="mapping_not_found")
        account = self._storage.for_geography(geography)
        partition = self.partition_key(configuration_id)
        with storage_errors(account.name):
            if _get(account, partition, key) is None:
                raise NotFound(N_("There is no such clinician link."), code="mapping_not_found")
            account.table(TABLE).delete_entity(partition, key)

    def delete_configuration(self, geography: Geography, configuration_id: str) -> int:
        """Remove every link of a deleted configuration (its partition), in batches; returns how many went."""
        account = self._storage.for_geography(geography)
        partition = self.partition_key(configuration_id)
        table = account.table(TABLE)
        removed = 0
        with storage_errors(account.name):
            keys = [
                str(e["RowKey"])
                for e in table.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": partition}, select=["PartitionKey", "RowKey"]
                )
            ]
            for start in range(0, len(keys), _BATCH):
                batch = keys[start : start + _BATCH]
                table.submit_transaction([("delete", {"PartitionKey": partition, "RowKey": k}) for k in batch])
                removed += len(batch)
        return removed

    def delete(self, geography: Geography, configuration_id: str, ehr_user_id: str) -> None:
        self.delete_key(geography, configuration_id, self.row_key(configuration_id, ehr_user_id))

    def _open_upn(self, geography: Geography, partition: str, entity: Any) -> str | None:
        sealed = entity.get("UpnSealed")
        if not sealed:
            return None
        try:
            return self._sealer.open(str(sealed), purpose=_upn_purpose(geography, partition, str(entity["RowKey"])))
        except SealedValueInvalid:
            return None  # the object id still identifies the user


def _upn_purpose(geography: Geography, partition: str, row: str) -> str:
    return f"{TABLE}|{geography.value}|{partition}|{row}|Upn"


def _get(account: StorageAccount, partition: str, row: str) -> Any:
    try:
        return account.table(TABLE).get_entity(partition, row)
    except ResourceNotFoundError:
        return None


def _mapping(entity: Any) -> UserMapping:
    return UserMapping(
        tenant_id=entity["TenantId"],
        object_id=entity["ObjectId"],
        created_at=entity["CreatedAt"],
        last_used_at=entity["LastUsedAt"],
    )
