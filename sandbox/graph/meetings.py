"""Online meetings and their calls: identity, settings, lobby rules and the live roster.

A meeting is identified by (tenant, organizer, externalId), as createOrGet documents. Its call starts
with the first join and ends when the organizer ends it or the last participant leaves; every roster
change is reported to ``on_event`` (which turns it into ``meetingCallEvents`` notifications).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.seed import Directory, User

LEFT_CALL = "Participant has left the meeting call."

LOBBY_SCOPES = (
    "organizer",
    "organization",
    "organizationAndFederated",
    "everyone",
    "invited",
    "organizationExcludingGuests",
)
EVOLVABLE_SCOPES = ("invited", "organizationExcludingGuests")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def graph_time(value: dt.datetime) -> str:
    """Graph's timestamp shape: seven fractional digits and ``Z``."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def default_settings() -> dict[str, Any]:
    """The documented defaults of a meeting created by createOrGet."""
    return {
        "lobbyBypassSettings": {"scope": "organization", "isDialInBypassEnabled": False},
        "allowedPresenters": "everyone",
        "isEntryExitAnnounced": True,
        "allowMeetingChat": "enabled",
        "allowTeamworkReactions": True,
        "allowAttendeeToEnableCamera": True,
        "allowAttendeeToEnableMic": True,
        "allowedLobbyAdmitters": "organizerAndCoOrganizersAndPresenters",
        "allowTranscription": True,
        "recordAutomatically": False,
    }


@dataclass
class Participant:
    """One join of one person (a user joining twice is two participants, as in Teams)."""

    id: str
    token: str  # secret that lets the meeting page act for this participant
    display_name: str
    user: User | None  # None: anonymous guest
    guest_id: str | None
    in_lobby: bool
    joined_at: dt.datetime
    left_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.left_at is None

    def identity(self) -> dict[str, Any]:
        if self.user is not None:
            return {
                "user": {
                    "id": self.user.object_id,
                    "displayName": self.user.name,
                    "tenantId": self.user.tenant_id,
                    "identityProvider": "AAD",
                }
            }
        return {"guest": {"id": self.guest_id, "displayName": self.display_name}}

    def delta(self, removed_reason: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"info": {"identity": self.identity()}, "isInLobby": self.in_lobby, "id": self.id}
        if removed_reason is not None:
            entry["removedState"] = {"reason": removed_reason}
        return entry


@dataclass
class Call:
    id: str
    started_at: dt.datetime
    participants: dict[str, Participant] = field(default_factory=dict)
    ended_at: dt.datetime | None = None

    def active_participants(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.active]


@dataclass
class Meeting:
    id: str
    tenant_id: str
    organizer: User
    external_id: str
    thread_id: str
    join_web_url: str
    join_meeting_id: str
    subject: str | None
    start: dt.datetime
    end: dt.datetime
    created: dt.datetime
    attendees: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=default_settings)
    call: Call | None = None

    @property
    def lobby_scope(self) -> str:
        return str(self.settings["lobbyBypassSettings"]["scope"])

    def invited_user_ids(self) -> set[str]:
        ids: set[str] = set()
        for attendee in self.attendees:
            user = (attendee.get("identity") or {}).get("user") or {}
            if user.get("id"):
                ids.add(str(user["id"]))
        return ids

    def bypasses_lobby(self, user: User | None) -> bool:
        """Who goes straight in, per ``lobbyBypassSettings.scope`` (anonymous only with ``everyone``)."""
        scope = self.lobby_scope
        if user is not None and user.object_id == self.organizer.object_id:
            return True
        if scope == "everyone":
            return True
        if user is None or scope == "organizer":
            return False
        same_org = user.tenant_id == self.tenant_id
        if scope in ("organization", "organizationExcludingGuests"):
            return same_org
        if scope == "organizationAndFederated":
            return True  # every signed-in Entra user in the sandbox is in-org or federated
        if scope == "invited":
            return user.object_id in self.invited_user_ids()
        return False


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def new_identity(root: str, tenant_id: str, organizer_id: str) -> tuple[str, str, str]:
    """(meeting id, thread id, joinWebUrl) shaped like Teams': the id is base64 of ``1*oid*0**thread``."""
    while True:
        thread_key = _b64(str(uuid.uuid4()))
        thread_id = f"19:meeting_{thread_key}@thread.v2"
        meeting_id = _b64(f"1*{organizer_id}*0**{thread_id}").rstrip("=")
        if "/" not in thread_key + meeting_id and "+" not in thread_key + meeting_id:
            break
    context = f"%7b%22Tid%22%3a%22{tenant_id}%22%2c%22Oid%22%3a%22{organizer_id}%22%7d"
    join_web_url = f"{root}/l/meetup-join/19%3ameeting_{thread_key}%40thread.v2/0?context={context}"
    return meeting_id, thread_id, join_web_url


