"""Ephemeral visit state: one Table row per appointment, purged within 24 hours.

Table ``Visits`` in the configuration's geography. PartitionKey = geography, RowKey = visit
key = HMAC(configuration id, appointment key), so the key reveals no EHR identifier. The row
holds the meeting (id, join URL, organizer), the Graph subscription, live presence per role,
the launch context references needed for writeback (ids only, never names or clinical
content), and the writeback claims that make EHR effects exactly-once.

Every change is an etag-guarded read-modify-write, retried on conflict, so concurrent
launches and queue workers never lose each other's updates.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.errors import Conflict
from shared.events import EventKind, Role
from shared.identifiers import keyed_id
from shared.settings import Geography
from shared.storage import Storage, storage_errors, utcnow

TABLE = "Visits"
LIFETIME = timedelta(hours=24)
MAX_CLAIMS = 400  # a visit sees tens of events; the cap bounds the row size (64 KiB per property)
_ATTEMPTS = 8
_BACKOFF = 0.005  # seconds, doubling per retry up to _MAX_BACKOFF: at most 0.23 s in all
_MAX_BACKOFF = 0.05


def appointment_key(*, csn: str | None, appointment: str | None, encounter: str | None) -> str:
    """The CSN if present, else the appointment id, else the encounter id."""
    for kind, value in (("csn", csn), ("appointment", appointment), ("encounter", encounter)):
        if value:
            return f"{kind}:{value}"
    raise ValueError("a visit needs a CSN, an appointment or an encounter")


def visit_key(secret: str, configuration_id: str, appointment_key_value: str) -> str:
    return keyed_id(secret, "visit", configuration_id, appointment_key_value)


@dataclass(frozen=True)
class Presence:
    state: EventKind
    at: datetime


@dataclass(frozen=True)
class VisitContext:
    """Launch-context references kept for writeback: ids only."""

    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None  # "Patient/456"
    provider: str | None = None  # "Practitioner/123"


@dataclass(frozen=True)
class Visit:
    geography: Geography
    key: str
    configuration_id: str
    expires_at: datetime
    context: VisitContext = field(default_factory=VisitContext)
    meeting_id: str | None = None
    join_web_url: str | None = None
    organizer_tenant_id: str | None = None
    organizer_object_id: str | None = None
    subscription_id: str | None = None
    subscription_expires_at: datetime | None = None
    presence: dict[Role, Presence] = field(default_factory=dict)
    # event id → "claimed:<iso>" | "done"
    writeback: dict[str, str] = field(default_factory=dict)
    etag: str | None = None

    @property
    def has_meeting(self) -> bool:
        return bool(self.meeting_id and self.join_web_url)


class VisitRepository:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def get(self, geography: Geography, key: str) -> Visit | None:
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            try:
                entity = account.table(TABLE).get_entity(geography.value, key)
            except ResourceNotFoundError:
                return None
        visit = _from_entity(geography, entity)
        return None if visit.expires_at <= utcnow() else visit

    def live(self, geography: Geography) -> list[Visit]:
        """Every unexpired visit of a geography (timers: subscription upkeep)."""
        account = self._storage.for_geography(geography)
        now = utcnow()
        with storage_errors(account.name):
            entities = account.table(TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": geography.value})
            visits = [_from_entity(geography, entity) for entity in entities]
        return [visit for visit in visits if visit.expires_at > now]

    def get_or_create(self, geography: Geography, key: str, configuration_id: str, context: VisitContext) -> Visit:
        """The live visit row, creating it (valid for 24 h) when there is none."""
        existing = self.get(geography, key)
        if existing is not None:
            return existing
        visit = Visit(geography, key, configuration_id, expires_at=utcnow() + LIFETIME, context=context)
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        with storage_errors(account.name):
            try:
                metadata = table.create_entity(_to_entity(visit))
            except ResourceExistsError:
                # Someone created it first, or an expired row is still waiting for the sweep.
                current = self.get(geography, key)
                if current is not None:
                    return current
                replaced = self._replace_expired(geography, key, visit)
                if replaced is None:  # another launch replaced it first: use theirs
                    return self.get_or_create(geography, key, configuration_id, context)
                metadata = replaced
        return replace(visit, etag=metadata.get("etag"))

    def _replace_expired(self, geography: Geography, key: str, visit: Visit) -> dict[str, Any] | None:
        """Replace an expired row, etag-guarded so two racing launches cannot overwrite each other."""
        table = self._storage.for_geography(geography).table(TABLE)
        try:
            stale = table.get_entity(geography.value, key)
        except ResourceNotFoundError:
            stale = None
        if stale is not None and _from_entity(geography, stale).expires_at > utcnow():
            return None  # another launch renewed it meanwhile: never replace a live visit
        try:
            if stale is None:
                return dict(table.create_entity(_to_entity(visit)))
            return dict(
                table.update_entity(
                    _to_entity(visit),
                    mode=UpdateMode.REPLACE,
                    etag=stale.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return None

    def update(self, visit: Visit, change: Callable[[Visit], Visit | None]) -> Visit:
        """Apply ``change`` with etag protection, re-reading and re-applying on conflict.

        ``change`` returns the new visit, or None when nothing needs writing.
        """
        account = self._storage.for_geography(visit.geography)
        table = account.table(TABLE)
        current: Visit | None = visit
        for attempt in range(_ATTEMPTS):
            if current is None:
                raise Conflict("This visit has ended. Please launch again.", code="visit_gone")
            changed = change(current)
            if changed is None:
                return current
            with storage_errors(account.name):
                try:
                    # REPLACE, not the default MERGE: a field set to None must really be cleared.
                    metadata = table.update_entity(
                        _to_entity(changed),
                        mode=UpdateMode.REPLACE,
                        etag=current.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return replace(changed, etag=metadata.get("etag"))
                except (ResourceModifiedError, ResourceNotFoundError):
                    if attempt + 1 == _ATTEMPTS:
                        break
                    # Jittered back-off, so writers that collided do not collide again at once; short,
                    # as async callers (subscription upkeep) run this on their event loop.
                    time.sleep(random.uniform(0, min(_MAX_BACKOFF, _BACKOFF * 2**attempt)))  # noqa: S311
                    current = self.get(visit.geography, visit.key)
        raise Conflict("The visit is changing too quickly; please try again.", code="visit_contention")


# --- pure changes, applied through VisitRepository.update -----------------------------------


_STATE_ORDER = {EventKind.LOBBY: 0, EventKind.CONNECTED: 1, EventKind.DISCONNECTED: 2}


def with_presence(role: Role, state: EventKind, at: datetime) -> Callable[[Visit], Visit | None]:
    """Record a role's state unless a newer fact is already recorded (events arrive out of order).

    Two facts at the same instant are ordered lobby → connected → disconnected, so the outcome
    does not depend on which one the queue delivers first.
    """

    def change(visit: Visit) -> Visit | None:
        current = visit.presence.get(role)
        if current is not None and (current.at, _STATE_ORDER[current.state]) >= (at, _STATE_ORDER[state]):
            return None
        return replace(visit, presence={**visit.presence, role: Presence(state, at)})

    return change


def with_meeting(
    *, meeting_id: str, join_web_url: str, organizer_tenant_id: str, organizer_object_id: str
) -> Callable[[Visit], Visit | None]:
    """Set the meeting once; the first organizer wins (the patient must find the same meeting)."""

    def change(visit: Visit) -> Visit | None:
        if visit.has_meeting:
            return None
        return replace(
            visit,
            meeting_id=meeting_id,
            join_web_url=join_web_url,
            organizer_tenant_id=organizer_tenant_id,
            organizer_object_id=organizer_object_id,
        )

    return change


def with_subscription(subscription_id: str, expires_at: datetime) -> Callable[[Visit], Visit | None]:
    """Record the visit's meetingCallEvents subscription (one per meeting; a newer one replaces it)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id == subscription_id and visit.subscription_expires_at == expires_at:
            return None
        return replace(visit, subscription_id=subscription_id, subscription_expires_at=expires_at)

    return change


