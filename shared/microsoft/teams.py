"""Microsoft Graph adapter for Teams meetings and their call-event subscriptions.

The only module that talks to Graph. msgraph-sdk is large (hundreds of modules), so it is
imported on first use, never at import time: the webhook and health paths never pay for it.

Its methods are synchronous, like every caller: msgraph-sdk is async-only, so each Graph request
runs on one event loop in a background thread (``background_loop``) and the calling thread waits.

One meeting per visit with no stored mapping: ``createOrGet`` is idempotent per
(tenant, organizer, externalId), and externalId is an HMAC of the visit. createOrGet cannot
set lobby options, so a PATCH follows: only the organizer bypasses the lobby, only the
organizer presents, joins and leaves are announced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

import httpx

from shared.http.outbound import OutboundPolicy, checked_async_client
from shared.http.upstream import retry_after_seconds
from shared.kernel.errors import ErrorPage, UnsafeUrl, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.i18n import N_
from shared.microsoft.background_loop import BackgroundLoop

SYSTEM = "Microsoft Graph"
ACCESS_POLICY_HELP = (
    "A Teams administrator must allow the connector to create meetings for this organizer: "
    "New-CsApplicationAccessPolicy -Identity TeamsEhrConnector -AppIds <connector client id>; "
    "Grant-CsApplicationAccessPolicy -PolicyName TeamsEhrConnector -Identity <organizer object id> "
    "(or -Global). Changes can take up to 30 minutes."
)


class AccessPolicyMissing(UpstreamRejected):
    """Graph refused a meeting: no Teams application access policy lets the connector act for its organizer."""

    code = "graph_access_policy"
    page = ErrorPage(
        N_("Teams meeting could not be created"),
        N_(
            "Microsoft Teams refused to create the meeting for this organizer: the connector has no "
            "application access policy for them."
        ),
        help=(N_("A Teams administrator runs the PowerShell below; the change can take up to 30 minutes."),),
        code_block=ACCESS_POLICY_HELP,
    )

    def __init__(self) -> None:
        super().__init__(
            "Microsoft Teams refused to create the meeting for this organizer. " + ACCESS_POLICY_HELP, system=SYSTEM
        )


class AppTokenCredential(Protocol):
    """What kiota's AzureIdentityAuthenticationProvider calls (azure-core's credential shape)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Meeting:
    id: str
    join_web_url: str


@dataclass(frozen=True)
class Subscription:
    id: str
    expires_at: datetime
    certificate_id: str | None = None  # the encryption certificate Graph encrypts its notifications with


def call_events_resource(join_web_url: str) -> str:
    """The meetingCallEvents resource: the join URL is encoded once more, so ``%`` becomes ``%25``."""
    return f"communications/onlineMeetings(joinWebUrl='{quote(join_web_url, safe='')}')/meetingCallEvents"


def _resource_key(resource: str) -> str:
    """Graph may echo a resource with other percent-encoding or letter case than we sent."""
    return unquote(unquote(resource)).lower()


MAX_SUBSCRIPTION_PAGES = 100  # Graph pages subscriptions by 100; the organization quota is 10,000
MAX_RETRIES = 2  # of 429/503/504, honouring Retry-After: a waiting clinician beats a perfect retry

_LOOP = BackgroundLoop("graph")
_deadline: ContextVar[float | None] = ContextVar("graph_deadline", default=None)


@contextmanager
def graph_deadline(seconds: float) -> Iterator[None]:
    """Graph requests this thread makes inside the block give up ``seconds`` from now.

    For webhooks Graph calls itself: it waits only a few seconds for their answer.
    """
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


