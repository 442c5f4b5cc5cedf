"""``meetingCallEvents`` subscriptions (beta): request validation, storage, and their JSON.

Rules from Graph's documentation: resource ``communications/onlineMeetings(joinWebUrl='{encoded}')/
meetingCallEvents`` with the joinWebUrl URL-encoded once more (``%3a`` → ``%253a``); changeType
``updated``; lifetime at most 4230 minutes; rich notifications need ``encryptionCertificate`` and
``encryptionCertificateId``; one subscription per application per meeting.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from sandbox.graph.crypto import CertificateError, EncryptionCertificate
from sandbox.graph.meetings import graph_time, utcnow
from sandbox.graph.odata import GraphError, bad_request
from sandbox.graph.timeparse import parse_time

MAX_LIFETIME = dt.timedelta(minutes=4230)
RESOURCE = re.compile(r"^/?communications/onlineMeetings\(joinWebUrl='(?P<url>[^']+)'\)/meetingCallEvents$")
CREATE_FIELDS = {
    "changeType",
    "notificationUrl",
    "lifecycleNotificationUrl",
    "resource",
    "expirationDateTime",
    "clientState",
    "includeResourceData",
    "encryptionCertificate",
    "encryptionCertificateId",
    "latestSupportedTlsVersion",
}
UPDATE_FIELDS = {"expirationDateTime", "notificationUrl", "encryptionCertificate", "encryptionCertificateId"}


@dataclass
class Subscription:
    id: str
    app_id: str
    tenant_id: str
    creator_id: str | None
    meeting_id: str
    resource: str
    notification_url: str
    lifecycle_notification_url: str | None
    include_resource_data: bool
    encryption_certificate: str | None
    encryption_certificate_id: str | None
    certificate: EncryptionCertificate | None
    client_state: str | None
    expiration: dt.datetime
    tls_version: str = "v1_2"

    @property
    def expired(self) -> bool:
        return self.expiration <= utcnow()

    def to_json(self, root: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{root}/beta/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": "updated",
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_notification_url,
            "expirationDateTime": graph_time(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": self.include_resource_data,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": self.encryption_certificate,
            "encryptionCertificateId": self.encryption_certificate_id,
            "notificationUrlAppId": None,
        }


def encoded_join_web_url(resource: str) -> str:
    """The joinWebUrl named by a subscription resource (decoded once), or a 400."""
    match = RESOURCE.match(resource)
    if match is None:
        raise bad_request(f"Resource '{resource[:200]}' is not supported for subscriptions.", "InvalidRequest")
    return unquote(match.group("url"))


def check_url(value: Any, field: str, http_hosts: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field} is required.", "InvalidRequest")
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in http_hosts:
        return value
    raise bad_request(f"The {field} must be an absolute https URL.", "InvalidRequest")


def check_expiration(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise bad_request("expirationDateTime is required.", "InvalidRequest")
    try:
        expiration = parse_time(value)
    except ValueError:
        raise bad_request(f"Invalid expirationDateTime '{value[:40]}'.", "InvalidRequest") from None
    now = utcnow()
    if expiration <= now:
        raise bad_request("Subscription expiration must be in the future.", "InvalidRequest")
    if expiration > now + MAX_LIFETIME + dt.timedelta(seconds=30):
        raise bad_request("Subscription expiration can only be 4230 minutes in the future.", "InvalidRequest")
    return expiration


def check_certificate(
    body: dict[str, Any], required: bool
) -> tuple[str | None, str | None, EncryptionCertificate | None]:
    raw = body.get("encryptionCertificate")
    certificate_id = body.get("encryptionCertificateId")
    if raw is None and certificate_id is None:
        if required:
            raise bad_request(
                "encryptionCertificate and encryptionCertificateId are required when includeResourceData is true.",
                "InvalidRequest",
            )
        return None, None, None
    if not isinstance(raw, str) or not isinstance(certificate_id, str) or not certificate_id:
        raise bad_request("encryptionCertificate and encryptionCertificateId must be set together.", "InvalidRequest")
    if len(certificate_id) > 128:
        raise bad_request("encryptionCertificateId must be at most 128 characters.", "InvalidRequest")
    try:
        certificate = EncryptionCertificate(raw)
    except CertificateError as error:
        raise bad_request(str(error), "InvalidRequest") from None
    return raw, certificate_id, certificate


def unknown_fields(body: dict[str, Any], allowed: set[str]) -> list[str]:
    return sorted(k for k in body if k not in allowed and not k.startswith("@odata."))


class Subscriptions:
    """Thread-safe store; enforces one live subscription per (application, meeting)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Subscription] = {}
        self._pending: set[tuple[str, str]] = set()

    def reserve(self, app_id: str, meeting_id: str) -> None:
        """Claim the (app, meeting) slot before the handshake so concurrent creates cannot both win."""
        with self._lock:
            key = (app_id, meeting_id)
            live = any(
                s.app_id == app_id and s.meeting_id == meeting_id and not s.expired for s in self._by_id.values()
            )
            if live or key in self._pending:
                raise GraphError(
                    409,
                    "Conflict",
                    "A subscription to this meeting's call events already exists for this application.",
                )
            self._pending.add(key)

    def release(self, app_id: str, meeting_id: str) -> None:
        with self._lock:
            self._pending.discard((app_id, meeting_id))

    def add(self, subscription: Subscription) -> None:
        with self._lock:
            self._pending.discard((subscription.app_id, subscription.meeting_id))
            self._by_id[subscription.id] = subscription

    def get(self, subscription_id: str, app_id: str | None = None) -> Subscription | None:
        with self._lock:
            found = self._by_id.get(subscription_id)
            if found is None or found.expired or (app_id is not None and found.app_id != app_id):
                return None
            return found

    def remove(self, subscription_id: str) -> None:
        with self._lock:
            self._by_id.pop(subscription_id, None)

    def for_meeting(self, meeting_id: str) -> list[Subscription]:
        with self._lock:
            return [s for s in self._by_id.values() if s.meeting_id == meeting_id and not s.expired]

    def all(self) -> list[Subscription]:
        with self._lock:
            return list(self._by_id.values())

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())