def without_subscription(subscription_id: str) -> Callable[[Visit], Visit | None]:
    """Forget a deleted subscription (unless a newer one has replaced it meanwhile)."""

    def change(visit: Visit) -> Visit | None:
        if visit.subscription_id != subscription_id:
            return None
        return replace(visit, subscription_id=None, subscription_expires_at=None)

    return change


def claim_writeback(event_id: str, *, lease: timedelta, now: datetime) -> Callable[[Visit], Visit | None]:
    """Claim an event for writeback. Raises ``AlreadyWritten`` / ``ClaimedElsewhere`` when not ours."""

    def change(visit: Visit) -> Visit | None:
        status = visit.writeback.get(event_id)
        if status == "done":
            raise AlreadyWritten(event_id)
        if status and status.startswith("claimed:"):
            claimed_at = datetime.fromisoformat(status.removeprefix("claimed:"))
            if now - claimed_at < lease:
                raise ClaimedElsewhere(event_id)
        claims = _bounded({**visit.writeback, event_id: f"claimed:{now.isoformat()}"})
        return replace(visit, writeback=claims)

    return change


def mark_written(event_id: str) -> Callable[[Visit], Visit | None]:
    def change(visit: Visit) -> Visit | None:
        if visit.writeback.get(event_id) == "done":
            return None
        return replace(visit, writeback=_bounded({**visit.writeback, event_id: "done"}))

    return change