class TeamsClient:
    """Graph calls for one tenant's app-only credential."""

    def __init__(
        self, graph_base_url: str, credential: AppTokenCredential, *, policy: OutboundPolicy, timeout: float = 10.0
    ) -> None:
        self._base = graph_base_url.rstrip("/")
        self._credential = credential
        self._policy = policy
        self._timeout = timeout
        self._clients: dict[str, Any] = {}  # per Graph version; their httpx clients live on the Graph loop
        self._lock = threading.Lock()

    def create_or_get_meeting(
        self, *, organizer_object_id: str, external_id: str, subject: str, start: datetime, end: datetime
    ) -> Meeting:
        from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
            CreateOrGetPostRequestBody,
        )

        body = CreateOrGetPostRequestBody(
            external_id=external_id, subject=subject, start_date_time=start, end_date_time=end
        )
        graph = self._graph("v1.0")
        meeting = self._send(
            graph.users.by_user_id(organizer_object_id).online_meetings.create_or_get.post(body), "create_meeting"
        )
        if meeting is None or not meeting.id or not meeting.join_web_url:
            raise UpstreamUnavailable(N_("Microsoft Graph returned an incomplete meeting."), system=SYSTEM)
        return Meeting(id=meeting.id, join_web_url=meeting.join_web_url)

    def secure_lobby(self, *, organizer_object_id: str, meeting_id: str) -> None:
        """Patients always wait in the lobby; only the organizer presents; joins are announced."""
        from msgraph.generated.models.lobby_bypass_scope import LobbyBypassScope
        from msgraph.generated.models.lobby_bypass_settings import LobbyBypassSettings
        from msgraph.generated.models.online_meeting import OnlineMeeting
        from msgraph.generated.models.online_meeting_presenters import OnlineMeetingPresenters

        patch = OnlineMeeting(
            lobby_bypass_settings=LobbyBypassSettings(
                scope=LobbyBypassScope.Organizer, is_dial_in_bypass_enabled=False
            ),
            allowed_presenters=OnlineMeetingPresenters.Organizer,
            is_entry_exit_announced=True,
        )
        graph = self._graph("v1.0")
        request = graph.users.by_user_id(organizer_object_id).online_meetings.by_online_meeting_id(meeting_id)
        self._send(request.patch(patch), "update_meeting")

    def subscribe_call_events(
        self,
        *,
        join_web_url: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        certificate_base64: str,
        certificate_id: str,
        expires_at: datetime,
    ) -> Subscription:
        """Rich (encrypted) meetingCallEvents notifications; beta only, application permission only."""
        from msgraph.generated.models.subscription import Subscription as GraphSubscription

        body = GraphSubscription(
            change_type="updated",
            notification_url=notification_url,
            lifecycle_notification_url=lifecycle_url,
            resource=call_events_resource(join_web_url),
            include_resource_data=True,
            encryption_certificate=certificate_base64,
            encryption_certificate_id=certificate_id,
            expiration_date_time=expires_at,
            client_state=client_state,
        )
        created = self._send(self._graph("beta").subscriptions.post(body), "subscribe")
        if created is None or not created.id or created.expiration_date_time is None:
            raise UpstreamUnavailable(N_("Microsoft Graph returned an incomplete subscription."), system=SYSTEM)
        return Subscription(id=created.id, expires_at=created.expiration_date_time)

    def find_call_events_subscription(self, *, join_web_url: str, notification_url: str) -> Subscription | None:
        """This app's live meetingCallEvents subscription of a meeting, if Graph has one (pages followed)."""
        wanted = _resource_key(call_events_resource(join_web_url))
        now = datetime.now(UTC)
        subscriptions = self._graph("beta").subscriptions
        page = self._send(subscriptions.get(), "list_subscriptions")
        for pages_read in range(1, MAX_SUBSCRIPTION_PAGES + 1):
            for found in (page.value if page else None) or []:
                if (
                    found.id
                    and found.expiration_date_time
                    and found.expiration_date_time > now
                    and _resource_key(found.resource or "") == wanted
                    and (found.notification_url or "") == notification_url
                ):
                    return Subscription(found.id, found.expiration_date_time, found.encryption_certificate_id)
            next_link = page.odata_next_link if page else None
            if not next_link or pages_read == MAX_SUBSCRIPTION_PAGES:
                break
            page = self._send(subscriptions.with_url(next_link).get(), "list_subscriptions")
        return None

    def renew_subscription(self, subscription_id: str, expires_at: datetime) -> Subscription:
        from msgraph.generated.models.subscription import Subscription as GraphSubscription

        request = self._graph("beta").subscriptions.by_subscription_id(subscription_id)
        renewed = self._send(request.patch(GraphSubscription(expiration_date_time=expires_at)), "renew")
        return Subscription(id=subscription_id, expires_at=(renewed and renewed.expiration_date_time) or expires_at)

    def delete_subscription(self, subscription_id: str) -> None:
        try:
            self._send(self._graph("beta").subscriptions.by_subscription_id(subscription_id).delete(), "unsubscribe")
        except UpstreamRejected as exc:
            if exc.code != "graph_not_found":  # already gone is fine
                raise

    def _send(self, request: Coroutine[Any, Any, Any], operation: str) -> Any:
        """One Graph request, run on the Graph loop and waited for here, its failures as the connector's errors."""
        wait = self._longest_wait()
        if wait <= 0:
            request.close()
            raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM)
        try:
            return _LOOP.run(_call(request, operation), timeout=wait)
        except TimeoutError:
            raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM) from None

    def _longest_wait(self) -> float:
        """Until this thread's ``graph_deadline``; without one, kiota's own worst case (every attempt, and
        the longest wait before each retry), beyond which only a stuck loop would keep the caller waiting."""
        from kiota_http.middleware.options import RetryHandlerOption

        wait = (MAX_RETRIES + 1) * self._timeout + MAX_RETRIES * RetryHandlerOption.MAX_DELAY
        deadline = _deadline.get()
        return wait if deadline is None else min(wait, deadline - time.monotonic())

    def _graph(self, version: str) -> Any:
        with self._lock:
            if version not in self._clients:
                self._clients[version] = self._build(version)
            return self._clients[version]

    def _build(self, version: str) -> Any:
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )
        from kiota_http.middleware.options import RetryHandlerOption
        from msgraph.graph_request_adapter import GraphRequestAdapter
        from msgraph.graph_service_client import GraphServiceClient
        from msgraph_core import GraphClientFactory

        base = f"{self._base}/{version}"
        retry = RetryHandlerOption(delay=0.5, max_retries=MAX_RETRIES)
        http = GraphClientFactory.create_with_default_middleware(
            client=checked_async_client(self._policy, base_url=base, timeout=self._timeout),
            options={RetryHandlerOption.get_key(): retry},
        )
        auth = AzureIdentityAuthenticationProvider(
            self._credential, scopes=[f"{self._base}/.default"], is_cae_enabled=False
        )
        adapter = GraphRequestAdapter(auth, client=http)
        adapter.base_url = base  # the setter strips the trailing slash httpx adds
        return GraphServiceClient(request_adapter=adapter)