@dataclass(frozen=True)
class CallEvent:
    """One ``meetingCallEvents`` change: callStarted, rosterUpdated (with deltas) or callEnded."""

    meeting: Meeting
    event_type: str
    at: dt.datetime
    participants_delta: tuple[dict[str, Any], ...] = ()


class MeetingError(Exception):
    """A roster action that cannot happen (unknown participant, not the organizer, meeting not running)."""


class Meetings:
    """Thread-safe in-memory meetings and the calls held in them.

    ``on_event`` is called under the lock, in order, for every call event; it must only enqueue.
    """

    def __init__(self, root: str, directory: Directory, on_event: Callable[[CallEvent], None]) -> None:
        self._root = root
        self._directory = directory
        self._on_event = on_event
        self.lock = threading.RLock()
        self._by_id: dict[str, Meeting] = {}
        self._by_key: dict[tuple[str, str, str], str] = {}
        self._by_thread: dict[str, str] = {}
        self._by_token: dict[str, tuple[str, str]] = {}

    # -- meetings -------------------------------------------------------------------------------
    def create_or_get(
        self,
        organizer: User,
        external_id: str,
        build: Callable[[str, str, str], Meeting],
    ) -> tuple[Meeting, bool]:
        """Return (meeting, created). ``build(id, thread_id, join_web_url)`` makes a new one."""
        key = (organizer.tenant_id, organizer.object_id, external_id)
        with self.lock:
            existing = self._by_key.get(key)
            if existing is not None:
                return self._by_id[existing], False
            meeting = build(*new_identity(self._root, organizer.tenant_id, organizer.object_id))
            self._by_id[meeting.id] = meeting
            self._by_key[key] = meeting.id
            self._by_thread[meeting.thread_id] = meeting.id
            return meeting, True

    def get(self, meeting_id: str) -> Meeting | None:
        with self.lock:
            return self._by_id.get(meeting_id)

    def by_thread(self, thread_id: str) -> Meeting | None:
        with self.lock:
            meeting_id = self._by_thread.get(thread_id)
            return self._by_id.get(meeting_id) if meeting_id else None

    def by_join_web_url(self, join_web_url: str) -> Meeting | None:
        with self.lock:
            return next((m for m in self._by_id.values() if m.join_web_url == join_web_url), None)

    def all(self) -> list[Meeting]:
        with self.lock:
            return list(self._by_id.values())

    def participant_by_token(self, token: str) -> tuple[Meeting, Participant] | None:
        with self.lock:
            found = self._by_token.get(token)
            if found is None:
                return None
            meeting = self._by_id[found[0]]
            for call_participant in self._participants_of(meeting):
                if call_participant.id == found[1]:
                    return meeting, call_participant
            return None

    @staticmethod
    def _participants_of(meeting: Meeting) -> list[Participant]:
        return list(meeting.call.participants.values()) if meeting.call else []

    # -- the call ------------------------------------------------------------------------------
    def _emit(self, meeting: Meeting, event_type: str, deltas: list[dict[str, Any]] | None = None) -> None:
        self._on_event(CallEvent(meeting, event_type, utcnow(), tuple(deltas or ())))

    def _require(self, meeting_id: str) -> Meeting:
        meeting = self._by_id.get(meeting_id)
        if meeting is None:
            raise MeetingError("unknown meeting")
        return meeting

    def _running_call(self, meeting: Meeting) -> Call:
        if meeting.call is None or meeting.call.ended_at is not None:
            raise MeetingError("the meeting call is not running")
        return meeting.call

    def _participant(self, meeting: Meeting, participant_id: str) -> Participant:
        call = self._running_call(meeting)
        participant = call.participants.get(participant_id)
        if participant is None or not participant.active:
            raise MeetingError("no such participant in the call")
        return participant

    def join(self, meeting_id: str, *, user_id: str | None = None, display_name: str | None = None) -> Participant:
        """Join as a directory user (``user_id``) or anonymously (``display_name``); lobby per settings."""
        with self.lock:
            meeting = self._require(meeting_id)
            user: User | None = None
            if user_id is not None:
                user = self._directory.user(user_id)
                if user is None:
                    raise MeetingError("unknown user")
                name = user.name
            else:
                name = (display_name or "").strip()
                if not name or len(name) > 100:
                    raise MeetingError("a display name of 1 to 100 characters is required")
            now = utcnow()
            if meeting.call is None or meeting.call.ended_at is not None:
                meeting.call = Call(id=str(uuid.uuid4()), started_at=now)
                self._emit(meeting, "callStarted")
            participant = Participant(
                id=str(uuid.uuid4()),
                token=secrets.token_urlsafe(24),
                display_name=name,
                user=user,
                guest_id=None if user else str(uuid.uuid4()),
                in_lobby=not meeting.bypasses_lobby(user),
                joined_at=now,
            )
            meeting.call.participants[participant.id] = participant
            self._by_token[participant.token] = (meeting.id, participant.id)
            self._emit(meeting, "rosterUpdated", [participant.delta()])
            return participant

    def admit(self, meeting_id: str, participant_id: str, *, by: str | None = None) -> Participant:
        """Admit a lobby participant; ``by`` (a participant id) must be the organizer in the call if given."""
        with self.lock:
            meeting = self._require(meeting_id)
            if by is not None:
                self._require_organizer(meeting, by)
            participant = self._participant(meeting, participant_id)
            if not participant.in_lobby:
                raise MeetingError("the participant is not in the lobby")
            participant.in_lobby = False
            self._emit(meeting, "rosterUpdated", [participant.delta()])
            return participant

    def leave(self, meeting_id: str, participant_id: str) -> None:
        """The participant leaves the call or the lobby; the call ends when nobody is left."""
        with self.lock:
            meeting = self._require(meeting_id)
            participant = self._participant(meeting, participant_id)
            participant.left_at = utcnow()
            self._emit(meeting, "rosterUpdated", [participant.delta(LEFT_CALL)])
            call = self._running_call(meeting)
            if not call.active_participants():
                call.ended_at = utcnow()
                self._emit(meeting, "callEnded")

    def end(self, meeting_id: str, *, by: str | None = None) -> None:
        """End the call for everyone (organizer's "End meeting"): everyone still there is removed."""
        with self.lock:
            meeting = self._require(meeting_id)
            if by is not None:
                self._require_organizer(meeting, by)
            call = self._running_call(meeting)
            now = utcnow()
            remaining = call.active_participants()
            for participant in remaining:
                participant.left_at = now
            if remaining:
                self._emit(meeting, "rosterUpdated", [p.delta(LEFT_CALL) for p in remaining])
            call.ended_at = now
            self._emit(meeting, "callEnded")

    def _require_organizer(self, meeting: Meeting, participant_id: str) -> None:
        participant = self._participant(meeting, participant_id)
        if participant.user is None or participant.user.object_id != meeting.organizer.object_id:
            raise MeetingError("only the organizer can do that")
        if participant.in_lobby:
            raise MeetingError("the organizer is not in the call")

    def snapshot(self, meeting_id: str) -> dict[str, Any]:
        """The call state as the meeting page shows it."""
        with self.lock:
            meeting = self._require(meeting_id)
            call = meeting.call
            running = call is not None and call.ended_at is None
            active = call.active_participants() if call and running else []
            return {
                "meetingId": meeting.id,
                "subject": meeting.subject,
                "callState": "active" if running else ("ended" if call else "notStarted"),
                "lobbyScope": meeting.lobby_scope,
                "inCall": [{"id": p.id, "displayName": p.display_name} for p in active if not p.in_lobby],
                "lobby": [{"id": p.id, "displayName": p.display_name} for p in active if p.in_lobby],
            }
