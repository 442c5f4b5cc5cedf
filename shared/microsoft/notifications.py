"""Graph change notifications for ``meetingCallEvents``: from a webhook POST to visit events.

Everything the webhook needs is in the notification itself, so it answers within Graph's
3-second budget without a storage read:

- ``clientState`` is per subscription: ``v1~<geography>~<visit key>~<organizer oid>~<configuration id>~<tag>``
  where ``tag`` = HMAC-SHA256(GRAPH_CLIENT_STATE, the rest), truncated to 128 bits. A matching tag proves
  the item belongs to a subscription we created, and says which visit it is about (beta allows 255 chars).
- ``validationTokens`` (rich notifications) are JWTs from Entra ID: signature against the Entra JWKS
  (``{authority}/common/discovery/v2.0/keys``), ``aud`` = our client id, ``iss`` =
  ``https://sts.windows.net/{tid}/``, ``appid`` = the Graph change-notification publisher, not expired.
  Every token must be valid and every item's tenant must be vouched for by one of them.
- ``encryptedContent`` is decrypted with our certificate's private key
  (``shared.microsoft.notification_crypto.decrypt_resource``) and mapped to participant changes
  (``shared.microsoft.call_events.participant_changes``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from shared.jose.jwks import JwksCache
from shared.jose.keys import private_key_blocks
from shared.kernel.errors import BadRequest, ConfigurationError, InvalidIdToken, Unauthenticated
from shared.kernel.identifiers import log_id
from shared.kernel.json_input import MalformedJson, parse_json
from shared.kernel.settings import Geography
from shared.microsoft.call_events import participant_changes
from shared.microsoft.notification_crypto import EncryptedContent, decrypt_resource
from shared.visits.events import Source, VisitEvent, attendee_key, user_hint

logger = logging.getLogger(__name__)

ENTRA_KEYS_PATH = "/common/discovery/v2.0/keys"  # under ENTRA_AUTHORITY_HOST: the keys validationTokens are signed with
GRAPH_NOTIFICATION_PUBLISHER = "0bf30f3b-4a52-48df-9a82-234910c4a086"
CLIENT_STATE_VERSION = "v1"
CLIENT_STATE_MAX = 255  # beta subscriptions; v1.0 documents 128
MAX_BODY_BYTES = 1_000_000
_SEP = "~"


# --- clientState ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionTarget:
    """What a subscription's clientState says: the visit it watches."""

    geography: Geography
    visit_key: str
    organizer_object_id: str
    configuration_id: str