async def _call(awaitable: Any, operation: str) -> Any:
    """Await a Graph call, turning its failures into the connector's error hierarchy."""
    from kiota_abstractions.api_error import APIError

    try:
        return await awaitable
    except APIError as exc:
        raise _graph_error(exc, operation) from None
    except UnsafeUrl:  # GRAPH_BASE_URL resolved to an address the outbound rules refuse
        raise UpstreamUnavailable(N_("Microsoft Graph's address is not allowed."), system=SYSTEM) from None
    except httpx.TimeoutException:
        raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM) from None
    except httpx.TransportError:
        raise UpstreamUnavailable(N_("Microsoft Graph could not be reached."), system=SYSTEM) from None


def _graph_error(exc: Any, operation: str) -> Exception:
    status = int(getattr(exc, "response_status_code", 0) or 0)
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    if status == 429 or (status == 503 and _retry_after(exc) is not None):
        return UpstreamThrottled(
            N_("Microsoft Graph is busy (throttled). Please try again in a moment."),
            system=SYSTEM,
            retry_after=_retry_after(exc),
            code="graph_throttled",
        )
    if status >= 500 or status == 0:
        return UpstreamUnavailable(N_("Microsoft Graph is temporarily unavailable."), system=SYSTEM)
    if status == 403 and operation in ("create_meeting", "update_meeting"):
        return AccessPolicyMissing()
    if status == 404:
        return UpstreamRejected(
            N_("Microsoft Graph could not find that resource."), system=SYSTEM, code="graph_not_found"
        )
    if status == 409 and operation == "subscribe":
        return UpstreamRejected(
            N_("This meeting's call events already have a subscription."),
            system=SYSTEM,
            code="graph_subscription_exists",
        )
    if status == 401:
        return UpstreamRejected(
            N_("Microsoft Graph rejected the connector's credentials."), system=SYSTEM, code="graph_unauthorized"
        )
    return UpstreamRejected(
        N_("Microsoft Graph rejected the request (%(code_or_status)s).", code_or_status=code or status),
        system=SYSTEM,
        code="graph_rejected",
    )


def _retry_after(exc: Any) -> float | None:
    """Graph's ``Retry-After``, read by the one parser; kiota may hand a header's values over as a list."""
    headers = getattr(exc, "response_headers", None) or {}
    flat = {
        str(name): str(next(iter(value), "")) if isinstance(value, list | tuple | set) else str(value)
        for name, value in dict(headers).items()
    }
    return retry_after_seconds(flat)


class TeamsClients:
    """One ``TeamsClient`` per organizer tenant, built on first use and shared by launches and subscriptions."""

    def __init__(
        self,
        graph_base_url: str,
        credential_for: Callable[[str], AppTokenCredential],
        *,
        policy: OutboundPolicy,
        timeout: float = 10.0,
    ) -> None:
        self._base = graph_base_url
        self._credential_for = credential_for
        self._policy = policy
        self._timeout = timeout
        self._clients: dict[str, TeamsClient] = {}
        self._lock = threading.Lock()

    def for_tenant(self, tenant_id: str) -> TeamsClient:
        with self._lock:
            client = self._clients.get(tenant_id)
            if client is None:
                client = TeamsClient(
                    self._base, self._credential_for(tenant_id), policy=self._policy, timeout=self._timeout
                )
                self._clients[tenant_id] = client
        return client
