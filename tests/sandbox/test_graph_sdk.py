"""The real msgraph-sdk against the sandbox Graph, built exactly as the connector builds it."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from msgraph import GraphServiceClient
from msgraph.generated.models.lobby_bypass_scope import LobbyBypassScope
from msgraph.generated.models.lobby_bypass_settings import LobbyBypassSettings
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.online_meeting import OnlineMeeting
from msgraph.generated.models.online_meeting_presenters import OnlineMeetingPresenters
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
    CreateOrGetPostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

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
    subscription_body,
)

# msgraph-sdk's generated request builders warn about their own deprecated configuration classes.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class StaticCredential:
    """An azure-core TokenCredential handing out one pre-minted token (kiota passes claims/enable_cae)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def sdk_client(base: str, credential: StaticCredential, scope: str) -> GraphServiceClient:
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(base_url=base))
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[scope])
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = base
    return GraphServiceClient(request_adapter=adapter)


@pytest.fixture
def credential(graph: RunningGraph) -> StaticCredential:
    return StaticCredential(graph.tokens.app_token())


def _v1(graph: RunningGraph, credential: StaticCredential) -> GraphServiceClient:
    return sdk_client(f"{graph.url}/v1.0", credential, f"{graph.url}/.default")


async def test_create_or_get_then_patch_and_get(graph: RunningGraph, credential: StaticCredential) -> None:
    client = _v1(graph, credential)
    external_id = str(uuid.uuid4())
    meetings = client.users.by_user_id(SMITH).online_meetings
    first = await meetings.create_or_get.post(CreateOrGetPostRequestBody(external_id=external_id, subject="Visit"))
    again = await meetings.create_or_get.post(CreateOrGetPostRequestBody(external_id=external_id))
    assert first is not None and again is not None and first.id == again.id
    assert first.lobby_bypass_settings is not None
    assert first.lobby_bypass_settings.scope == LobbyBypassScope.Organization
    other = await meetings.create_or_get.post(CreateOrGetPostRequestBody(external_id=str(uuid.uuid4())))
    lee = await client.users.by_user_id(LEE).online_meetings.create_or_get.post(
        CreateOrGetPostRequestBody(external_id=external_id)
    )
    assert other is not None and lee is not None and len({first.id, other.id, lee.id}) == 3
    assert credential.scopes[0] == (f"{graph.url}/.default",)

    assert first.id is not None
    patch = OnlineMeeting(
        lobby_bypass_settings=LobbyBypassSettings(scope=LobbyBypassScope.Organizer, is_dial_in_bypass_enabled=False),
        allowed_presenters=OnlineMeetingPresenters.Organizer,
        is_entry_exit_announced=False,
    )
    config = RequestConfiguration()
    config.headers.add("Prefer", "include-unknown-enum-members")
    patched = await meetings.by_online_meeting_id(first.id).patch(patch, request_configuration=config)
    assert patched is not None and patched.allowed_presenters == OnlineMeetingPresenters.Organizer
    fetched = await meetings.by_online_meeting_id(first.id).get()
    assert fetched is not None and fetched.lobby_bypass_settings is not None
    assert fetched.lobby_bypass_settings.scope == LobbyBypassScope.Organizer
    assert fetched.is_entry_exit_announced is False
    assert fetched.join_web_url == first.join_web_url


async def test_odata_errors_carry_status_and_code(graph: RunningGraph, credential: StaticCredential) -> None:
    client = _v1(graph, credential)
    with pytest.raises(ODataError) as denied:
        await client.users.by_user_id(NOPOLICY).online_meetings.create_or_get.post(
            CreateOrGetPostRequestBody(external_id="x")
        )
    assert denied.value.response_status_code == 403
    assert denied.value.error is not None and denied.value.error.code == "Unauthorized"
    assert "is not authorized to Create meeting on behalf of user" in (denied.value.error.message or "")

    expired = sdk_client(
        f"{graph.url}/v1.0",
        StaticCredential(graph.tokens.app_token(exp=int(time.time()) - 600)),
        f"{graph.url}/.default",
    )
    with pytest.raises(ODataError) as unauthenticated:
        await expired.users.by_user_id(SMITH).online_meetings.create_or_get.post(
            CreateOrGetPostRequestBody(external_id="x")
        )
    assert unauthenticated.value.response_status_code == 401
    assert unauthenticated.value.error is not None
    assert unauthenticated.value.error.code == "InvalidAuthenticationToken"


async def test_beta_subscription_lifecycle_with_the_sdk(
    graph: RunningGraph, credential: StaticCredential, receiver: Receiver, cert: Certificate
) -> None:
    client = _v1(graph, credential)
    meeting = await client.users.by_user_id(SMITH).online_meetings.create_or_get.post(
        CreateOrGetPostRequestBody(external_id=str(uuid.uuid4()))
    )
    assert meeting is not None and meeting.join_web_url is not None
    beta = sdk_client(f"{graph.url}/beta", credential, f"{graph.url}/.default")
    body = subscription_body(meeting.join_web_url, f"{receiver.url}/ok?code=function-key", cert)
    expiration = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    created = await beta.subscriptions.post(
        Subscription(
            change_type=body["changeType"],
            notification_url=body["notificationUrl"],
            lifecycle_notification_url=f"{receiver.url}/lifecycle",
            resource=body["resource"],
            include_resource_data=True,
            encryption_certificate=body["encryptionCertificate"],
            encryption_certificate_id=body["encryptionCertificateId"],
            expiration_date_time=expiration,
            client_state=body["clientState"],
        )
    )
    assert created is not None and created.id is not None
    assert created.resource == body["resource"] and quote(meeting.join_web_url, safe="") in body["resource"]
    assert created.include_resource_data is True
    paths = [path for path, _, _ in receiver.handshakes]
    assert "/ok" in paths and "/lifecycle" in paths

    renewed = await beta.subscriptions.by_subscription_id(created.id).patch(
        Subscription(expiration_date_time=expiration + dt.timedelta(hours=1))
    )
    assert renewed is not None and renewed.id == created.id
    assert renewed.expiration_date_time is not None
    assert abs((renewed.expiration_date_time - expiration).total_seconds() - 3600) < 1
    live = graph.sandbox.subscription(created.id)
    assert live is not None and live.notification_url.endswith("/ok?code=function-key")
    await beta.subscriptions.by_subscription_id(created.id).delete()
    with pytest.raises(ODataError) as gone:
        await beta.subscriptions.by_subscription_id(created.id).get()
    assert gone.value.response_status_code == 404
