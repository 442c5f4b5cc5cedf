"""``createOrGet``, ``GET`` and ``PATCH`` of ``/users/{userId}/onlineMeetings``: validation and JSON."""

from __future__ import annotations

import copy
import datetime as dt
import secrets
from typing import Any

from sandbox.graph.meetings import EVOLVABLE_SCOPES, LOBBY_SCOPES, Meeting, graph_time, utcnow
from sandbox.graph.odata import bad_request
from sandbox.graph.timeparse import parse_time
from sandbox.seed import User

CREATE_OR_GET_FIELDS = {"externalId", "subject", "startDateTime", "endDateTime", "participants", "chatInfo"}
PRESENTERS = ("everyone", "organization", "roleIsPresenter", "organizer")
MEETING_CHAT = ("enabled", "disabled", "limited")
LOBBY_ADMITTERS = ("organizerAndCoOrganizersAndPresenters", "organizerAndCoOrganizers")
ROLES = ("attendee", "presenter", "producer", "coorganizer")
BOOLEAN_SETTINGS = (
    "isEntryExitAnnounced",
    "allowAttendeeToEnableCamera",
    "allowAttendeeToEnableMic",
    "allowTranscription",
    "recordAutomatically",
    "allowTeamworkReactions",
)
ENUM_SETTINGS = {
    "allowedPresenters": PRESENTERS,
    "allowMeetingChat": MEETING_CHAT,
    "allowedLobbyAdmitters": LOBBY_ADMITTERS,
}
PATCH_FIELDS = {
    "lobbyBypassSettings",
    "subject",
    "startDateTime",
    "endDateTime",
    "participants",
    *BOOLEAN_SETTINGS,
    *ENUM_SETTINGS,
}


def wants_unknown_enum_members(prefer: str | None) -> bool:
    return any(p.strip().lower() == "include-unknown-enum-members" for p in (prefer or "").split(","))


def _strip_annotations(value: Any) -> Any:
    """Drop ``@odata.type`` and other instance annotations (the SDK adds them) before validating."""
    if isinstance(value, dict):
        return {k: _strip_annotations(v) for k, v in value.items() if not k.startswith("@odata.")}
    if isinstance(value, list):
        return [_strip_annotations(v) for v in value]
    return value


def _unknown(body: dict[str, Any], allowed: set[str], where: str) -> None:
    for name in body:
        if name not in allowed:
            raise bad_request(
                f"The property '{name[:100]}' does not exist on type '{where}'. "
                "Make sure to only use property names that are defined by the type."
            )


def _optional_string(body: dict[str, Any], name: str, limit: int = 4096) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise bad_request(f"Invalid value for '{name}': a string of at most {limit} characters is expected.")
    return value


def _time(body: dict[str, Any], name: str) -> dt.datetime | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"Invalid value for '{name}': a date-time string is expected.")
    try:
        return parse_time(value)
    except ValueError:
        raise bad_request(
            f"Cannot convert the literal '{value[:40]}' to the expected type 'Edm.DateTimeOffset'."
        ) from None


def _attendees(participants: Any, organizer: User) -> list[dict[str, Any]]:
    if participants is None:
        return []
    if not isinstance(participants, dict):
        raise bad_request("Invalid value for 'participants': a meetingParticipants object is expected.")
    _unknown(participants, {"organizer", "attendees"}, "microsoft.graph.meetingParticipants")
    given_organizer = participants.get("organizer")
    if given_organizer is not None:
        user = ((given_organizer or {}).get("identity") or {}).get("user") or {}
        if user.get("id") not in (None, organizer.object_id):
            raise bad_request("The organizer of a meeting cannot be changed.")
    attendees = participants.get("attendees") or []
    if not isinstance(attendees, list) or not all(isinstance(a, dict) for a in attendees):
        raise bad_request("Invalid value for 'attendees': a collection of meetingParticipantInfo is expected.")
    result = []
    for attendee in attendees:
        _unknown(attendee, {"identity", "upn", "role"}, "microsoft.graph.meetingParticipantInfo")
        role = attendee.get("role") or "attendee"
        if role not in ROLES:
            raise bad_request(f"Requested value '{role}' was not found.")
        result.append({"identity": attendee.get("identity"), "upn": attendee.get("upn"), "role": role})
    return result


