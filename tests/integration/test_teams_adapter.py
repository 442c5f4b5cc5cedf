"""shared/microsoft/teams.py against the sandbox Graph over real HTTP (real msgraph-sdk code paths)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from shared.kernel.errors import UpstreamRejected
from shared.microsoft.teams import TeamsClient, call_events_resource
from tests.sandbox.graph_support import (  # noqa: F401 - fixtures
    LEE,
    NOPOLICY,
    SMITH,
    Certificate,
    Receiver,
    RunningGraph,
    certificate_fixture,
    graph_fixture,
    receiver_fixture,
)
from tests.support.outbound import LOCAL_POLICY


class MintedCredential:
    """Stands where the msal-backed app-only credential goes: returns a token the sandbox accepts."""

    def __init__(self, graph: RunningGraph) -> None:
        self.graph = graph
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls += 1
        assert scopes == (f"{self.graph.url}/.default",)
        return AccessToken(self.graph.tokens.app_token(), int(time.time()) + 3600)


def window() -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(microsecond=0)
    return start, start + timedelta(hours=1)


def test_create_or_get_is_idempotent_and_lobby_is_secured(graph: RunningGraph) -> None:
    client = TeamsClient(graph.url, MintedCredential(graph), policy=LOCAL_POLICY)
    start, end = window()
    first = client.create_or_get_meeting(
        organizer_object_id=SMITH, external_id="visit-a", subject="Virtual visit", start=start, end=end
    )
    again = client.create_or_get_meeting(
        organizer_object_id=SMITH, external_id="visit-a", subject="Virtual visit", start=start, end=end
    )
    other = client.create_or_get_meeting(
        organizer_object_id=SMITH, external_id="visit-b", subject="Virtual visit", start=start, end=end
    )
    assert first == again and other.id != first.id
    assert first.join_web_url.startswith(f"{graph.url}/l/meetup-join/19%3ameeting_")

    meeting = graph.sandbox.meeting(first.id)
    assert meeting is not None and meeting.lobby_scope == "organization"  # createOrGet's default
    client.secure_lobby(organizer_object_id=SMITH, meeting_id=first.id)
    assert meeting.lobby_scope == "organizer"
    assert meeting.settings["lobbyBypassSettings"]["isDialInBypassEnabled"] is False
    assert meeting.settings["allowedPresenters"] == "organizer"
    assert meeting.settings["isEntryExitAnnounced"] is True


def test_organizer_without_access_policy_gets_the_powershell(graph: RunningGraph) -> None:
    client = TeamsClient(graph.url, MintedCredential(graph), policy=LOCAL_POLICY)
    start, end = window()
    with pytest.raises(UpstreamRejected) as caught:
        client.create_or_get_meeting(
            organizer_object_id=NOPOLICY, external_id="visit-x", subject="s", start=start, end=end
        )
    assert caught.value.code == "graph_access_policy"
    assert "Grant-CsApplicationAccessPolicy" in caught.value.message


def test_subscription_handshake_renew_delete(graph: RunningGraph, receiver: Receiver, cert: Certificate) -> None:
    client = TeamsClient(graph.url, MintedCredential(graph), policy=LOCAL_POLICY)
    start, end = window()
    meeting = client.create_or_get_meeting(
        organizer_object_id=LEE, external_id="visit-sub", subject="s", start=start, end=end
    )
    expires = datetime.now(UTC) + timedelta(days=2)
    subscription = client.subscribe_call_events(
        join_web_url=meeting.join_web_url,
        notification_url=f"{receiver.url}/ok",
        lifecycle_url=f"{receiver.url}/lifecycle",
        client_state="c" * 40,
        certificate_base64=cert.base64_der,
        certificate_id="cert-1",
        expires_at=expires,
    )
    assert subscription.id
    stored = graph.sandbox.subscription(subscription.id)
    assert stored is not None and stored.meeting_id == meeting.id
    assert stored.resource == call_events_resource(meeting.join_web_url)
    assert stored.include_resource_data and stored.encryption_certificate_id == "cert-1"
    renewed = client.renew_subscription(subscription.id, expires + timedelta(hours=1))
    assert renewed.expires_at > subscription.expires_at - timedelta(seconds=1)

    again = dict(
        join_web_url=meeting.join_web_url, notification_url=f"{receiver.url}/ok", lifecycle_url=f"{receiver.url}/l",
        client_state="c" * 40, certificate_base64=cert.base64_der, certificate_id="cert-1", expires_at=expires,
    )  # fmt: skip
    with pytest.raises(UpstreamRejected) as exists:
        client.subscribe_call_events(**again)  # type: ignore[arg-type]
    assert exists.value.code == "graph_subscription_exists"
    found = client.find_call_events_subscription(
        join_web_url=meeting.join_web_url, notification_url=f"{receiver.url}/ok"
    )
    assert found is not None and found.id == subscription.id
    assert abs((found.expires_at - renewed.expires_at).total_seconds()) < 1
    other_url = client.find_call_events_subscription(
        join_web_url=meeting.join_web_url, notification_url=f"{receiver.url}/elsewhere"
    )
    assert other_url is None  # another deployment's subscription is not ours to adopt

    graph.sandbox.join_anonymous(meeting.id, "Patient")
    delivered = receiver.wait_for("/ok", 1)
    assert {item.get("clientState") for item in delivered[0]["value"]} == {"c" * 40}

    client.delete_subscription(subscription.id)
    client.delete_subscription(subscription.id)  # already gone is fine
    assert graph.sandbox.subscription(subscription.id) is None


NO_MODELS = """
import sys, time
from datetime import UTC, datetime, timedelta
from azure.core.credentials import AccessToken
from shared.microsoft.teams import TeamsClient
from tests.support.outbound import LOCAL_POLICY

class Token:
    def get_token(self, *scopes, **kwargs):
        return AccessToken(sys.argv[2], int(time.time()) + 3600)

client = TeamsClient(sys.argv[1], Token(), policy=LOCAL_POLICY)
start = datetime.now(UTC)
cpu = time.process_time()
meeting = client.create_or_get_meeting(
    organizer_object_id=sys.argv[3], external_id="fresh", subject="s", start=start, end=start + timedelta(hours=1)
)
client.secure_lobby(organizer_object_id=sys.argv[3], meeting_id=meeting.id)
print(sorted(m for m in sys.modules if m == "msgraph" or m.startswith(("msgraph.", "kiota_serialization"))))
"""


def test_meetings_need_no_msgraph_models_or_kiota_parsing(graph: RunningGraph) -> None:
    """The first meeting of a fresh process imports none of msgraph-sdk's generated modules (the 2.7 s stall)."""
    out = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", NO_MODELS, graph.url, graph.tokens.app_token(), SMITH],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
