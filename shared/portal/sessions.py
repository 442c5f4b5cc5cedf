"""Portal sessions: the cookie holds only a random id; who signed in lives server-side.

Table ``Sessions`` (app account): PartitionKey ``session``, RowKey = SHA-256 of the cookie
value (a leaked table row cannot be replayed as a cookie), the user's tenant, object id, UPN,
name, roles, directory roles (``wids``), a CSRF token and ``ExpiresAt`` (swept by a timer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.identifiers import random_token
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.microsoft.entra import PortalIdentity
from shared.storage.accounts import StorageAccount, insert_row, storage_errors

TABLE = "Sessions"
PARTITION = "session"
SESSION_LIFETIME = timedelta(hours=8)

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "who is signed in to the portal",
        (
            key("PartitionKey", "always session"),
            Field("RowKey", Classification.CREDENTIAL, Protection.HASHED, "SHA-256 of the session cookie"),
            Field("TenantId", Classification.TENANT, Protection.CLEAR),
            Field("ObjectId", Classification.PERSONAL, Protection.CLEAR, "Entra object id"),
            Field("Upn", Classification.PERSONAL, Protection.CLEAR, "the signed-in admin or approver"),
            Field("Name", Classification.PERSONAL, Protection.CLEAR, "display name, shown in the portal"),
            *operational("Roles", "Wids"),
            Field("CsrfToken", Classification.CREDENTIAL, Protection.CLEAR, "random; checked on every form"),
            *operational("CreatedAt", "ExpiresAt"),
        ),
        "8 hours",
        "sign-out deletes it; the sweep timer after ExpiresAt",
    ),
)


@dataclass(frozen=True)
class PortalSession:
    id: str
    user: PortalIdentity
    csrf_token: str
    expires_at: datetime

    def csrf_matches(self, supplied: str | None) -> bool:
        return bool(supplied) and hmac.compare_digest(self.csrf_token.encode(), str(supplied).encode())

    @property
    def binding(self) -> str:
        """A stable, non-secret handle on this session (binds OAuth state to the browser that started it)."""
        return _row_key(self.id)


def _row_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _plausible(session_id: str) -> bool:
    return 32 <= len(session_id) <= 128 and all(c.isalnum() or c in "-_" for c in session_id)


class SessionStore:
    def __init__(self, account: StorageAccount, *, lifetime: timedelta = SESSION_LIFETIME) -> None:
        self._account = account
        self._lifetime = lifetime

    def create(self, user: PortalIdentity) -> PortalSession:
        session_id = random_token()
        now = utcnow()
        session = PortalSession(id=session_id, user=user, csrf_token=random_token(), expires_at=now + self._lifetime)
        entity = {
            "PartitionKey": PARTITION,
            "RowKey": _row_key(session_id),
            "TenantId": user.tenant_id,
            "ObjectId": user.object_id,
            "Upn": user.upn,
            "Name": user.name,
            "Roles": json.dumps(list(user.roles)),
            "Wids": json.dumps(list(user.wids)),
            "CsrfToken": session.csrf_token,
            "CreatedAt": now,
            "ExpiresAt": session.expires_at,
        }
        with storage_errors(self._account.name):
            insert_row(self._account.table(TABLE), entity)
        return session

    def get(self, session_id: str | None) -> PortalSession | None:
        """The live session for a cookie value, or None (unknown, malformed or expired)."""
        if not session_id or not _plausible(session_id):
            return None
        with storage_errors(self._account.name):
            try:
                entity = self._account.table(TABLE).get_entity(PARTITION, _row_key(session_id))
            except ResourceNotFoundError:
                return None
        expires_at: datetime = entity["ExpiresAt"]
        if expires_at <= utcnow():
            return None
        user = PortalIdentity(
            tenant_id=entity["TenantId"],
            object_id=entity["ObjectId"],
            upn=entity["Upn"],
            name=entity["Name"],
            roles=tuple(json.loads(entity.get("Roles") or "[]")),
            wids=tuple(json.loads(entity.get("Wids") or "[]")),
        )
        return PortalSession(id=session_id, user=user, csrf_token=entity["CsrfToken"], expires_at=expires_at)

    def delete(self, session_id: str) -> None:
        if not _plausible(session_id):
            return
        self.delete_binding(_row_key(session_id))

    def delete_binding(self, binding: str) -> None:
        """End the session whose ``PortalSession.binding`` this is (a new sign-in of the same browser replaces it)."""
        if len(binding) != 64 or any(c not in "0123456789abcdef" for c in binding):
            return
        with storage_errors(self._account.name):
            self._account.table(TABLE).delete_entity(PARTITION, binding)
