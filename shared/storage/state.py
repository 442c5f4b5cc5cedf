"""Short-lived, single-use state rows (OAuth ``state``, sign-in flows).

Table ``AuthStates`` (the app's account): PartitionKey = kind, RowKey = the state value, the payload
and an expiry. The payload (PKCE verifier, nonce, a launch's context tokens such as the CSN, a pending
launch carried through the Microsoft sign-in) is sealed (AES-256-GCM, ``Sealer``) for
``AuthStates/<kind>/<state>``: the browser brings back only the state, so the row must be found in the
app's account before its configuration's geography is known; sealed, it is unreadable there.

Consumption marks the row used with an etag-guarded update that also empties the payload: Table
Storage ignores a delete of a missing row, so a delete cannot tell two consumers apart, but an update
with ``IfNotModified`` fails for every consumer but the first. A consumed row keeps only what single
use needs (kind, state, ``Consumed``, times) until the sweep removes it after ``ExpiresAt``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.errors import SealedValueInvalid, StateError
from shared.kernel.identifiers import log_id, random_token
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.sealing import Sealer
from shared.storage.accounts import StorageAccount, storage_errors

logger = logging.getLogger(__name__)

TABLE = "AuthStates"
DEFAULT_TTL = timedelta(minutes=10)

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "single-use OAuth state of every sign-in and launch",
        (
            key("PartitionKey", "kind: ehr-launch, launch-signin, launch-confirm, entra-signin, portal-ehr-signin"),
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
    def __init__(self, account: StorageAccount, sealer: Sealer) -> None:
        self._account = account
        self._sealer = sealer

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
            "Payload": self._sealer.seal(
                json.dumps(dict(payload), separators=(",", ":")), purpose=_purpose(kind, value)
            ),
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
            sealed = entity.get("Payload") or ""
            entity["Consumed"] = True
            entity["ConsumedAt"] = utcnow()
            entity["Payload"] = ""  # single use needs no payload from here on
            try:
                table.update_entity(entity, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                raise StateError(
                    "This sign-in link was already used. Please start again.", code="state_reused"
                ) from None
        try:
            payload: dict[str, Any] = json.loads(self._sealer.open(sealed, purpose=_purpose(kind, state)))
        except SealedValueInvalid:
            logger.error(
                "State %s of kind %s cannot be opened (tampered with, or its key retired)", log_id(state), kind
            )
            raise StateError("This sign-in link is not valid. Please start again.", code="state_unknown") from None
        return payload


def _purpose(kind: str, state: str) -> str:
    return f"{TABLE}/{kind}/{state}"


def _looks_like_state(value: str) -> bool:
    # Table keys may not hold / \ # ? or control characters; our states are URL-safe base64.
    return 16 <= len(value) <= 128 and all(c.isalnum() or c in "-_" for c in value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
