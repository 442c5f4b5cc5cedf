"""Short-lived, single-use state rows (OAuth ``state``, sign-in flows).

Table ``AuthStates``: PartitionKey = kind, RowKey = the state value, a JSON payload and an
expiry. Consumption marks the row used with an etag-guarded update: Table Storage ignores a
delete of a missing row, so a delete cannot tell two consumers apart, but an update with
``IfNotModified`` fails for every consumer but the first. The same update empties ``Payload``: a
consumed row keeps only that it was used and when (until the sweep deletes it), never what it carried.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.errors import StateError
from shared.kernel.identifiers import random_token
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.storage.accounts import StorageAccount, storage_errors

TABLE = "AuthStates"
DEFAULT_TTL = timedelta(minutes=10)

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "single-use OAuth state of every sign-in and launch",
        (
            key("PartitionKey", "kind: ehr-launch, launch-signin, entra-signin, portal-ehr-signin"),
            Field("RowKey", Classification.CREDENTIAL, Protection.CLEAR, "the state: random, 256 bits, single use"),
            Field(
                "Payload",
                Classification.EHR_ID,
                Protection.SEALED,
                "PKCE verifier, nonce, msal flow; launch kinds carry the launch context (CSN, encounter, patient, "
                "EHR user); emptied when consumed",
            ),
            *operational("CreatedAt", "ExpiresAt", "Consumed", "ConsumedAt"),
        ),
        "10 minutes; the payload only until consumed",
        "consumption empties it; the sweep timer deletes it after ExpiresAt",
    ),
)


class AuthStateStore:
    def __init__(self, account: StorageAccount) -> None:
        self._account = account

    def create(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        ttl: timedelta = DEFAULT_TTL,
        state: str | None = None,
    ) -> str:
        """Store ``payload`` under a fresh unguessable state (256 bits) and return it."""
        value = state or random_token()
        now = utcnow()
        entity = {
            "PartitionKey": kind,
            "RowKey": value,
            "Payload": json.dumps(dict(payload), separators=(",", ":")),
            "CreatedAt": now,
            "ExpiresAt": now + ttl,
            "Consumed": False,
        }
        with storage_errors(self._account.name):
            self._account.table(TABLE).create_entity(entity)
        return value

    def consume(self, kind: str, state: str) -> dict[str, Any]:
        """Return the payload exactly once; unknown, expired or used state raises ``StateError``."""
        if not _looks_like_state(state):
            raise StateError("This sign-in link is not valid. Please start again.", code="state_unknown")
        table = self._account.table(TABLE)
        with storage_errors(self._account.name):
            try:
                entity = table.get_entity(kind, state)
            except ResourceNotFoundError:
                raise StateError("This sign-in link is not valid. Please start again.", code="state_unknown") from None
            if entity.get("Consumed"):
                raise StateError("This sign-in link was already used. Please start again.", code="state_reused")
            if _as_datetime(entity["ExpiresAt"]) <= utcnow():
                raise StateError("This sign-in link has expired. Please start again.", code="state_expired")
            payload_text = str(entity["Payload"])
            entity["Consumed"] = True
            entity["ConsumedAt"] = utcnow()
            entity["Payload"] = ""  # what the state carried lives on only in this request
            try:
                table.update_entity(entity, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                raise StateError(
                    "This sign-in link was already used. Please start again.", code="state_reused"
                ) from None
        payload: dict[str, Any] = json.loads(payload_text)
        return payload


def _looks_like_state(value: str) -> bool:
    # Table keys may not hold / \ # ? or control characters; our states are URL-safe base64.
    return 16 <= len(value) <= 128 and all(c.isalnum() or c in "-_" for c in value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
