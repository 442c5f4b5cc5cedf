"""Visit rows: table ``Visits`` in the configuration's geography, purged within 24 hours.

PartitionKey = geography, RowKey = visit key = HMAC(configuration id, appointment key), so the key
reveals no EHR identifier. ``Context`` (the launch's EHR references) is sealed under ``SEALING_KEYS`` for
``Visits/<geography>/<visit key>``; a write seals it again when it changed or was sealed with a retiring key
(an unchanged context keeps its sealed text), so after a key rotation a row moves to the new key on its next
change. Every change is an etag-guarded read-modify-write, retried on conflict, so concurrent launches and queue
workers never lose each other's updates.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.kernel.clock import utcnow
from shared.kernel.errors import Conflict, SealedValueInvalid
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage, insert_row, storage_errors
from shared.visits.events import EventKind, Role
from shared.visits.model import (
    Attendee,
    Presence,
    RosterEntry,
    StoredColumns,
    Visit,
    VisitContext,
    WaitingRoom,
    evolve,
    has_context,
)
from shared.visits.sealed_context import open_context, open_waiting_room, seal_context, seal_waiting_room

TABLE = "Visits"
LIFETIME = timedelta(hours=24)
_ATTEMPTS = 8
_BACKOFF = 0.005  # seconds, doubling per retry up to _MAX_BACKOFF: at most 0.23 s in all
_MAX_BACKOFF = 0.05

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "one row per appointment: meeting, subscription, presence, and what writeback needs",
        (
            key("PartitionKey", "geography"),
            Field("RowKey", Classification.EHR_ID, Protection.HMAC, "HMAC(configuration id, appointment key)"),
            Field("ConfigurationId", Classification.TENANT, Protection.CLEAR),
            Field(
                "Context",
                Classification.EHR_ID,
                Protection.SEALED,
                "CSN, appointment, encounter, Patient/..., Practitioner/..., whether the EHR confirmed them, and each "
                "clinician who launched the visit (SHA-256 of their Microsoft 365 object id, Practitioner/..., "
                "booked as interpreter or not); removed once the meeting has ended and its writebacks are done",
            ),
            Field("Presence", Classification.OPERATIONAL, Protection.CLEAR, "role -> state, time"),
            Field(
                "WaitingRoom",
                Classification.PERSONAL,
                Protection.SEALED,
                "the organization's display name and the appointment's start, read from the EHR at a patient's "
                "launch for their waiting page; removed when the meeting is created, or with the context",
            ),
            Field(
                "Roster",
                Classification.OPERATIONAL,
                Protection.CLEAR,
                "role -> Teams roster state, since when, lobby wait start (the provider's panel)",
            ),
            Field("Launched", Classification.OPERATIONAL, Protection.CLEAR, "role -> time of its latest launch"),
            Field(
                "Attendees",
                Classification.OPERATIONAL,
                Protection.CLEAR,
                "group visits' rows, and a single visit's further clinicians: a fingerprint of each Teams call "
                'participant -> role, roster state, since when, first seen, whether they joined as "Interpreter", '
                "the RowKey of their own visit once tied to it (no name)",
            ),
            Field(
                "MeetingId",
                Classification.PERSONAL,
                Protection.CLEAR,
                "Teams meeting id (encodes the organizer's object id)",
            ),
            Field("JoinWebUrl", Classification.CREDENTIAL, Protection.CLEAR, "opens the meeting's lobby"),
            Field("OrganizerTenantId", Classification.TENANT, Protection.CLEAR),
            Field("OrganizerObjectId", Classification.PERSONAL, Protection.CLEAR, "Entra object id of the organizer"),
            Field(
                "GroupKey",
                Classification.EHR_ID,
                Protection.HMAC,
                "group visits: RowKey of the group's row, HMAC(configuration id, conference id); on the group's "
                "own row its RowKey",
            ),
            Field(
                "Members",
                Classification.EHR_ID,
                Protection.HMAC,
                "a group's row: HMAC(group, a patient's visit number or a fingerprint of a clinician's object id) -> "
                "the RowKey of that participant's own visit, so their Teams facts are written for their own CSN",
            ),
            Field(
                "ReportFacts",
                Classification.OPERATIONAL,
                Protection.HASHED,
                "the usage report's facts of the visit per UTC day (times, roles, keyed organizer id, department, "
                "SHA-256 call-leg ids; the CSN only when opted in, sealed), copied to ReportVisits by the report's "
                "timer; while the row lives (24 hours) the same facts are in both tables, so the visit and its "
                "report row can be matched by them in that time",
            ),
            *operational("SubscriptionId", "SubscriptionExpiresAt", "ExpiresAt"),
        ),
        "24 hours; the context only until the meeting has ended and its writebacks are done",
        "the writeback worker removes the context; the sweep timer deletes the row after ExpiresAt",
    ),
)


class VisitRepository:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._storage = storage
        self._sealer = sealer

    def get(self, geography: Geography, key: str) -> Visit | None:
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            try:
                entity = account.table(TABLE).get_entity(geography.value, key)
            except ResourceNotFoundError:
                return None
        visit = self._from_entity(geography, entity)
        return None if visit.expires_at <= utcnow() else visit

    def live(self, geography: Geography) -> list[Visit]:
        """Every unexpired visit of a geography (timers: subscription upkeep)."""
        account = self._storage.for_geography(geography)
        now = utcnow()
        with storage_errors(account.name):
            entities = account.table(TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": geography.value})
            visits = [self._from_entity(geography, entity) for entity in entities]
        return [visit for visit in visits if visit.expires_at > now]

    def report_facts_since(self, geography: Geography, since: datetime) -> list[tuple[str, str, str]]:
        """(visit key, configuration id, report facts) of the rows holding report facts and written since ``since``
        (the Table's own ``Timestamp``): what the usage report's timer copies (``shared.reports.fold``)."""
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            entities = account.table(TABLE).query_entities(
                "PartitionKey eq @pk and Timestamp ge @since",
                parameters={"pk": geography.value, "since": since},
                select=["RowKey", "ConfigurationId", "ReportFacts"],
            )
            return [
                (str(e["RowKey"]), str(e["ConfigurationId"]), str(e["ReportFacts"]))
                for e in entities
                if e.get("ReportFacts")
            ]

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
                metadata = insert_row(table, self._to_entity(visit))
            except ResourceExistsError:
                # Someone created it first, or an expired row is still waiting for the sweep.
                current = self.get(geography, key)
                if current is not None:
                    return current
                replaced = self._replace_expired(geography, key, visit)
                if replaced is None:  # another launch replaced it first: use theirs
                    return self.get_or_create(geography, key, configuration_id, context)
                metadata = replaced
        return evolve(visit, etag=metadata.get("etag"))

    def _replace_expired(self, geography: Geography, key: str, visit: Visit) -> dict[str, Any] | None:
        """Replace an expired row, etag-guarded so two racing launches cannot overwrite each other."""
        table = self._storage.for_geography(geography).table(TABLE)
        try:
            stale = table.get_entity(geography.value, key)
        except ResourceNotFoundError:
            stale = None
        if stale is not None and self._from_entity(geography, stale).expires_at > utcnow():
            return None  # another launch renewed it meanwhile: never replace a live visit
        try:
            if stale is None:
                return insert_row(table, self._to_entity(visit))
            # The usage report's facts folded since the timer's last copy go on with the new row (the timer copies
            # them with it, merging), rather than with the replaced row.
            carried = evolve(visit, report=visit.report or stale.get("ReportFacts") or None)
            return dict(
                table.update_entity(
                    self._to_entity(carried),
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
                        self._to_entity(changed),
                        mode=UpdateMode.REPLACE,
                        etag=current.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return evolve(changed, etag=metadata.get("etag"))
                except (ResourceModifiedError, ResourceNotFoundError):
                    if attempt + 1 == _ATTEMPTS:
                        break
                    # Jittered back-off, so writers that collided do not collide again at once; short,
                    # as async callers (subscription upkeep) run this on their event loop.
                    time.sleep(random.uniform(0, min(_MAX_BACKOFF, _BACKOFF * 2**attempt)))  # noqa: S311
                    current = self.get(visit.geography, visit.key)
        raise Conflict("The visit is changing too quickly; please try again.", code="visit_contention")

    # --- entity mapping --------------------------------------------------------------------------

    def _to_entity(self, visit: Visit) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "PartitionKey": visit.geography.value,
            "RowKey": visit.key,
            "ConfigurationId": visit.configuration_id,
            "ExpiresAt": visit.expires_at,
            "Context": self._context_value(visit),
            "Presence": _kept(visit, "Presence", visit.presence)
            or json.dumps(
                {role.value: {"state": p.state.value, "at": p.at.isoformat()} for role, p in visit.presence.items()},
                separators=(",", ":"),
            ),
            "Roster": _kept(visit, "Roster", visit.roster)
            or json.dumps(
                {role.value: _roster_value(entry) for role, entry in visit.roster.items()}, separators=(",", ":")
            ),
            "Launched": _kept(visit, "Launched", visit.launched)
            or json.dumps({role.value: at.isoformat() for role, at in visit.launched.items()}, separators=(",", ":")),
        }
        optional = {
            "MeetingId": visit.meeting_id,
            "JoinWebUrl": visit.join_web_url,
            "OrganizerTenantId": visit.organizer_tenant_id,
            "OrganizerObjectId": visit.organizer_object_id,
            "SubscriptionId": visit.subscription_id,
            "SubscriptionExpiresAt": visit.subscription_expires_at,
            "WaitingRoom": self._waiting_room_value(visit),
            "GroupKey": visit.group_key,
            "Attendees": (_kept(visit, "Attendees", visit.attendees) or _attendees_value(visit))
            if visit.attendees
            else None,
            "Members": (_kept(visit, "Members", visit.members) or json.dumps(visit.members, separators=(",", ":")))
            if visit.members
            else None,
            "ReportFacts": visit.report or None,
        }
        entity.update({k: v for k, v in optional.items() if v is not None})
        return entity

    def _from_entity(self, geography: Geography, entity: Any) -> Visit:
        key = entity["RowKey"]
        read: dict[str, tuple[object, str]] = {}  # ``Visit.stored``: what a write may store again as it is
        stored = entity.get("Context") or ""
        unreadable = None
        try:
            context = open_context(self._sealer, stored, geography=geography.value, key=key)
            if stored and not stored.startswith("{"):  # sealed (a clear value of an earlier release is sealed anew)
                read["Context"] = (context, stored)
        except SealedValueInvalid:
            context, unreadable = VisitContext(), stored
        text = entity.get("Presence") or "{}"
        presence = {
            Role(role): Presence(EventKind(value["state"]), datetime.fromisoformat(value["at"]))
            for role, value in json.loads(text).items()
        }
        read["Presence"] = (presence, text)
        # Rows written before the panel told launches from Teams facts have neither (they read as empty).
        text = entity.get("Roster") or "{}"
        roster = {Role(role): _roster_entry(value) for role, value in json.loads(text).items()}
        read["Roster"] = (roster, text)
        text = entity.get("Launched") or "{}"
        launched = {Role(role): datetime.fromisoformat(at) for role, at in json.loads(text).items()}
        read["Launched"] = (launched, text)
        waiting_room = self._waiting_room(geography, entity)
        if waiting_room is not None:
            read["WaitingRoom"] = (waiting_room, entity["WaitingRoom"])
        attendees = _attendees(entity.get("Attendees"))
        if attendees:
            read["Attendees"] = (attendees, entity["Attendees"])
        members = json.loads(entity["Members"]) if entity.get("Members") else {}
        if members:
            read["Members"] = (members, entity["Members"])
        return Visit(
            geography=geography,
            key=key,
            configuration_id=entity["ConfigurationId"],
            expires_at=entity["ExpiresAt"],
            context=context,
            meeting_id=entity.get("MeetingId"),
            join_web_url=entity.get("JoinWebUrl"),
            organizer_tenant_id=entity.get("OrganizerTenantId"),
            organizer_object_id=entity.get("OrganizerObjectId"),
            subscription_id=entity.get("SubscriptionId"),
            subscription_expires_at=entity.get("SubscriptionExpiresAt"),
            presence=presence,
            roster=roster,
            launched=launched,
            etag=entity.metadata.get("etag"),
            unreadable_context=unreadable,
            waiting_room=waiting_room,
            group_key=entity.get("GroupKey") or None,
            attendees=attendees,
            members=members,
            report=entity.get("ReportFacts") or None,
            stored=StoredColumns(geography.value, key, read),
        )

    def _waiting_room_value(self, visit: Visit) -> str | None:
        if visit.waiting_room is None:
            return None
        kept = self._kept_sealed(visit, "WaitingRoom", visit.waiting_room)
        if kept is not None:
            return kept
        return seal_waiting_room(self._sealer, visit.waiting_room, geography=visit.geography.value, key=visit.key)

    def _waiting_room(self, geography: Geography, entity: Any) -> WaitingRoom | None:
        stored = entity.get("WaitingRoom")
        if not stored:
            return None
        try:
            return open_waiting_room(self._sealer, stored, geography=geography.value, key=entity["RowKey"])
        except SealedValueInvalid:
            return None  # what a page shows, nothing more: a value that does not open is shown as nothing

    def _context_value(self, visit: Visit) -> str:
        if visit.unreadable_context is not None and not has_context(visit):
            return visit.unreadable_context
        kept = self._kept_sealed(visit, "Context", visit.context)
        if kept is not None:
            return kept
        return seal_context(self._sealer, visit.context, geography=visit.geography.value, key=visit.key)

    def _kept_sealed(self, visit: Visit, column: str, value: object) -> str | None:
        """A sealed column's text as read (``_kept``), unless a retiring key sealed it: then it is sealed anew."""
        kept = _kept(visit, column, value)
        return kept if kept is not None and not self._sealer.needs_resealing(kept) else None


def _kept(visit: Visit, column: str, value: object) -> str | None:
    """The column's text as read when ``value`` is still the very object read from it (``Visit.stored``)."""
    return visit.stored.text(visit, column, value) if visit.stored is not None else None


def _roster_value(entry: RosterEntry) -> dict[str, str]:
    value = {"state": entry.state.value, "since": entry.since.isoformat(), "at": entry.at.isoformat()}
    if entry.lobby_since is not None:
        value["lobby"] = entry.lobby_since.isoformat()
    return value


def _roster_entry(value: dict[str, str]) -> RosterEntry:
    lobby = value.get("lobby")
    return RosterEntry(
        EventKind(value["state"]),
        since=datetime.fromisoformat(value["since"]),
        at=datetime.fromisoformat(value["at"]),
        lobby_since=datetime.fromisoformat(lobby) if lobby else None,
    )


def _attendees_value(visit: Visit) -> str:
    return json.dumps(
        {
            key: {
                "role": a.role.value,
                "entry": _roster_value(a.entry),
                "first": a.first_seen.isoformat(),
                **({"interpreter": True} if a.interpreter else {}),
                **({"member": a.member} if a.member else {}),
            }
            for key, a in visit.attendees.items()
        },
        separators=(",", ":"),
    )


def _attendees(stored: Any) -> dict[str, Attendee]:
    if not stored:
        return {}
    return {
        key: Attendee(
            Role(value["role"]),
            _roster_entry(value["entry"]),
            datetime.fromisoformat(value["first"]),
            value.get("interpreter") is True,
            value.get("member") or None,
        )
        for key, value in json.loads(stored).items()
    }
