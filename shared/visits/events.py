"""Visit events: the queue message model and its identity.

An event is a participant's state change in a visit (in the lobby, connected, disconnected),
from a launch or from Graph ``meetingCallEvents``. Its id is derived from what it says, so the same
fact delivered twice (Graph retries, at-least-once queues) has the same id and collapses downstream.

On the queue (the app's account, one connection for the trigger) an event carries no EHR identifier
in clear: a Graph event names only the visit (an HMAC key) and the role, and the worker reads the EHR
references from the visit's sealed context in the geography; a launch event carries its own launch's
references (who launched, CSN, appointment, encounter) as one sealed value (``sealed``), bound to its
geography, visit and event id. ``participant``/``csn``/``appointment``/``encounter`` live in memory only:
the worker fills them before the EHR adapter is called.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

from shared.kernel.errors import InvalidEvent
from shared.kernel.identifiers import keyed_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, operational
from shared.kernel.json_input import MalformedJson, parse_json

SCHEMA_VERSION = 2
LEGACY_VERSION = 1  # clear references; still read, so messages queued by an earlier release are not lost
SEALED_PURPOSE = "writeback-event"

_MESSAGE_FIELDS = (
    Field("v", Classification.OPERATIONAL, Protection.CLEAR, "schema version"),
    Field("id", Classification.OPERATIONAL, Protection.HASHED, "event id: SHA-256 of what the event says"),
    Field("configurationId", Classification.TENANT, Protection.CLEAR),
    Field("geography", Classification.OPERATIONAL, Protection.CLEAR),
    Field("visitKey", Classification.EHR_ID, Protection.HMAC, "the visit's row key"),
    *operational("kind", "role", "occurredAt", "source"),
    Field(
        "attendee",
        Classification.OPERATIONAL,
        Protection.HASHED,
        "Graph events: SHA-256 of the call participant's id (a random call-leg id), so the usage report and a "
        "group visit's panel tell the participants of one meeting apart; part of the event id (two call legs "
        "at one instant are two facts)",
    ),
    Field(
        "sealed",
        Classification.EHR_ID,
        Protection.SEALED,
        "a launch event's references (who launched, CSN, appointment, encounter); absent on Graph events: the "
        "worker reads the visit's context",
    ),
    Field("interpreter", Classification.OPERATIONAL, Protection.CLEAR, 'the participant joined as "Interpreter"'),
    Field(
        "member",
        Classification.OPERATIONAL,
        Protection.CLEAR,
        "Graph events: what may tie the participant to their own visit in a group meeting: the visit number a guest "
        "typed in their name (random digits the connector offered), or HMAC(CONNECTOR_SECRET) of a tenant user's "
        "object id; never a name; not part of the event id",
    ),
)
# An unparseable message is kept in the poison queue only sealed whole (``FailureLog.record_invalid``).
_INVALID_FIELD = Field("invalid", Classification.EHR_ID, Protection.SEALED, "an unparseable message, sealed whole")
QUEUE_SETTING = "%WRITEBACK_QUEUE_NAME%"
INVENTORY = (
    Store(
        QUEUE_SETTING,
        Kind.QUEUE,
        Account.APP,
        "visit events from launches and Graph notifications, for the writeback worker (queue trigger binds here)",
        _MESSAGE_FIELDS,
        "seconds: until the writeback worker completes it (at most 7 days, the queue's message TTL)",
        "the Functions host deletes it when writeback_events returns; after 5 failed attempts it moves it to "
        "the poison queue",
    ),
    Store(
        QUEUE_SETTING + "-poison",
        Kind.QUEUE,
        Account.APP,
        "events that failed permanently or 5 times, kept for replay once the cause is fixed",
        (*_MESSAGE_FIELDS, _INVALID_FIELD),
        "until replayed, at most 7 days (the queue's message TTL)",
        "python -m tools.requeue_poison moves them back; Azure Storage deletes them after 7 days",
    ),
)


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


@dataclass(frozen=True)
class VisitEvent:
    configuration_id: str
    geography: str
    visit_key: str
    kind: EventKind
    role: Role
    occurred_at: datetime
    source: Source
    participant: str | None = None  # "Practitioner/123" | "Patient/456": in memory only, never serialized
    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    department: str | None = None  # a launch's confirmed departmentId: in memory only, sealed like the references
    id: str = ""
    sealed: str | None = None  # launch events: their launch context, sealed (see ``shared.visits.sealed_context``)
    # Graph events: ``attendee_key`` of the Teams call participant (a fingerprint of its call-leg id, never a
    # name): the report's per-person facts and a group meeting's panel rows; ``interpreter``: they joined under the
    # name "Interpreter" (an interpreter's guest link asks them to).
    attendee: str | None = None
    interpreter: bool = False
    member_hint: str | None = None  # Graph events: ``shared.visits.members`` hint (a visit number, a user fingerprint)

    def __post_init__(self) -> None:
        if self.occurred_at.tzinfo is None:
            raise InvalidEvent("occurredAt must carry a time zone")
        if not self.id:
            object.__setattr__(self, "id", event_id(self))

    @property
    def references(self) -> dict[str, str]:
        """The EHR references known in memory (launch context), without empty ones."""
        values = {
            "participant": self.participant,
            "csn": self.csn,
            "appointment": self.appointment,
            "encounter": self.encounter,
            "department": self.department,
        }
        return {k: v for k, v in values.items() if v}

    def to_json(self) -> str:
        """The queue message: ids, the role, the time and (launch events) the sealed context; no clear reference."""
        data: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "configurationId": self.configuration_id,
            "geography": self.geography,
            "visitKey": self.visit_key,
            "kind": self.kind.value,
            "role": self.role.value,
            "occurredAt": _iso(self.occurred_at),
            "source": self.source.value,
        }
        if self.sealed:
            data["sealed"] = self.sealed
        if self.attendee:
            data["attendee"] = self.attendee
        if self.interpreter:
            data["interpreter"] = True
        if self.member_hint:
            data["member"] = self.member_hint
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> VisitEvent:
        """Parse and validate a queue message; anything malformed raises ``InvalidEvent``."""
        try:
            data = parse_json(text)
        except MalformedJson:
            raise InvalidEvent("event is not JSON") from None
        if not isinstance(data, dict) or data.get("v") not in (SCHEMA_VERSION, LEGACY_VERSION):
            raise InvalidEvent("unsupported event version")
        legacy = data["v"] == LEGACY_VERSION
        try:
            event = cls(
                configuration_id=_required_text(data, "configurationId"),
                geography=_required_text(data, "geography"),
                visit_key=_required_text(data, "visitKey"),
                kind=EventKind(data["kind"]),
                role=Role(data["role"]),
                occurred_at=datetime.fromisoformat(_required_text(data, "occurredAt")),
                source=Source(data["source"]),
                participant=_optional_text(data, "participant") if legacy else None,
                csn=_optional_text(data, "csn") if legacy else None,
                appointment=_optional_text(data, "appointment") if legacy else None,
                encounter=_optional_text(data, "encounter") if legacy else None,
                sealed=None if legacy else _optional_text(data, "sealed", limit=4096),
                attendee=_optional_text(data, "attendee", limit=64),
                interpreter=data.get("interpreter") is True,
                member_hint=_optional_text(data, "member", limit=64),
            )
        except (KeyError, ValueError, TypeError):
            raise InvalidEvent("event is missing or has invalid fields") from None
        if data.get("id") not in (None, event.id):
            raise InvalidEvent("event id does not match its content")
        return event

    def with_context(self, **changes: Unpack[EventContext]) -> VisitEvent:
        """A copy with launch-context fields filled in. Identity is unchanged by context, so the copy keeps the
        id and skips ``__init__`` and its checks (those of the event as parsed hold): every event is copied so."""
        copy = object.__new__(VisitEvent)
        copy.__dict__.update(self.__dict__, **changes)
        return copy


class EventContext(TypedDict, total=False):
    """What ``VisitEvent.with_context`` may fill in: the event's references and who they name, none of its id."""

    participant: str | None
    csn: str | None
    appointment: str | None
    encounter: str | None
    department: str | None
    interpreter: bool


