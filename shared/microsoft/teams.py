"""Microsoft Graph adapter for Teams meetings and their call-event subscriptions.

The only module that talks to Graph. It uses the Graph SDK family's transport, msgraph-core's
``GraphClientFactory``: an httpx client with Graph's middleware (retry honouring Retry-After,
redirect, parameter-name decoding, URL replacement, user agent, SDK telemetry headers) on our checked
transport. The handful of calls it makes (createOrGet, the lobby PATCH, subscriptions) are written
as plain JSON: msgraph-sdk's generated models and kiota's parsing would cost ~1,200 module imports
(2.7 s of CPU on the first meeting, on the loop every Graph call shares) and ~25 ms of CPU per call,
for bodies of five fields. Neither the launch nor the webhook path imports ``msgraph``.

Its methods are synchronous, like every caller: the httpx client is async (Graph's middleware is),
so each request runs on one event loop in a background thread (``background_loop``) and the calling
thread waits. Nothing CPU-heavy runs on that loop: a token is fetched in a worker thread when not cached.

One meeting per visit with no stored mapping: ``createOrGet`` is idempotent per
(tenant, organizer, externalId), and externalId is an HMAC of the visit. createOrGet cannot
set lobby options, so a PATCH follows: only the organizer bypasses the lobby, only the
organizer presents, joins and leaves are announced.
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, unquote

import httpx

from shared.http.outbound import OutboundPolicy, checked_async_client
from shared.http.upstream import retry_after_seconds
from shared.kernel.errors import UnsafeUrl, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.i18n import N_
from shared.kernel.json_input import MalformedJson, parse_json
from shared.microsoft.background_loop import BackgroundLoop

SYSTEM = "Microsoft Graph"
ACCESS_POLICY_NAME = "Teams-EHR-Connector"  # the name docs/setup.md gives the policy


class AccessPolicyMissing(UpstreamRejected):
    """Graph refused a meeting: no Teams application access policy lets the connector act for its organizer.

    ``organizer_object_id`` is set once the launch knows whom it asked for (``LaunchService``); the
    clinician's page then names the exact commands (``access_policy_commands``).
    """

    code = "graph_access_policy"

    def __init__(self, organizer_object_id: str | None = None) -> None:
        super().__init__(
            N_(
                "Microsoft Teams refused to create the meeting for this organizer: no Teams application access "
                "policy (New-CsApplicationAccessPolicy, Grant-CsApplicationAccessPolicy) lets the connector act "
                "for them."
            ),
            system=SYSTEM,
        )
        self.organizer_object_id = organizer_object_id


def access_policy_commands(app_id: str | None, organizer_object_id: str | None) -> str:
    """The PowerShell a Teams administrator runs, with the connector's app id and the organizer filled in.

    A command whose value is unknown is left out rather than shown with a placeholder.
    """
    lines = ["Connect-MicrosoftTeams"]
    if app_id:
        lines.append(
            f'New-CsApplicationAccessPolicy -Identity "{ACCESS_POLICY_NAME}" -AppIds "{app_id}" '
            '-Description "Teams EHR connector: visit meetings on behalf of clinicians"'
        )
    if organizer_object_id:
        lines.append(
            f'Grant-CsApplicationAccessPolicy -PolicyName "{ACCESS_POLICY_NAME}" -Identity "{organizer_object_id}"'
        )
    return "\n".join(lines)


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
MAX_RETRY_DELAY = 180.0  # the longest wait the retry middleware takes (kiota's RetryHandlerOption.MAX_DELAY)

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
        self._scope = f"{self._base}/.default"
        self._http: httpx.AsyncClient | None = None  # lives on the Graph loop
        self._lock = threading.Lock()

    def create_or_get_meeting(
        self, *, organizer_object_id: str, external_id: str, subject: str, start: datetime, end: datetime
    ) -> Meeting:
        body = {
            "externalId": external_id,
            "subject": subject,
            "startDateTime": _graph_time(start),
            "endDateTime": _graph_time(end),
        }
        path = f"v1.0/users/{_segment(organizer_object_id)}/onlineMeetings/createOrGet"
        meeting = self._send("POST", path, body, "create_meeting")
        meeting_id, join_web_url = _text(meeting, "id"), _text(meeting, "joinWebUrl")
        if not meeting_id or not join_web_url:
            raise UpstreamUnavailable(N_("Microsoft Graph returned an incomplete meeting."), system=SYSTEM)
        return Meeting(id=meeting_id, join_web_url=join_web_url)

    def secure_lobby(self, *, organizer_object_id: str, meeting_id: str) -> None:
        """Patients always wait in the lobby; only the organizer presents; joins are announced."""
        patch = {
            "lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False},
            "allowedPresenters": "organizer",
            "isEntryExitAnnounced": True,
        }
        path = f"v1.0/users/{_segment(organizer_object_id)}/onlineMeetings/{_segment(meeting_id)}"
        self._send("PATCH", path, patch, "update_meeting")

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
        body = {
            "changeType": "updated",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": call_events_resource(join_web_url),
            "includeResourceData": True,
            "encryptionCertificate": certificate_base64,
            "encryptionCertificateId": certificate_id,
            "expirationDateTime": _graph_time(expires_at),
            "clientState": client_state,
        }
        created = self._send("POST", "beta/subscriptions", body, "subscribe")
        subscription_id, expires = _text(created, "id"), _parse_time(_text(created, "expirationDateTime"))
        if not subscription_id or expires is None:
            raise UpstreamUnavailable(N_("Microsoft Graph returned an incomplete subscription."), system=SYSTEM)
        return Subscription(id=subscription_id, expires_at=expires)

    def find_call_events_subscription(self, *, join_web_url: str, notification_url: str) -> Subscription | None:
        """This app's live meetingCallEvents subscription of a meeting, if Graph has one (pages followed)."""
        wanted = _resource_key(call_events_resource(join_web_url))
        now = datetime.now(UTC)
        page = self._send("GET", "beta/subscriptions", None, "list_subscriptions")
        for pages_read in range(1, MAX_SUBSCRIPTION_PAGES + 1):
            values = page.get("value") if isinstance(page, dict) else None
            for found in values if isinstance(values, list) else []:
                if not isinstance(found, dict):
                    continue
                found_id, expires = _text(found, "id"), _parse_time(_text(found, "expirationDateTime"))
                if (
                    found_id
                    and expires is not None
                    and expires > now
                    and _resource_key(_text(found, "resource") or "") == wanted
                    and (_text(found, "notificationUrl") or "") == notification_url
                ):
                    return Subscription(found_id, expires, _text(found, "encryptionCertificateId"))
            next_link = _text(page, "@odata.nextLink")
            if not next_link or pages_read == MAX_SUBSCRIPTION_PAGES:
                break
            page = self._send("GET", next_link, None, "list_subscriptions")
        return None

    def renew_subscription(self, subscription_id: str, expires_at: datetime) -> Subscription:
        path = f"beta/subscriptions/{_segment(subscription_id)}"
        renewed = self._send("PATCH", path, {"expirationDateTime": _graph_time(expires_at)}, "renew")
        return Subscription(
            id=subscription_id, expires_at=_parse_time(_text(renewed, "expirationDateTime")) or expires_at
        )

    def delete_subscription(self, subscription_id: str) -> None:
        try:
            self._send("DELETE", f"beta/subscriptions/{_segment(subscription_id)}", None, "unsubscribe")
        except UpstreamRejected as exc:
            if exc.code != "graph_not_found":  # already gone is fine
                raise

    def _send(self, method: str, path: str, body: dict[str, Any] | None, operation: str) -> Any:
        """One Graph request, run on the Graph loop and waited for here, its failures as the connector's errors.

        ``path`` is relative to the Graph base URL, or an absolute ``@odata.nextLink`` Graph handed out, which
        must stay on the Graph base URL. The answer is the response's JSON (None for an empty body).
        """
        url = path if path.startswith(self._base + "/") else f"{self._base}/{path}"
        if not url.startswith(self._base + "/"):
            raise UpstreamUnavailable(N_("Microsoft Graph pointed to an address outside Graph."), system=SYSTEM)
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        wait = self._longest_wait()
        if wait <= 0:
            raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM)
        try:
            return _LOOP.run(self._request(method, url, content, operation), timeout=wait)
        except TimeoutError:
            raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM) from None

    async def _request(self, method: str, url: str, content: bytes | None, operation: str) -> Any:
        headers = {"Authorization": f"Bearer {await self._token()}", "Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self._client().request(method, url, content=content, headers=headers)
        except UnsafeUrl:  # GRAPH_BASE_URL resolved to an address the outbound rules refuse
            raise UpstreamUnavailable(N_("Microsoft Graph's address is not allowed."), system=SYSTEM) from None
        except httpx.TimeoutException:
            raise UpstreamUnavailable(N_("Microsoft Graph did not answer in time."), system=SYSTEM) from None
        except httpx.TransportError:
            raise UpstreamUnavailable(N_("Microsoft Graph could not be reached."), system=SYSTEM) from None
        payload = _json_or_none(response.content)
        if response.status_code >= 400:
            error = payload.get("error") if isinstance(payload, dict) else None
            code = _text(error, "code") or ""
            raise _graph_error(response.status_code, code, response.headers, operation)
        return payload

    async def _token(self) -> str:
        """The app-only token: the credential keeps it, and fetches a new one off the loop (``app_credentials``)."""
        result = self._credential.get_token(self._scope)
        if inspect.isawaitable(result):
            result = await result
        token = getattr(result, "token", None)
        if not isinstance(token, str) or not token:
            raise UpstreamUnavailable(N_("No app-only token for Microsoft Graph."), system=SYSTEM)
        return token

    def _longest_wait(self) -> float:
        """Until this thread's ``graph_deadline``; without one, the retry middleware's own worst case (every
        attempt, and the longest wait before each retry), beyond which only a stuck loop keeps the caller waiting."""
        wait = (MAX_RETRIES + 1) * self._timeout + MAX_RETRIES * MAX_RETRY_DELAY
        deadline = _deadline.get()
        return wait if deadline is None else min(wait, deadline - time.monotonic())

    def _client(self) -> httpx.AsyncClient:
        with self._lock:
            if self._http is None:
                from kiota_http.middleware.options import RetryHandlerOption
                from msgraph_core import GraphClientFactory

                retry = RetryHandlerOption(delay=0.5, max_retries=MAX_RETRIES)
                self._http = GraphClientFactory.create_with_default_middleware(
                    client=checked_async_client(self._policy, base_url=self._base, timeout=self._timeout),
                    options={RetryHandlerOption.get_key(): retry},
                )
            return self._http


def _segment(value: str) -> str:
    """One path segment: an id Graph or Entra ID gave us, escaped so it can never add a segment or a query."""
    return quote(value, safe="")


def _graph_time(value: datetime) -> str:
    """ISO 8601 in UTC, as Graph's DateTimeOffset properties take it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: str | None) -> datetime | None:
    """Graph's DateTimeOffset (up to seven fractional digits, ``Z`` or an offset); None when absent or unreadable."""
    if not value:
        return None
    head, dot, rest = value.partition(".")
    if dot:  # Python takes at most six fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        rest = rest[:digits][:6] + rest[digits:]
        value = f"{head}.{rest}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return parse_json(body)
    except MalformedJson:
        return None


def _text(data: Any, name: str) -> str | None:
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _graph_error(status: int, code: str, headers: Mapping[str, str], operation: str) -> Exception:
    """A Graph error answer (its status, its JSON ``error.code`` if any, its headers) as the connector's error."""
    if status == 429 or (status == 503 and retry_after_seconds(headers) is not None):
        return UpstreamThrottled(
            N_("Microsoft Graph is busy (throttled). Please try again in a moment."),
            system=SYSTEM,
            retry_after=retry_after_seconds(headers),
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
    safe = "".join(c for c in code if c.isalnum())[:64]
    return UpstreamRejected(
        N_("Microsoft Graph rejected the request (%(code_or_status)s).", code_or_status=safe or status),
        system=SYSTEM,
        code="graph_rejected",
    )


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
