"""The msal-backed app-only credential: real tokens from the sandbox Entra ID, accepted by the sandbox Graph."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO
from sandbox.stand_ins import RunningStandIns, start_stand_ins
from shared.kernel.errors import UpstreamRejected, UpstreamUnavailable
from shared.microsoft.app_credentials import AppOnlyCredential, AppOnlyCredentials
from shared.microsoft.teams import TeamsClient
from tests.support.outbound import LOCAL_POLICY, local_http

SMITH = "b0000000-0000-4000-8000-000000000001"


@dataclass
class Clouds:
    authority_host: str
    graph_url: str
    stand_ins: RunningStandIns


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    running = start_stand_ins(Path(tmp_path_factory.mktemp("sandbox")))
    yield Clouds(running.settings["ENTRA_AUTHORITY_HOST"], running.settings["GRAPH_BASE_URL"], running)
    running.stop()


@pytest.fixture
def trusted(clouds: Clouds, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.setenv(key, clouds.stand_ins.settings[key])


def test_creates_a_meeting_with_an_msal_token_and_reuses_the_token(clouds: Clouds, trusted: None) -> None:
    credentials = AppOnlyCredentials(
        clouds.authority_host, CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, http=local_http()
    )
    credential = credentials.for_tenant(CONTOSO.id)
    assert credentials.for_tenant(CONTOSO.id.upper()) is credential
    client = TeamsClient(clouds.graph_url, credential, policy=LOCAL_POLICY)
    start = datetime.now(UTC)
    meeting = client.create_or_get_meeting(
        organizer_object_id=SMITH,
        external_id="cred-test",
        subject="Virtual visit",
        start=start,
        end=start + timedelta(hours=1),
    )
    client.secure_lobby(organizer_object_id=SMITH, meeting_id=meeting.id)
    # The Graph adapter awaits the credential on its loop; asked again here, it hands out the same token.
    token = asyncio.run(credential.get_token(f"{clouds.graph_url}/.default"))
    assert token.expires_on > time.time() + 3000
    assert asyncio.run(credential.get_token(f"{clouds.graph_url}/.default")) is token  # kept until near expiry
    assert clouds.stand_ins.graph.meeting(meeting.id) is not None


async def test_wrong_secret_is_a_clear_rejection(clouds: Clouds, trusted: None) -> None:
    credential = AppOnlyCredentials(clouds.authority_host, CONNECTOR_CLIENT_ID, "wrong", http=local_http()).for_tenant(
        CONTOSO.id
    )
    with pytest.raises(UpstreamRejected) as caught:
        await credential.get_token(f"{clouds.graph_url}/.default")
    assert caught.value.code == "invalid_client"


async def test_unreachable_entra(trusted: None) -> None:
    credential = AppOnlyCredentials("https://127.0.0.1:9", CONNECTOR_CLIENT_ID, "x", http=local_http()).for_tenant(
        CONTOSO.id
    )
    with pytest.raises(UpstreamUnavailable):
        await credential.get_token("https://graph.example/.default")


async def test_refreshes_before_expiry() -> None:
    now = [1000.0]
    issued: list[int] = []

    class App:
        def acquire_token_for_client(self, scopes: list[str]) -> dict[str, object]:
            issued.append(1)
            return {"access_token": f"t{len(issued)}", "expires_in": 600}

    credential = AppOnlyCredential(App, clock=lambda: now[0])
    assert (await credential.get_token("s")).token == "t1"
    now[0] += 200
    assert (await credential.get_token("s")).token == "t1"
    now[0] += 200  # within five minutes of expiry
    assert (await credential.get_token("s")).token == "t2"
