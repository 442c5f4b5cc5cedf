"""createOrGet, GET and PATCH of onlineMeetings over plain HTTP: identity, defaults, auth and errors."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from urllib.parse import unquote

import httpx

from tests.sandbox.graph_support import (  # noqa: F401 - fixtures
    FABRIKAM_ADMIN,
    LEE,
    NOPOLICY,
    SMITH,
    RunningGraph,
    graph_fixture,
    http,
)


def _create(
    graph: RunningGraph, organizer: str, body: Mapping[str, object], token: str | None = None
) -> httpx.Response:
    return http.post(
        f"{graph.url}/v1.0/users/{organizer}/onlineMeetings/createOrGet", headers=graph.headers(token), json=body
    )


def _error(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    return error


def test_create_or_get_is_idempotent_per_organizer_and_external_id(graph: RunningGraph) -> None:
    external_id = str(uuid.uuid4())
    first = _create(graph, SMITH, {"externalId": external_id, "subject": "Visit"})
    assert first.status_code == 201
    again = _create(graph, SMITH, {"externalId": external_id, "subject": "Ignored"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["subject"] == "Visit"
    other_external = _create(graph, SMITH, {"externalId": str(uuid.uuid4())})
    other_organizer = _create(graph, LEE, {"externalId": external_id})
    assert other_external.status_code == other_organizer.status_code == 201
    assert len({first.json()["id"], other_external.json()["id"], other_organizer.json()["id"]}) == 3


def test_meeting_json_has_the_documented_defaults_and_join_url_shape(graph: RunningGraph) -> None:
    meeting = _create(graph, SMITH, {"externalId": str(uuid.uuid4())}).json()
    assert meeting["@odata.context"] == f"{graph.url}/v1.0/$metadata#users('{SMITH}')/onlineMeetings/$entity"
    assert meeting["lobbyBypassSettings"] == {"scope": "organization", "isDialInBypassEnabled": False}
    assert meeting["allowedPresenters"] == "everyone"
    assert meeting["isEntryExitAnnounced"] is True
    assert meeting["participants"]["organizer"]["identity"]["user"]["id"] == SMITH
    assert meeting["joinMeetingIdSettings"]["joinMeetingId"].isdigit()
    url = meeting["joinWebUrl"]
    assert url.startswith(f"{graph.url}/l/meetup-join/19%3ameeting_")
    assert "%40thread.v2/0?context=%7b%22Tid%22%3a%2211111111-1111-4111-8111-111111111111%22%2c%22Oid%22%3a%22" in url
    assert meeting["chatInfo"]["threadId"] == unquote(url.split("/")[5])
    start, end = (meeting[k] for k in ("startDateTime", "endDateTime"))
    assert start.endswith("Z") and end > start


def test_time_rules(graph: RunningGraph) -> None:
    only_start = _create(graph, SMITH, {"externalId": str(uuid.uuid4()), "startDateTime": "2030-01-01T10:00:00Z"})
    assert only_start.json()["endDateTime"].startswith("2030-01-01T11:00:00")
    only_end = _create(graph, SMITH, {"externalId": str(uuid.uuid4()), "endDateTime": "2030-01-01T10:00:00Z"})
    assert only_end.status_code == 400
    backwards = _create(
        graph,
        SMITH,
        {"externalId": str(uuid.uuid4()), "startDateTime": "2030-01-01T10:00:00Z", "endDateTime": "2030-01-01T09:00"},
    )
    assert backwards.status_code == 400


def test_bad_bodies_are_rejected(graph: RunningGraph) -> None:
    assert _error(_create(graph, SMITH, {"subject": "no external id"}))["code"] == "BadRequest"
    unknown = _create(graph, SMITH, {"externalId": "x", "lobbyBypassSettings": {"scope": "everyone"}})
    assert unknown.status_code == 400
    assert "lobbyBypassSettings" in str(_error(unknown)["message"])
    garbage = http.post(
        f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/createOrGet", headers=graph.headers(), content=b"{nope"
    )
    assert garbage.status_code == 400


def test_authentication_and_authorization(graph: RunningGraph) -> None:
    body = {"externalId": str(uuid.uuid4())}
    url = f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/createOrGet"
    missing = http.post(url, json=body)
    assert missing.status_code == 401 and _error(missing)["code"] == "InvalidAuthenticationToken"
    assert "Bearer" in missing.headers["www-authenticate"]
    expired = _create(graph, SMITH, body, graph.tokens.app_token(exp=int(time.time()) - 600))
    assert expired.status_code == 401 and "expired" in str(_error(expired)["message"])
    wrong_aud = _create(graph, SMITH, body, graph.tokens.app_token(aud="https://graph.microsoft.com"))
    assert wrong_aud.status_code == 401 and _error(wrong_aud)["message"] == "Invalid audience."
    wrong_iss = _create(graph, SMITH, body, graph.tokens.app_token(iss="https://evil.example/"))
    assert wrong_iss.status_code == 401
    forged = graph.tokens.app_token()[:-8] + "AAAAAAAA"
    assert _create(graph, SMITH, body, forged).status_code == 401
    no_role = _create(graph, SMITH, body, graph.tokens.app_token(roles=["User.Read.All"]))
    assert no_role.status_code == 403 and _error(no_role)["code"] == "Forbidden"
    delegated = _create(graph, SMITH, body, graph.tokens.app_token(scp="OnlineMeetings.ReadWrite", roles=None))
    assert delegated.status_code == 403


def test_access_policy_unknown_user_and_other_tenants(graph: RunningGraph) -> None:
    body = {"externalId": str(uuid.uuid4())}
    no_policy = _create(graph, NOPOLICY, body)
    assert no_policy.status_code == 403
    error = _error(no_policy)
    assert error["code"] == "Unauthorized"
    assert error["message"] == f"App 22222222-2222-4222-8222-222222222222 is not authorized to Create meeting on " \
        f"behalf of user {NOPOLICY}"  # fmt: skip
    assert _create(graph, str(uuid.uuid4()), body).status_code == 404
    assert _create(graph, FABRIKAM_ADMIN, body).status_code == 404  # not in the token's tenant


def test_patch_and_get(graph: RunningGraph) -> None:
    meeting = _create(graph, SMITH, {"externalId": str(uuid.uuid4())}).json()
    url = f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/{meeting['id']}"
    patch = {
        "@odata.type": "#microsoft.graph.onlineMeeting",
        "lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False},
        "allowedPresenters": "organizer",
        "isEntryExitAnnounced": False,
        "allowMeetingChat": "limited",
    }
    patched = http.patch(url, headers=graph.headers(), json=patch)
    assert patched.status_code == 200, patched.text
    fetched = http.get(url, headers=graph.headers()).json()
    assert fetched["lobbyBypassSettings"] == {"scope": "organizer", "isDialInBypassEnabled": False}
    assert (fetched["allowedPresenters"], fetched["isEntryExitAnnounced"], fetched["allowMeetingChat"]) == (
        "organizer",
        False,
        "limited",
    )
    assert http.patch(url, headers=graph.headers(), json={"allowedPresenters": "nobody"}).status_code == 400
    assert http.patch(url, headers=graph.headers(), json={"joinWebUrl": "x"}).status_code == 400
    lone_start = http.patch(url, headers=graph.headers(), json={"startDateTime": "2030-01-01T10:00:00Z"})
    assert lone_start.status_code == 400
    assert http.get(url, headers=graph.headers()).json()["allowedPresenters"] == "organizer"  # unchanged


def test_evolvable_lobby_scopes_need_the_prefer_header(graph: RunningGraph) -> None:
    meeting = _create(graph, SMITH, {"externalId": str(uuid.uuid4())}).json()
    url = f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/{meeting['id']}"
    body = {"lobbyBypassSettings": {"scope": "invited"}}
    assert http.patch(url, headers=graph.headers(), json=body).status_code == 400
    prefer = {**graph.headers(), "Prefer": "include-unknown-enum-members"}
    assert http.patch(url, headers=prefer, json=body).json()["lobbyBypassSettings"]["scope"] == "invited"
    plain = http.get(url, headers=graph.headers()).json()
    assert plain["lobbyBypassSettings"]["scope"] == "unknownFutureValue"


def test_other_organizers_meetings_are_not_found(graph: RunningGraph) -> None:
    meeting = _create(graph, SMITH, {"externalId": str(uuid.uuid4())}).json()
    other = http.get(f"{graph.url}/v1.0/users/{LEE}/onlineMeetings/{meeting['id']}", headers=graph.headers())
    assert other.status_code == 404 and _error(other)["code"] == "NotFound"
    unknown = http.get(f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/nope", headers=graph.headers())
    assert unknown.status_code == 404
    segment = http.get(f"{graph.url}/v1.0/nothing/here", headers=graph.headers())
    assert segment.status_code == 400 and _error(segment)["code"] == "BadRequest"
