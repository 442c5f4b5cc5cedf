"""The provider's live panel: what each role is doing, told truthfully, and when to look again.

A launch says only that someone opened the visit from the EHR: the clinician has "launched", the patient is
"waiting to join". Only Teams' roster (Graph ``meetingCallEvents``) says who is in the lobby, in the meeting,
or has left, and since when; a launch after leaving means someone is coming back. Participants are shown by
role, never by name. The meeting has ended when everyone seen has left.

Each poll of the panel is a billed Functions execution and a Table read, so the server tells the page when to
look again (``poll_after``): soon after a change, then less and less often while nothing changes (the delay
is the quiet time so far, between ``FIRST_POLL`` and ``MAX_POLL``), never once the meeting has ended or after
``IDLE_STOP`` without change. A poll whose ``version`` the page already has is answered 304 without a body.
``benchmarks/presence.py`` measures what this costs per visit.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.visits.events import EventKind, Role
from shared.visits.model import Visit
from shared.visits.repository import LIFETIME

FIRST_POLL = timedelta(seconds=5)
MAX_POLL = timedelta(seconds=60)
IDLE_STOP = timedelta(minutes=30)
ROLES = (Role.PATIENT, Role.PROVIDER, Role.STAFF)


class PanelState(enum.StrEnum):
    NOT_ARRIVED = "not_arrived"
    LAUNCHED = "launched"
    WAITING_TO_JOIN = "waiting_to_join"
    IN_LOBBY = "in_lobby"
    IN_MEETING = "in_meeting"
    LEFT = "left"


_ROSTER_STATES = {
    EventKind.LOBBY: PanelState.IN_LOBBY,
    EventKind.CONNECTED: PanelState.IN_MEETING,
    EventKind.DISCONNECTED: PanelState.LEFT,
}


@dataclass(frozen=True)
class PanelRow:
    """One role: its state, since when (None: not arrived), and its lobby wait once admitted."""

    role: Role
    state: PanelState
    since: datetime | None = None
    lobby_wait: timedelta | None = None
    lobby_since: datetime | None = None  # while in the lobby: when the wait began


@dataclass(frozen=True)
class Panel:
    rows: tuple[PanelRow, ...]
    meeting: bool
    ended_at: datetime | None
    opened_at: datetime  # the visit's start: the quiet time before any fact counts from here

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def last_change(self) -> datetime:
        """The latest moment anything shown began (the visit's start when nothing has happened yet)."""
        return max((row.since for row in self.rows if row.since is not None), default=self.opened_at)

    @property
    def version(self) -> str:
        """Changes exactly when what the panel shows changes: the ETag of its responses."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    def to_json(self) -> dict[str, Any]:
        """The API form: states, ISO 8601 times, the lobby wait in seconds."""
        return {
            "meeting": self.meeting,
            "ended": self.ended,
            "endedAt": _iso(self.ended_at),
            "participants": {
                row.role.value: {
                    "state": row.state.value,
                    "since": _iso(row.since),
                    "lobbyWaitSeconds": int(row.lobby_wait.total_seconds()) if row.lobby_wait is not None else None,
                }
                for row in self.rows
            },
        }


def panel_of(visit: Visit) -> Panel:
    rows = tuple(row_of(visit, role) for role in ROLES)
    seen = [row for row in rows if row.state is not PanelState.NOT_ARRIVED]
    ended = bool(seen) and all(row.state is PanelState.LEFT for row in seen)
    ended_at = max(row.since for row in seen if row.since is not None) if ended else None
    return Panel(rows, meeting=visit.has_meeting, ended_at=ended_at, opened_at=visit.expires_at - LIFETIME)


def row_of(visit: Visit, role: Role) -> PanelRow:
    """Teams' roster when it knows the role, unless the role launched again after leaving; else its launch.

    Times are in UTC (Graph may state another offset), so the page's ``<time>`` elements all read alike.
    """
    row = _row_of(visit, role)
    return replace(
        row,
        since=row.since.astimezone(UTC) if row.since else None,
        lobby_since=row.lobby_since.astimezone(UTC) if row.lobby_since else None,
    )


def _row_of(visit: Visit, role: Role) -> PanelRow:
    roster = visit.roster.get(role)
    launched = visit.launched.get(role)
    if roster is not None and not (roster.state is EventKind.DISCONNECTED and launched and launched > roster.at):
        state = _ROSTER_STATES[roster.state]
        wait = None
        if state is PanelState.IN_MEETING and roster.lobby_since is not None:
            wait = roster.since - roster.lobby_since
        lobby_since = roster.lobby_since if state is PanelState.IN_LOBBY else None
        return PanelRow(role, state, roster.since, wait, lobby_since)
    if launched is not None:
        return PanelRow(role, PanelState.WAITING_TO_JOIN if role is Role.PATIENT else PanelState.LAUNCHED, launched)
    legacy = visit.presence.get(role)  # a row from before launches and roster facts were told apart
    if legacy is not None:
        return PanelRow(role, _ROSTER_STATES[legacy.state], legacy.at)
    return PanelRow(role, PanelState.NOT_ARRIVED)


def poll_after(panel: Panel, now: datetime) -> int | None:
    """Seconds until the page should look again; None: stop (the meeting ended, or nothing changed for long).

    The delay is the time since the last change, kept between ``FIRST_POLL`` and ``MAX_POLL``: polls at
    about 5, 10, 20, 40 s after a change, then every minute; any change starts over.
    """
    if panel.ended:
        return None
    quiet = now - panel.last_change
    if quiet > IDLE_STOP:
        return None
    return int(min(MAX_POLL, max(FIRST_POLL, quiet)).total_seconds())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