def event_id(event: VisitEvent) -> str:
    """Deterministic id from (visit, role, kind, occurredAt, source[, attendee]): duplicates collapse."""
    moment = _iso(event.occurred_at, "milliseconds")
    parts = (event.visit_key, event.role.value, event.kind.value, moment, event.source.value)
    # A group meeting's participants of one role are told apart by their attendee (none: ids as they always were).
    material = "\x1f".join((*parts, event.attendee) if event.attendee else parts)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def attendee_key(participant_id: str) -> str | None:
    """An event's ``attendee``: a short SHA-256 of a Graph call participant's id (random per call leg)."""
    return hashlib.sha256(participant_id.encode()).hexdigest()[:16] if participant_id else None


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


def _optional_text(data: Mapping[str, Any], key: str, *, limit: int = 512) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(key)
    return value


# --- member hints (``shared.visits.members``): what may tie a Teams participant to their own visit -------------

LABEL_DIGITS = 4
_LABEL_IN_NAME = re.compile(rf"(?<!\d)(\d{{{LABEL_DIGITS}}})(?!\d)")


def label_hint(label: str) -> str:
    return f"label:{label}"


def user_hint(secret: str, object_id: str) -> str:
    """A clinician's hint: a keyed fingerprint (``CONNECTOR_SECRET``) of the Entra object id Teams reports for them,
    never the id itself nor a plain hash anyone with directory access could recompute."""
    return "user:" + keyed_id(secret, "teams-user", object_id.strip().lower())[:32]


def label_in_name(display_name: str) -> str | None:
    """The visit number a participant typed in their Teams name: exactly one run of four digits, else None."""
    found = _LABEL_IN_NAME.findall(display_name)
    return found[0] if len(found) == 1 else None
