"""Visit events: the queue message model, its identity, and Graph change-notification decoding.

An event is a participant's state change in a visit (in the lobby, connected, disconnected),
from a launch or from Graph ``meetingCallEvents``. It carries references and ids only — no
names, no clinical content. Its id is derived from what it says, so the same fact delivered
twice (Graph retries, at-least-once queues) has the same id and collapses downstream.

Rich notifications are decrypted as Microsoft Graph documents it: RSA-OAEP (SHA-1) unwraps a
symmetric key; HMAC-SHA256 of the ciphertext under that key must equal ``dataSignature``;
AES-CBC with IV = the key's first 16 bytes and PKCS7 padding yields the JSON resource.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.errors import BadRequest

SCHEMA_VERSION = 1


class EventKind(enum.StrEnum):
    LOBBY = "lobby"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class Role(enum.StrEnum):
    PROVIDER = "provider"
    PATIENT = "patient"
    STAFF = "staff"


class Source(enum.StrEnum):
    LAUNCH = "launch"
    GRAPH = "graph"


class InvalidEvent(BadRequest):
    """A queue message that is not a valid event: permanent, never worth a retry."""

    code = "invalid_event"


@dataclass(frozen=True)
class VisitEvent:
    configuration_id: str
    geography: str
    visit_key: str
    kind: EventKind
    role: Role
    occurred_at: datetime
    source: Source
    participant: str | None = None  # "Practitioner/123" | "Patient/456" from the launch context
    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise InvalidEvent("occurredAt must carry a time zone")
        if not self.id:
            object.__setattr__(self, "id", event_id(self))

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": SCHEMA_VERSION,
                "id": self.id,
                "configurationId": self.configuration_id,
                "geography": self.geography,
                "visitKey": self.visit_key,
                "kind": self.kind.value,
                "role": self.role.value,
                "participant": self.participant,
                "csn": self.csn,
                "appointment": self.appointment,
                "encounter": self.encounter,
                "occurredAt": _iso(self.occurred_at),
                "source": self.source.value,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> VisitEvent:
        """Parse and validate a queue message; anything malformed raises ``InvalidEvent``."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise InvalidEvent("event is not JSON") from None
        if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
            raise InvalidEvent("unsupported event version")
        try:
            event = cls(
                configuration_id=_required_text(data, "configurationId"),
                geography=_required_text(data, "geography"),
                visit_key=_required_text(data, "visitKey"),
                kind=EventKind(data["kind"]),
                role=Role(data["role"]),
                occurred_at=datetime.fromisoformat(_required_text(data, "occurredAt")),
                source=Source(data["source"]),
                participant=_optional_text(data, "participant"),
                csn=_optional_text(data, "csn"),
                appointment=_optional_text(data, "appointment"),
                encounter=_optional_text(data, "encounter"),
            )
        except (KeyError, ValueError, TypeError):
            raise InvalidEvent("event is missing or has invalid fields") from None
        if data.get("id") not in (None, event.id):
            raise InvalidEvent("event id does not match its content")
        return event

    def with_context(self, **changes: Any) -> VisitEvent:
        """A copy with launch-context fields filled in (identity is unchanged by context)."""
        return replace(self, **changes)


def event_id(event: VisitEvent) -> str:
    """Deterministic id from (visit, role, kind, occurredAt, source): duplicates collapse."""
    moment = _iso(event.occurred_at, "milliseconds")
    material = "\x1f".join((event.visit_key, event.role.value, event.kind.value, moment, event.source.value))
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _iso(moment: datetime, timespec: str = "microseconds") -> str:
    """``occurredAt`` keeps microseconds: a join and a leave in the same millisecond must stay ordered.

    The id hashes milliseconds, as it always has, so messages queued by an earlier release keep
    their ids (and their done-marks) through an upgrade; a join and a leave differ by kind anyway.
    """
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value or len(value) > 512:
        raise ValueError(key)
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 512:
        raise ValueError(key)
    return value