def _times(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """The documented createOrGet rules: defaults now..now+1h, start only → +1 h, end needs a start."""
    if start is None and end is None:
        now = utcnow()
        return now, now + dt.timedelta(hours=1)
    if start is None:
        raise bad_request("startDateTime is required when endDateTime is specified.")
    if end is None:
        return start, start + dt.timedelta(hours=1)
    if end < start:
        raise bad_request("endDateTime must be later than startDateTime.")
    return start, end


def parse_create_or_get(raw: Any, organizer: User) -> dict[str, Any]:
    """Validated createOrGet parameters; 400 for anything the action does not accept."""
    if not isinstance(raw, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    body = _strip_annotations(raw)
    for name in body:
        if name not in CREATE_OR_GET_FIELDS:
            raise bad_request(
                f"The parameter '{name[:100]}' in the request payload is not a valid parameter for the operation "
                "'createOrGet'."
            )
    external_id = body.get("externalId")
    if not isinstance(external_id, str) or not external_id.strip() or len(external_id) > 1024:
        raise bad_request("The externalId parameter is required and must be a non-empty string.")
    start, end = _times(_time(body, "startDateTime"), _time(body, "endDateTime"))
    chat_info = body.get("chatInfo")
    if chat_info is not None:
        if not isinstance(chat_info, dict):
            raise bad_request("Invalid value for 'chatInfo': a chatInfo object is expected.")
        _unknown(chat_info, {"threadId", "messageId", "replyChainMessageId"}, "microsoft.graph.chatInfo")
    return {
        "external_id": external_id,
        "subject": _optional_string(body, "subject", 256),
        "start": start,
        "end": end,
        "attendees": _attendees(body.get("participants"), organizer),
    }


def new_meeting(meeting_id: str, thread_id: str, join_web_url: str, organizer: User, params: dict[str, Any]) -> Meeting:
    return Meeting(
        id=meeting_id,
        tenant_id=organizer.tenant_id,
        organizer=organizer,
        external_id=params["external_id"],
        thread_id=thread_id,
        join_web_url=join_web_url,
        join_meeting_id=str(secrets.randbelow(9 * 10**12) + 10**12),
        subject=params["subject"],
        start=params["start"],
        end=params["end"],
        created=utcnow(),
        attendees=params["attendees"],
    )


def apply_patch(meeting: Meeting, raw: Any, prefer: str | None) -> None:
    """Validate the whole body first, then apply it (a bad field changes nothing)."""
    if not isinstance(raw, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    body = _strip_annotations(raw)
    _unknown(body, PATCH_FIELDS, "microsoft.graph.onlineMeeting")
    settings = copy.deepcopy(meeting.settings)
    lobby = body.get("lobbyBypassSettings")
    if lobby is not None:
        if not isinstance(lobby, dict):
            raise bad_request("Invalid value for 'lobbyBypassSettings'.")
        _unknown(lobby, {"scope", "isDialInBypassEnabled"}, "microsoft.graph.lobbyBypassSettings")
        if "scope" in lobby:
            scope = lobby["scope"]
            if scope not in LOBBY_SCOPES:
                raise bad_request(f"Requested value '{str(scope)[:60]}' was not found.")
            if scope in EVOLVABLE_SCOPES and not wants_unknown_enum_members(prefer):
                raise bad_request(
                    f"Requested value '{scope}' was not found. Evolvable enum members need the header "
                    "'Prefer: include-unknown-enum-members'."
                )
            settings["lobbyBypassSettings"]["scope"] = scope
        if "isDialInBypassEnabled" in lobby:
            if not isinstance(lobby["isDialInBypassEnabled"], bool):
                raise bad_request("Invalid value for 'isDialInBypassEnabled': a boolean is expected.")
            settings["lobbyBypassSettings"]["isDialInBypassEnabled"] = lobby["isDialInBypassEnabled"]
    for name in BOOLEAN_SETTINGS:
        if name in body:
            if not isinstance(body[name], bool):
                raise bad_request(f"Invalid value for '{name}': a boolean is expected.")
            settings[name] = body[name]
    for name, allowed in ENUM_SETTINGS.items():
        if name in body:
            if body[name] not in allowed:
                raise bad_request(f"Requested value '{str(body[name])[:60]}' was not found.")
            settings[name] = body[name]
    subject = _optional_string(body, "subject", 256) if "subject" in body else meeting.subject
    start, end = meeting.start, meeting.end
    if "startDateTime" in body or "endDateTime" in body:
        new_start, new_end = _time(body, "startDateTime"), _time(body, "endDateTime")
        if new_start is None or new_end is None:
            raise bad_request("startDateTime and endDateTime must be updated together.")
        if new_end < new_start:
            raise bad_request("endDateTime must be later than startDateTime.")
        start, end = new_start, new_end
    attendees = _attendees(body["participants"], meeting.organizer) if "participants" in body else meeting.attendees
    meeting.settings, meeting.subject, meeting.start, meeting.end, meeting.attendees = (
        settings,
        subject,
        start,
        end,
        attendees,
    )


def _user_identity(user: User) -> dict[str, Any]:
    return {"user": {"id": user.object_id, "displayName": None, "tenantId": user.tenant_id, "identityProvider": "AAD"}}


def meeting_json(meeting: Meeting, root: str, version: str, user_id: str, prefer: str | None) -> dict[str, Any]:
    settings = copy.deepcopy(meeting.settings)
    if settings["lobbyBypassSettings"]["scope"] in EVOLVABLE_SCOPES and not wants_unknown_enum_members(prefer):
        settings["lobbyBypassSettings"]["scope"] = "unknownFutureValue"
    attendees = [{"upn": a.get("upn"), "role": a["role"], "identity": a.get("identity")} for a in meeting.attendees]
    return {
        "@odata.context": f"{root}/{version}/$metadata#users('{user_id}')/onlineMeetings/$entity",
        "id": meeting.id,
        "creationDateTime": graph_time(meeting.created),
        "startDateTime": graph_time(meeting.start),
        "endDateTime": graph_time(meeting.end),
        "joinWebUrl": meeting.join_web_url,
        "subject": meeting.subject,
        "externalId": meeting.external_id,
        "isBroadcast": False,
        "videoTeleconferenceId": None,
        "audioConferencing": None,
        "participants": {
            "organizer": {
                "upn": meeting.organizer.upn,
                "role": "presenter",
                "identity": _user_identity(meeting.organizer),
            },
            "attendees": attendees,
        },
        "chatInfo": {"threadId": meeting.thread_id, "messageId": "0", "replyChainMessageId": None},
        "joinMeetingIdSettings": {
            "isPasscodeRequired": False,
            "joinMeetingId": meeting.join_meeting_id,
            "passcode": None,
        },
        "joinInformation": {
            "content": "data:text/html," + "%3cp%3eJoin+the+meeting+in+the+Teams+sandbox%3c%2fp%3e",
            "contentType": "html",
        },
        **settings,
    }
