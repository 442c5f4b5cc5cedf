"""meetingCallEvents subscriptions: the validation handshake, the rules, and rich notifications end to end."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from sandbox.graph import GRAPH_NOTIFICATION_PUBLISHER
from sandbox.graph.meetings import MeetingError
from sandbox.seed import CONNECTOR_CLIENT_ID, CONTOSO, FABRIKAM
from sandbox.server import free_port
from tests.sandbox.graph_support import (  # noqa: F401 - fixtures
    FABRIKAM_ADMIN,
    NURSE,
    SMITH,
    Certificate,
    Receiver,
    RunningGraph,
    certificate_fixture,
    create_meeting,
    decrypt,
    graph_fixture,
    http,
    receiver_fixture,
    subscription_body,
)


def _subscribe(graph: RunningGraph, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    return http.post(f"{graph.url}/beta/subscriptions", headers=graph.headers(token), json=body, timeout=20)


def _error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _patch_scope(graph: RunningGraph, meeting: dict[str, Any], scope: str) -> None:
    response = http.patch(
        f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/{meeting['id']}",
        headers={**graph.headers(), "Prefer": "include-unknown-enum-members"},
        json={"lobbyBypassSettings": {"scope": scope, "isDialInBypassEnabled": False}},
    )
    assert response.status_code == 200, response.text


def test_handshake_echoes_the_url_decoded_token(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    body = subscription_body(meeting["joinWebUrl"], f"{receiver.url}/ok?code=abc", cert)
    response = _subscribe(graph, body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["@odata.context"] == f"{graph.url}/beta/$metadata#subscriptions/$entity"
    assert created["applicationId"] == CONNECTOR_CLIENT_ID
    assert created["resource"] == body["resource"] and created["changeType"] == "updated"
    path, token, content_type = receiver.handshakes[-1]
    assert path == "/ok" and token.startswith("Validation: ") and " " in token
    assert content_type is not None and content_type.startswith("text/plain")
    fetched = http.get(f"{graph.url}/beta/subscriptions/{created['id']}", headers=graph.headers())
    assert fetched.json()["notificationUrl"] == f"{receiver.url}/ok?code=abc"
    listed = http.get(f"{graph.url}/beta/subscriptions", headers=graph.headers()).json()["value"]
    assert created["id"] in [s["id"] for s in listed]
    fabrikam = graph.tokens.app_token(tid=FABRIKAM.id, iss=f"https://sts.windows.net/{FABRIKAM.id}/")
    elsewhere = http.get(f"{graph.url}/beta/subscriptions", headers=graph.headers(fabrikam)).json()["value"]
    assert created["id"] not in [s["id"] for s in elsewhere]  # the list is the calling tenant's


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/wrong-echo", "Response must exactly match validationToken query parameter."),
        ("/status-500", "Notification endpoint must respond with 200 OK to validation request."),
        ("/json-echo", "Content-Type text/plain"),
    ],
)
def test_failed_handshakes_refuse_the_subscription(
    graph: RunningGraph, receiver: Receiver, cert: Certificate, path: str, message: str
) -> None:
    meeting = create_meeting(graph)
    response = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"{receiver.url}{path}", cert))
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "ValidationError" and message in error["message"]
    retry = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"{receiver.url}/ok", cert))
    assert retry.status_code == 201  # the failed attempt left no subscription behind


def test_unreachable_and_slow_endpoints(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    closed = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"http://127.0.0.1:{free_port()}/x", cert))
    assert closed.status_code == 400 and _error(closed)["code"] == "ValidationError"
    receiver.slow_seconds = 2.5  # the test Graph allows 2 s (Graph itself: 10 s)
    slow = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"{receiver.url}/slow", cert))
    assert slow.status_code == 400 and _error(slow)["message"] == "Subscription validation request timed out."


def test_subscription_rules(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    url = meeting["joinWebUrl"]
    ok = f"{receiver.url}/ok"

    single = subscription_body(url, ok, cert)
    single["resource"] = f"communications/onlineMeetings(joinWebUrl='{url}')/meetingCallEvents"
    assert _subscribe(graph, single).status_code == 404  # joinWebUrl not encoded a second time

    no_cert = subscription_body(url, ok, cert)
    del no_cert["encryptionCertificate"], no_cert["encryptionCertificateId"]
    assert _error(_subscribe(graph, no_cert))["code"] == "InvalidRequest"

    too_long = subscription_body(url, ok, cert)
    too_long["expirationDateTime"] = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4240)).isoformat()
    assert "4230 minutes" in _error(_subscribe(graph, too_long))["message"]

    created_type = subscription_body(url, ok, cert, changeType="created")
    assert _subscribe(graph, created_type).status_code == 400
    http_remote = subscription_body(url, "http://example.com/hook", cert)
    assert _subscribe(graph, http_remote).status_code == 400
    unknown = subscription_body(url, ok, cert, notificationQueryOptions="x")
    assert _subscribe(graph, unknown).status_code == 400
    bad_cert = subscription_body(url, ok, cert, encryptionCertificate="bm90IGEgY2VydA==")
    assert _subscribe(graph, bad_cert).status_code == 400

    fabrikam = graph.tokens.app_token(tid=FABRIKAM.id, iss=f"https://sts.windows.net/{FABRIKAM.id}/")
    assert _subscribe(graph, subscription_body(url, ok, cert), fabrikam).status_code == 404

    assert _subscribe(graph, subscription_body(url, ok, cert)).status_code == 201
    duplicate = _subscribe(graph, subscription_body(url, ok, cert))
    assert duplicate.status_code == 409 and _error(duplicate)["code"] == "Conflict"
    other_app = graph.tokens.app_token(appid=str(uuid.uuid4()))
    assert _subscribe(graph, subscription_body(url, ok, cert), other_app).status_code == 201

    v1 = http.post(f"{graph.url}/v1.0/subscriptions", headers=graph.headers(), json=subscription_body(url, ok, cert))
    assert v1.status_code == 400  # meetingCallEvents is beta only


def test_renew_and_delete(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    created = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"{receiver.url}/ok", cert)).json()
    url = f"{graph.url}/beta/subscriptions/{created['id']}"
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    renewed = http.patch(url, headers=graph.headers(), json={"expirationDateTime": later})
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"].startswith(later[:19])
    assert http.patch(url, headers=graph.headers(), json={"resource": "x"}).status_code == 400
    stranger = graph.tokens.app_token(appid=str(uuid.uuid4()))
    assert http.delete(url, headers=graph.headers(stranger)).status_code == 404
    assert http.post(f"{url}/reauthorize", headers=graph.headers()).status_code == 204
    assert http.delete(url, headers=graph.headers()).status_code == 204
    assert http.get(url, headers=graph.headers()).status_code == 404
    assert http.delete(url, headers=graph.headers()).status_code == 404


def test_rich_notification_round_trip(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    _patch_scope(graph, meeting, "organizer")
    body = subscription_body(meeting["joinWebUrl"], f"{receiver.url}/ok2", cert)
    subscription = _subscribe(graph, body).json()
    sandbox = graph.sandbox

    organizer = sandbox.join_user(meeting["id"], SMITH)
    patient = sandbox.join_anonymous(meeting["id"], "Pat Patient")
    assert patient.in_lobby and not organizer.in_lobby
    sandbox.admit(meeting["id"], patient.id)
    sandbox.leave(meeting["id"], patient.id)
    sandbox.end(meeting["id"])

    posts = receiver.wait_for("/ok2", 7)
    events = []
    for post in posts:
        assert set(post) == {"value", "validationTokens"}
        (item,) = post["value"]
        assert item["subscriptionId"] == subscription["id"]
        assert item["clientState"] == body["clientState"]
        assert item["changeType"] == "updated"
        assert item["tenantId"] == item["organizationId"] == CONTOSO.id
        assert item["resource"] == body["resource"]
        assert item["subscriptionExpirationDateTime"].endswith("Z")
        assert item["resourceData"]["@odata.type"] == "#microsoft.graph.callevent"
        encrypted = item["encryptedContent"]
        assert encrypted["encryptionCertificateId"] == "notifications-2026"
        assert encrypted["encryptionCertificateThumbprint"] == cert.thumbprint
        payload = decrypt(encrypted, cert.private_key)  # also checks dataSignature (HMAC-SHA256)
        assert payload["@odata.type"] == "#microsoft.graph.callevent"
        assert payload["id"] == item["resourceData"]["id"]
        (token,) = post["validationTokens"]
        claims = jwt.decode(
            token,
            jwt.PyJWK(graph.notification_keys.jwks["keys"][0]).key,
            algorithms=["RS256"],
            audience=CONNECTOR_CLIENT_ID,
            issuer=f"https://sts.windows.net/{CONTOSO.id}/",
            options={"require": ["exp", "iat", "nbf"]},
        )
        assert claims["appid"] == GRAPH_NOTIFICATION_PUBLISHER
        events.append(payload)

    assert [e["eventType"] for e in events] == ["callStarted"] + ["rosterUpdated"] * 5 + ["callEnded"]
    deltas = [e["participants@delta"] for e in events[1:6]]
    assert deltas[0][0]["info"]["identity"]["user"]["id"] == SMITH and deltas[0][0]["isInLobby"] is False
    lobby, admitted, left = deltas[1][0], deltas[2][0], deltas[3][0]
    assert lobby["info"]["identity"]["guest"]["displayName"] == "Pat Patient" and lobby["isInLobby"] is True
    assert admitted["id"] == lobby["id"] and admitted["isInLobby"] is False and "removedState" not in admitted
    assert left["id"] == lobby["id"] and left["removedState"]["reason"] == "Participant has left the meeting call."
    assert deltas[4][0]["id"] == organizer.id and "removedState" in deltas[4][0]
    with pytest.raises(MeetingError):
        sandbox.leave(meeting["id"], organizer.id)  # the call is over


def test_failed_deliveries_are_retried_and_logged(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    subscription = _subscribe(graph, subscription_body(meeting["joinWebUrl"], f"{receiver.url}/flaky", cert)).json()
    graph.sandbox.join_user(meeting["id"], SMITH)
    assert graph.sandbox.wait_for_deliveries(10)
    mine = [d for d in graph.sandbox.deliveries() if d.subscription_id == subscription["id"]]
    assert [d.event_type for d in mine] == ["callStarted", "rosterUpdated"]
    assert [a.status_code for a in mine[0].attempts] == [503, 202]
    assert all(d.state == "delivered" for d in mine)
    assert len(receiver.received("/flaky")) == 3
    log = http.get(f"{graph.url}/_sandbox/deliveries").json()["value"]
    entry = next(d for d in log if d["id"] == mine[0].id)
    assert entry["latencyMs"] is not None and len(entry["attempts"]) == 2
    assert entry["attempts"][0]["statusCode"] == 503 and entry["attempts"][0]["durationMs"] >= 0


def test_basic_notifications_and_lifecycle(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    meeting = create_meeting(graph)
    body = subscription_body(
        meeting["joinWebUrl"], f"{receiver.url}/ok", cert, lifecycleNotificationUrl=f"{receiver.url}/lifecycle"
    )
    body["includeResourceData"] = False
    del body["encryptionCertificate"], body["encryptionCertificateId"]
    subscription = _subscribe(graph, body).json()
    before = len(receiver.received("/ok"))
    graph.sandbox.join_user(meeting["id"], NURSE)
    posts = receiver.wait_for("/ok", before + 2)[before:]
    assert all("validationTokens" not in p and "encryptedContent" not in p["value"][0] for p in posts)
    graph.sandbox.send_lifecycle_notification(subscription["id"], "reauthorizationRequired")
    (lifecycle,) = receiver.wait_for("/lifecycle", 1)
    item = lifecycle["value"][0]
    assert item["lifecycleEvent"] == "reauthorizationRequired" and item["subscriptionId"] == subscription["id"]
    assert item["clientState"] == body["clientState"]


@pytest.mark.parametrize(
    ("scope", "nurse_waits", "guest_waits", "federated_waits"),
    [
        ("organizer", True, True, True),
        ("organization", False, True, True),
        ("organizationAndFederated", False, True, False),
        ("everyone", False, False, False),
        ("invited", True, True, True),
        ("organizationExcludingGuests", False, True, True),
    ],
)
def test_lobby_rules(
    graph: RunningGraph, scope: str, nurse_waits: bool, guest_waits: bool, federated_waits: bool
) -> None:
    meeting = create_meeting(graph)
    _patch_scope(graph, meeting, scope)
    sandbox = graph.sandbox
    assert sandbox.join_user(meeting["id"], SMITH).in_lobby is False
    assert sandbox.join_user(meeting["id"], NURSE).in_lobby is nurse_waits
    assert sandbox.join_anonymous(meeting["id"], "Guest").in_lobby is guest_waits
    assert sandbox.join_user(meeting["id"], FABRIKAM_ADMIN).in_lobby is federated_waits


def test_invited_attendees_bypass_the_lobby(graph: RunningGraph) -> None:
    meeting = create_meeting(graph)
    response = http.patch(
        f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/{meeting['id']}",
        headers={**graph.headers(), "Prefer": "include-unknown-enum-members"},
        json={
            "lobbyBypassSettings": {"scope": "invited"},
            "participants": {"attendees": [{"identity": {"user": {"id": NURSE}}, "upn": "nurse.kim@contoso.example"}]},
        },
    )
    assert response.status_code == 200, response.text
    assert graph.sandbox.join_user(meeting["id"], NURSE).in_lobby is False


def test_resource_uses_the_documented_double_encoding(graph: RunningGraph) -> None:
    meeting = create_meeting(graph)
    encoded = quote(meeting["joinWebUrl"], safe="")
    assert "%253a" in encoded and "%2540thread.v2" in encoded and "%257b%2522Tid%2522" in encoded
    assert graph.sandbox.meeting_by_join_web_url(meeting["joinWebUrl"]) is not None