# --- Graph rich notifications --------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedContent:
    data: bytes
    data_signature: bytes
    data_key: bytes
    certificate_id: str

    @classmethod
    def from_notification(cls, item: Mapping[str, Any]) -> EncryptedContent:
        try:
            content = item["encryptedContent"]
            return cls(
                data=base64.b64decode(content["data"], validate=True),
                data_signature=base64.b64decode(content["dataSignature"], validate=True),
                data_key=base64.b64decode(content["dataKey"], validate=True),
                certificate_id=str(content["encryptionCertificateId"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BadRequest("notification has no valid encryptedContent") from None


def decrypt_resource(content: EncryptedContent, keys_by_certificate_id: Mapping[str, RSAPrivateKey]) -> Any:
    """Decrypt and authenticate a rich notification's resource data (Graph's documented scheme)."""
    private_key = keys_by_certificate_id.get(content.certificate_id)
    if private_key is None:
        raise BadRequest("notification was encrypted for an unknown certificate")
    try:
        symmetric_key = private_key.decrypt(
            content.data_key,
            asymmetric_padding.OAEP(
                mgf=asymmetric_padding.MGF1(algorithm=hashes.SHA1()),  # noqa: S303 - Graph's documented scheme
                algorithm=hashes.SHA1(),  # noqa: S303
                label=None,
            ),
        )
    except ValueError:
        raise BadRequest("notification key could not be decrypted") from None
    expected = hmac.new(symmetric_key, content.data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, content.data_signature):
        raise BadRequest("notification signature does not match")
    try:
        decryptor = Cipher(algorithms.AES(symmetric_key), modes.CBC(symmetric_key[:16])).decryptor()
        padded = decryptor.update(content.data) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
        return json.loads(plaintext)
    except ValueError:
        raise BadRequest("notification content could not be decrypted") from None


@dataclass(frozen=True)
class ParticipantChange:
    """One participant's new state from a ``meetingCallEvents`` resource."""

    graph_participant_id: str
    kind: EventKind
    role: Role
    occurred_at: datetime


def participant_changes(call_event: Mapping[str, Any], *, organizer_object_id: str) -> list[ParticipantChange]:
    """Map a decrypted callEvent (callStarted / rosterUpdated / callEnded) to participant changes.

    Tenant users are the provider (the organizer) or staff; guests and anonymous joiners are
    the patient. ``isInLobby`` true → lobby; false → connected; ``removedState`` → disconnected.
    callEnded disconnects everyone listed; callStarted alone says nothing about anyone.
    """
    event_type = str(call_event.get("eventType", ""))
    occurred_at = _parse_time(call_event.get("eventDateTime"))
    participants = call_event.get("participants@delta") or call_event.get("participants") or []
    if not isinstance(participants, list):
        raise BadRequest("callEvent participants are malformed")
    changes: list[ParticipantChange] = []
    for participant in participants:
        if not isinstance(participant, Mapping):
            continue
        role = _role_of(participant, organizer_object_id)
        if event_type == "callEnded" or participant.get("removedState"):
            kind = EventKind.DISCONNECTED
        elif event_type in ("rosterUpdated", "callStarted"):
            kind = EventKind.LOBBY if participant.get("isInLobby") else EventKind.CONNECTED
        else:
            continue
        changes.append(ParticipantChange(str(participant.get("id", "")), kind, role, occurred_at))
    return changes


def _role_of(participant: Mapping[str, Any], organizer_object_id: str) -> Role:
    info = participant.get("info")
    identity = info.get("identity") if isinstance(info, Mapping) else None
    user = identity.get("user") if isinstance(identity, Mapping) else None
    if isinstance(user, Mapping) and user.get("id"):
        return Role.PROVIDER if str(user["id"]).lower() == organizer_object_id.lower() else Role.STAFF
    return Role.PATIENT


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadRequest("callEvent has no eventDateTime")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("callEvent eventDateTime is malformed") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def client_state_matches(items: Iterable[Mapping[str, Any]], expected: str) -> list[Mapping[str, Any]]:
    """The notification items whose ``clientState`` equals ours (constant-time compare)."""
    wanted = expected.encode()
    return [
        item
        for item in items
        if isinstance(item.get("clientState"), str) and hmac.compare_digest(item["clientState"].encode(), wanted)
    ]