def release_claim(event_id: str) -> Callable[[Visit], Visit | None]:
    """Give a claim back after a failed attempt so the retry may claim it at once."""

    def change(visit: Visit) -> Visit | None:
        status = visit.writeback.get(event_id)
        if status is None or status == "done":
            return None
        return replace(visit, writeback={k: v for k, v in visit.writeback.items() if k != event_id})

    return change


class AlreadyWritten(Exception):  # noqa: N818 - an outcome, not a failure
    """The event's EHR effect is already recorded."""


class ClaimedElsewhere(Exception):  # noqa: N818
    """Another worker holds a live claim on this event."""


def _bounded(claims: dict[str, str]) -> dict[str, str]:
    if len(claims) <= MAX_CLAIMS:
        return claims
    return dict(list(claims.items())[-MAX_CLAIMS:])


# --- entity mapping --------------------------------------------------------------------------


def _to_entity(visit: Visit) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": visit.geography.value,
        "RowKey": visit.key,
        "ConfigurationId": visit.configuration_id,
        "ExpiresAt": visit.expires_at,
        "Context": json.dumps({k: v for k, v in vars(visit.context).items() if v}, separators=(",", ":")),
        "Presence": json.dumps(
            {role.value: {"state": p.state.value, "at": p.at.isoformat()} for role, p in visit.presence.items()},
            separators=(",", ":"),
        ),
        "Writeback": json.dumps(visit.writeback, separators=(",", ":")),
    }
    optional = {
        "MeetingId": visit.meeting_id,
        "JoinWebUrl": visit.join_web_url,
        "OrganizerTenantId": visit.organizer_tenant_id,
        "OrganizerObjectId": visit.organizer_object_id,
        "SubscriptionId": visit.subscription_id,
        "SubscriptionExpiresAt": visit.subscription_expires_at,
    }
    entity.update({k: v for k, v in optional.items() if v is not None})
    return entity


def _from_entity(geography: Geography, entity: Any) -> Visit:
    presence = {
        Role(role): Presence(EventKind(value["state"]), datetime.fromisoformat(value["at"]))
        for role, value in json.loads(entity.get("Presence") or "{}").items()
    }
    return Visit(
        geography=geography,
        key=entity["RowKey"],
        configuration_id=entity["ConfigurationId"],
        expires_at=entity["ExpiresAt"],
        context=VisitContext(**json.loads(entity.get("Context") or "{}")),
        meeting_id=entity.get("MeetingId"),
        join_web_url=entity.get("JoinWebUrl"),
        organizer_tenant_id=entity.get("OrganizerTenantId"),
        organizer_object_id=entity.get("OrganizerObjectId"),
        subscription_id=entity.get("SubscriptionId"),
        subscription_expires_at=entity.get("SubscriptionExpiresAt"),
        presence=presence,
        writeback=json.loads(entity.get("Writeback") or "{}"),
        etag=entity.metadata.get("etag"),
    )
