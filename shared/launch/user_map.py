"""The EHR user → Microsoft 365 user mapping: the connector's only durable personal datum.

Table ``EhrUserMap`` in the storage account of the configuration's geography, and nowhere
else. PartitionKey = geography; RowKey = HMAC(configuration id, EHR user id), so the stored
key reveals no EHR identifier. Value = Entra tenant id + object id + timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.identifiers import keyed_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage, storage_errors

TABLE = "EhrUserMap"

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "the EHR user -> Microsoft 365 user mapping: the one durable personal datum",
        (
            key("PartitionKey", "geography"),
            Field("RowKey", Classification.EHR_ID, Protection.HMAC, "HMAC(configuration id, EHR user id)"),
            Field("TenantId", Classification.TENANT, Protection.CLEAR, "Entra tenant of the clinician"),
            Field("ObjectId", Classification.PERSONAL, Protection.CLEAR, "Entra object id of the clinician"),
            *operational("CreatedAt", "LastUsedAt"),
        ),
        "durable: until replaced (the clinician signs in with another account) or deleted by an operator",
        "UserMapRepository.put replaces it; nothing expires it",
    ),
)


@dataclass(frozen=True)
class UserMapping:
    tenant_id: str
    object_id: str
    created_at: datetime
    last_used_at: datetime


class UserMapRepository:
    def __init__(self, storage: Storage, secret: str) -> None:
        self._storage = storage
        self._secret = secret

    def row_key(self, configuration_id: str, ehr_user_id: str) -> str:
        return keyed_id(self._secret, "ehr-user", configuration_id, ehr_user_id)

    def get(self, geography: Geography, configuration_id: str, ehr_user_id: str) -> UserMapping | None:
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            try:
                entity = account.table(TABLE).get_entity(geography.value, self.row_key(configuration_id, ehr_user_id))
            except ResourceNotFoundError:
                return None
        return UserMapping(
            tenant_id=entity["TenantId"],
            object_id=entity["ObjectId"],
            created_at=entity["CreatedAt"],
            last_used_at=entity["LastUsedAt"],
        )

    def put(
        self, geography: Geography, configuration_id: str, ehr_user_id: str, *, tenant_id: str, object_id: str
    ) -> UserMapping:
        """Create or replace the mapping (a provider re-linking to another account replaces it)."""
        account = self._storage.for_geography(geography)
        now = utcnow()
        entity = {
            "PartitionKey": geography.value,
            "RowKey": self.row_key(configuration_id, ehr_user_id),
            "TenantId": tenant_id,
            "ObjectId": object_id,
            "CreatedAt": now,
            "LastUsedAt": now,
        }
        with storage_errors(account.name):
            account.table(TABLE).upsert_entity(entity)
        return UserMapping(tenant_id=tenant_id, object_id=object_id, created_at=now, last_used_at=now)

    def delete(self, geography: Geography, configuration_id: str, ehr_user_id: str) -> None:
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            account.table(TABLE).delete_entity(geography.value, self.row_key(configuration_id, ehr_user_id))
