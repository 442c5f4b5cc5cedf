"""The wired sandbox: an app token from the sandbox Entra (real msal) is accepted by the sandbox Graph."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msal
import pytest
from azure.core.credentials import AccessToken

from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO
from sandbox.stand_ins import RunningStandIns, start_stand_ins
from shared.microsoft.teams import TeamsClient
from tests.support.outbound import LOCAL_POLICY

SMITH = "b0000000-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStandIns]:
    running = start_stand_ins(Path(tmp_path_factory.mktemp("sandbox")))
    yield running
    running.stop()


class MsalAppCredential:
    """Client credentials through msal: the shape kiota's auth provider calls."""

    def __init__(self, authority: str) -> None:
        self.app = msal.ConfidentialClientApplication(
            CONNECTOR_CLIENT_ID, client_credential=CONNECTOR_CLIENT_SECRET, authority=authority,
            instance_discovery=False,
        )  # fmt: skip

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        result = self.app.acquire_token_for_client(list(scopes))
        assert "access_token" in result, result
        return AccessToken(result["access_token"], int(time.time()) + int(result["expires_in"]))


def test_graph_accepts_entra_app_tokens(stand_ins: RunningStandIns, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stand_ins.settings.items():
        if key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.setenv(key, value)
    credential = MsalAppCredential(f"{stand_ins.settings['ENTRA_AUTHORITY_HOST']}/{CONTOSO.id}")
    teams = TeamsClient(stand_ins.settings["GRAPH_BASE_URL"], credential, policy=LOCAL_POLICY)
    start = datetime.now(UTC)
    meeting = teams.create_or_get_meeting(
        organizer_object_id=SMITH, external_id="wired", subject="Virtual visit", start=start,
        end=start + timedelta(hours=1),
    )  # fmt: skip
    teams.secure_lobby(organizer_object_id=SMITH, meeting_id=meeting.id)
    assert stand_ins.graph.meeting(meeting.id) is not None
    assert meeting.join_web_url.startswith(stand_ins.settings["GRAPH_BASE_URL"])


def test_ehr_knows_the_connector_clients(stand_ins: RunningStandIns) -> None:
    import httpx

    discovery = httpx.get(f"{stand_ins.ehr.config.fhir_base}/.well-known/smart-configuration").json()
    assert "S256" in discovery["code_challenge_methods_supported"]
    clients = httpx.get(f"{stand_ins.ehr.config.origin}/_sandbox/clients").json()
    assert len(clients) >= 3