class ClientStates:
    """Issues and checks per-subscription clientState values (HMAC under GRAPH_CLIENT_STATE)."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def issue(self, target: SubscriptionTarget) -> str:
        parts = (
            CLIENT_STATE_VERSION,
            target.geography.value,
            target.visit_key,
            target.organizer_object_id,
            target.configuration_id,
        )
        if any(not part or _SEP in part for part in parts):
            raise ValueError("clientState parts must be non-empty and free of '~'")
        body = _SEP.join(parts)
        value = f"{body}{_SEP}{self._tag(body)}"
        if len(value) > CLIENT_STATE_MAX:
            raise ValueError("clientState would exceed 255 characters (configuration id too long)")
        return value

    def check(self, value: Any) -> SubscriptionTarget | None:
        """The target when ``value`` is a clientState we issued, else None (constant-time tag compare)."""
        if not isinstance(value, str) or len(value) > CLIENT_STATE_MAX:
            return None
        body, sep, tag = value.rpartition(_SEP)
        if not sep or not hmac.compare_digest(self._tag(body).encode(), tag.encode()):
            return None
        parts = body.split(_SEP)
        if len(parts) != 5 or parts[0] != CLIENT_STATE_VERSION:
            return None
        try:
            geography = Geography(parts[1])
        except ValueError:
            return None
        return SubscriptionTarget(geography, parts[2], parts[3], parts[4])

    def _tag(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:32]


# --- validationTokens -----------------------------------------------------------------------


class ValidationTokens:
    """Checks the ``validationTokens`` of a rich notification batch against Entra's keys at ``jwks_uri``.

    A token signed with a key Entra does not publish (after one rate-limited refetch, for key rotation), or a
    key set that cannot be read, makes the token invalid; Entra being unreachable is ``UpstreamUnavailable``,
    so Graph delivers the batch again rather than losing it.
    """

    def __init__(self, jwks: JwksCache, *, jwks_uri: str, client_id: str, leeway: float = 60) -> None:
        self._jwks = jwks
        self._jwks_uri = jwks_uri
        self._client_id = client_id
        self._leeway = leeway

    def vouched_tenants(self, tokens: Any) -> set[str]:
        """Tenants vouched for by the tokens; raises ``Unauthenticated`` if any token is invalid."""
        if not isinstance(tokens, list) or not tokens:
            raise Unauthenticated("rich notifications need validationTokens", code="invalid_validation_token")
        tenants: set[str] = set()
        for token in tokens:
            tenants.add(self._tenant_of(token))
        return tenants

    def _tenant_of(self, token: Any) -> str:
        invalid = Unauthenticated("a validation token is invalid", code="invalid_validation_token")
        if not isinstance(token, str) or len(token) > 16_000:
            raise invalid
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if header.get("alg") != "RS256" or not isinstance(kid, str):
                raise invalid
            key = self._jwks.key(self._jwks_uri, kid)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._client_id,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except InvalidIdToken as exc:  # an unknown kid, or a key set that cannot be read
            raise Unauthenticated(f"a validation token is invalid: {exc.reason}", code=invalid.code) from None
        except jwt.PyJWTError:
            raise invalid from None
        tenant = str(claims.get("tid", ""))
        if not tenant or claims.get("iss") != f"https://sts.windows.net/{tenant}/":
            raise invalid
        if claims.get("appid") != GRAPH_NOTIFICATION_PUBLISHER:
            raise invalid
        return tenant


# --- our notification certificate ------------------------------------------------------------


@dataclass(frozen=True)
class NotificationCertificate:
    """The certificate Graph encrypts with (public part sent on subscribe) and its private key."""

    certificate_id: str
    certificate_base64: str
    private_key: RSAPrivateKey

    @classmethod
    def from_pem(cls, pem: str) -> NotificationCertificate:
        """The current certificate: the first in GRAPH_ENCRYPTION_CERTIFICATE."""
        return notification_certificates(pem)[0]


_CERTIFICATE_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def notification_certificates(pem: str) -> list[NotificationCertificate]:
    """Every certificate + RSA key pair in GRAPH_ENCRYPTION_CERTIFICATE, current first.

    Rotation: append the new pair, deploy, move it first (new subscriptions use it), keep the old pair
    until no subscription created with it is alive (≤ 24 h), then remove it.
    """
    problem = {"GRAPH_ENCRYPTION_CERTIFICATE": "needs PEM certificate(s), each with its RSA private key"}
    try:
        certificates = [x509.load_pem_x509_certificate(block.encode()) for block in _CERTIFICATE_BLOCK.findall(pem)]
        keys = [serialization.load_pem_private_key(block.encode(), password=None) for block in private_key_blocks(pem)]
    except ValueError:
        raise ConfigurationError(problem) from None
    rsa_keys = [key for key in keys if isinstance(key, RSAPrivateKey)]
    pairs: list[NotificationCertificate] = []
    for certificate in certificates:
        public = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key = next((k for k in rsa_keys if _public_der(k) == public), None)
        if key is None:
            raise ConfigurationError(problem)
        der = certificate.public_bytes(serialization.Encoding.DER)
        # The id names the certificate, so a new certificate gets a new id by itself.
        certificate_id = "cert-" + certificate.fingerprint(hashes.SHA256()).hex()[:40]
        pairs.append(NotificationCertificate(certificate_id, base64.b64encode(der).decode(), key))
    if not pairs:
        raise ConfigurationError(problem)
    return pairs


def _public_der(key: RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the batch ------------------------------------------------------------------------------


@dataclass
class Decoded:
    """What a notification batch yields: events to enqueue, lifecycle requests, and what was dropped."""

    events: list[VisitEvent] = field(default_factory=list)
    reauthorize: list[tuple[str, SubscriptionTarget]] = field(default_factory=list)  # (subscription id, target)
    dropped: int = 0


def parse_body(body: bytes) -> Mapping[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("notification body too large")
    try:
        data = parse_json(body)
    except MalformedJson:
        raise BadRequest("notification body is not JSON", code="malformed_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise BadRequest("notification body has no value array")
    return data


class NotificationDecoder:
    def __init__(
        self,
        client_states: ClientStates,
        validation_tokens: ValidationTokens,
        private_keys: Mapping[str, RSAPrivateKey],
        *,
        connector_secret: str,
    ) -> None:
        self._client_states = client_states
        self._tokens = validation_tokens
        self._keys = private_keys
        self._secret = connector_secret  # keys the fingerprint of a tenant user's object id (``user_hint``)

    def change_notifications(self, data: Mapping[str, Any]) -> Decoded:
        """Events from a change-notification batch. Raises ``Unauthenticated`` when validationTokens fail."""
        result = Decoded()
        items = self._ours(data["value"], result)
        if not items:
            return result
        tenants = self._tokens.vouched_tenants(data.get("validationTokens"))
        for item, target in items:
            if str(item.get("tenantId", "")) not in tenants:
                result.dropped += 1
                continue
            try:
                resource = decrypt_resource(EncryptedContent.from_notification(item), self._keys)
                if not isinstance(resource, Mapping):
                    raise BadRequest("notification resource is not an object")
                changes = participant_changes(resource, organizer_object_id=target.organizer_object_id)
            except BadRequest as exc:
                logger.warning("Dropped a notification for visit %s: %s", log_id(target.visit_key), exc.code)
                result.dropped += 1
                continue
            for change in changes:
                result.events.append(
                    VisitEvent(
                        configuration_id=target.configuration_id,
                        geography=target.geography.value,
                        visit_key=target.visit_key,
                        kind=change.kind,
                        role=change.role,
                        occurred_at=change.occurred_at,
                        source=Source.GRAPH,
                        attendee=attendee_key(change.graph_participant_id),
                        interpreter=change.interpreter,
                        member_hint=user_hint(self._secret, change.user_id) if change.user_id else change.member_hint,
                    )
                )
        return result

    def lifecycle_notifications(self, data: Mapping[str, Any]) -> Decoded:
        """Subscriptions to reauthorize (``reauthorizationRequired``); other lifecycle events are logged."""
        result = Decoded()
        for item, target in self._ours(data["value"], result):
            event = item.get("lifecycleEvent")
            subscription_id = item.get("subscriptionId")
            if event == "reauthorizationRequired" and isinstance(subscription_id, str) and subscription_id:
                result.reauthorize.append((subscription_id, target))
            else:
                logger.info("Lifecycle event %s for visit %s", str(event)[:40], log_id(target.visit_key))
        return result

    def _ours(self, items: Sequence[Any], result: Decoded) -> list[tuple[Mapping[str, Any], SubscriptionTarget]]:
        ours: list[tuple[Mapping[str, Any], SubscriptionTarget]] = []
        for item in items:
            target = self._client_states.check(item.get("clientState")) if isinstance(item, Mapping) else None
            if target is None:
                result.dropped += 1
                continue
            assert isinstance(item, Mapping)
            ours.append((item, target))
        if result.dropped:
            logger.warning("Dropped %d notification item(s) with a wrong clientState", result.dropped)
        return ours
