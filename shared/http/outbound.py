"""Safe outbound URLs: the rules for every URL a user (or an EHR's discovery document) gives us.

A FHIR base URL typed into the portal, the ``iss`` of a launch and every endpoint an EHR's
discovery document names are fetched by this process, so each is a server-side request
forgery risk. The rules:

* ``https`` only; ``http`` only for hosts on ``OUTBOUND_ALLOWED_HOSTS`` (the sandbox);
* no credentials, no fragment, no query on a base URL, a real host name;
* every address the host resolves to must be public (not private, loopback, link-local,
  multicast, reserved, unspecified) unless the host is allow-listed;
* the connection goes to an address that was checked, resolved once at connect time, so a
  second DNS answer cannot swap in a private address (DNS rebinding);
* redirects are never followed; strict timeouts; responses larger than a limit are refused.

``OutboundPolicy`` holds the settings, ``check_url`` applies the rules before any request,
and ``SafeHttp`` is the one HTTP client of the connector (its transport re-applies the address
rules on every connection): EHR discovery, JWKS, tokens, FHIR reads and writeback, and the
documents and tokens of Microsoft Entra ID (msal's ``http_client`` is a ``SafeHttp`` adapter).
msgraph-core's Graph client needs an ``httpx.AsyncClient``: ``checked_async_client`` builds it on the
same address checks. The storage SDKs get ``storage_transport`` (their endpoints come from settings).
This module is the only place in ``shared/`` that constructs an HTTP client (tests/security/test_outbound.py
enforces it).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import ipaddress
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from shared.kernel.errors import UnsafeUrl, UpstreamRejected, UpstreamUnavailable
from shared.kernel.i18n import N_
from shared.kernel.json_input import MalformedJson, parse_json

if TYPE_CHECKING:
    import requests
    from azure.core.pipeline.transport import RequestsTransport

    from shared.kernel.settings import Settings

DEFAULT_MAX_BYTES = 1024 * 1024  # Epic R4 CapabilityStatements run to a few hundred KB
MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"https": 443, "http": 80}
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class OutboundPolicy:
    """Which hosts may be reached over http or on non-public addresses, and how patiently."""

    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    timeout_seconds: float = 10.0
    max_bytes: int = DEFAULT_MAX_BYTES

    def is_allow_listed(self, host: str) -> bool:
        return host.lower().strip("[]") in {h.strip("[]") for h in self.allowed_hosts}


def outbound_policy(settings: Settings) -> OutboundPolicy:
    """The policy every outbound client of this process uses (``OUTBOUND_ALLOWED_HOSTS``, ``HTTP_TIMEOUT_SECONDS``)."""
    return OutboundPolicy(allowed_hosts=settings.outbound_allowed_hosts, timeout_seconds=settings.http_timeout_seconds)


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the syntax rules; ``url`` is its normalised text."""

    url: str
    scheme: str
    host: str
    port: int
    path: str


def normalise_base_url(raw: str) -> str:
    """Canonical text of a base URL: lower-case scheme and host, no default port, no trailing slash.

    Path case is kept (Epic paths such as ``/api/FHIR/R4`` are case-sensitive). Two spellings
    of the same server normalise to the same string, which keys ``ConfigurationIndex``.
    """
    parts = urlsplit(raw.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(parts.scheme.lower()) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), netloc, path, parts.query, ""))


_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")  # one C-level scan (non-ASCII spaces: str.isspace)


def check_url_syntax(raw: str, policy: OutboundPolicy, *, base_url: bool = False) -> CheckedUrl:
    """Apply the rules that need no network. Raises ``UnsafeUrl`` with a reason users can act on."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise UnsafeUrl(N_("enter the full https:// address of the FHIR server"))
    if len(text) > MAX_URL_LENGTH:
        raise UnsafeUrl(N_("it is longer than %(max_url_length)s characters", max_url_length=MAX_URL_LENGTH))
    if _SPACE_OR_CONTROL.search(text) or (not text.isascii() and any(ch.isspace() for ch in text)):
        raise UnsafeUrl(N_("it contains spaces or control characters"))
    if not _SCHEME_RE.match(text):  # "ehr.example.org/fhir", "ehr.example.org:443/fhir" (read as a scheme)
        raise UnsafeUrl(N_("the scheme is missing: start the address with https://"))
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UnsafeUrl(N_("it is not a well-formed URL")) from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeUrl(N_("only https:// addresses are accepted"))
    host = (parts.hostname or "").lower()
    if not host:
        raise UnsafeUrl(N_("it has no host name"))
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeUrl(N_("it must not contain a user name or password"))
    if parts.fragment or text.endswith("#"):
        raise UnsafeUrl(N_("it must not contain a #fragment"))
    if base_url and (parts.query or text.endswith("?")):
        raise UnsafeUrl(N_("a base URL must not contain a ?query"))
    if scheme == "http" and not policy.is_allow_listed(host):
        raise UnsafeUrl(N_("only https:// addresses are accepted"))
    if not _valid_host(host):
        raise UnsafeUrl(N_("its host name is not valid"))
    literal = _ip_literal(host)
    if literal is not None and not policy.is_allow_listed(host) and not _is_public(literal):
        raise UnsafeUrl(N_("it points to a non-public address (%(literal)s)", literal=literal))
    resolved_port = port if port is not None else _DEFAULT_PORTS[scheme]
    url = normalise_base_url(text) if base_url else text
    return CheckedUrl(url=url, scheme=scheme, host=host, port=resolved_port, path=parts.path)


def check_url(raw: str, policy: OutboundPolicy, *, base_url: bool = False) -> CheckedUrl:
    """Syntax rules plus name resolution: every address must be public unless the host is allow-listed."""
    checked = check_url_syntax(raw, policy, base_url=base_url)
    resolve_checked(checked.host, checked.port, policy)
    return checked


def resolve_checked(host: str, port: int, policy: OutboundPolicy) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing if any one of them is not public."""
    bare = host.strip("[]")
    literal = _ip_literal(bare)
    # For a host name, "not found" and "resolves to a private address" get one message: telling them apart
    # (or echoing the resolved address) would let a portal user map internal DNS names and addresses.
    unreachable = UnsafeUrl(N_("the host name %(host)s does not resolve to a public internet address", host=host))
    try:
        infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise unreachable from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise unreachable
    if not policy.is_allow_listed(host):
        for address in addresses:
            if not _is_public(ipaddress.ip_address(address)):
                if literal is not None:  # the address the user typed themselves may be named
                    raise UnsafeUrl(N_("it points to a non-public address (%(literal)s)", literal=literal))
                raise unreachable
    return addresses


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return _is_public(ip.ipv4_mapped)
        # 6to4 (2002::/16) and Teredo (2001::/32) carry an IPv4 address that relays deliver to.
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not _is_public(embedded):
            return False
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _valid_host(host: str) -> bool:
    if _ip_literal(host) is not None:
        return True
    if len(host) > 253:
        return False
    labels = host.rstrip(".").split(".")
    return (
        all(
            0 < len(label) <= 63 and all(c.isalnum() or c == "-" for c in label) and not label.startswith("-")
            for label in labels
        )
        and not host.replace(".", "").isdigit()
    )


# --- the client --------------------------------------------------------------------------


class _CheckedBackend(httpcore.SyncBackend):
    """Resolves each host once, checks every address, and connects only to a checked address."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = resolve_checked(host, port, self._policy)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error


KEEPALIVE_SECONDS = 30.0  # an idle connection is closed after this long (httpcore's keepalive_expiry)
_Origin = tuple[bytes, bytes, int | None]


class _Releasing(httpx.SyncByteStream):
    """A response body that hands its connection back once the body is closed (read to the end, or closed)."""

    def __init__(self, inner: httpx.SyncByteStream, release: Callable[[], None]) -> None:
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport with connections that each go through the checks, kept per origin, freshest first.

    TLS still verifies the certificate against the host name (SNI), not the address.

    Each connection lives in a one-connection httpcore pool; idle ones wait on a stack per origin (scheme, host,
    port). A request takes the one most recently handed back for its origin (the freshest) or opens one, and hands
    it back when its body is closed; one idle longer than ``KEEPALIVE_SECONDS`` is closed at the next request.
    So a light load reuses one warm connection per host, 24 requests in flight keep 24, none are opened after
    warm-up, and none stay open idle. Not one shared pool: httpcore's pool does O(connections²) bookkeeping on
    every request and response (each idle connection counted against all the others, each polled for
    readability), which made the writeback's EHR call cost twice its sequential CPU with 24 in flight
    (``benchmarks.writeback``, README "Performance and cost").
    """

    def __init__(self, policy: OutboundPolicy, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        self._backend = _CheckedBackend(policy)
        self._idle: dict[_Origin, list[tuple[float, httpcore.ConnectionPool]]] = {}  # stacks: the freshest last
        self._every: weakref.WeakSet[httpcore.ConnectionPool] = weakref.WeakSet()  # one never handed back goes
        self._idle_lock = threading.Lock()
        self._current = threading.local()
        super().__init__(verify=ssl_context, trust_env=False)

    def _take(self, origin: _Origin) -> httpcore.ConnectionPool:
        now = time.monotonic()
        with self._idle_lock:
            expired = self._expired(now)
            stack = self._idle.get(origin)
            pool = stack.pop()[1] if stack else None
        for stale in expired:
            stale.close()
        if pool is None:
            pool = httpcore.ConnectionPool(
                ssl_context=self._ssl_context,
                max_connections=1,
                max_keepalive_connections=1,
                keepalive_expiry=KEEPALIVE_SECONDS,
                network_backend=self._backend,
            )
            with self._idle_lock:
                self._every.add(pool)
        return pool

    def _expired(self, now: float) -> list[httpcore.ConnectionPool]:
        """Connections idle too long, taken off their stacks (the oldest are at the bottom); under the lock."""
        expired: list[httpcore.ConnectionPool] = []
        for origin, stack in list(self._idle.items()):
            while stack and now - stack[0][0] > KEEPALIVE_SECONDS:
                expired.append(stack.pop(0)[1])
            if not stack:
                del self._idle[origin]
        return expired

    def _hand_back(self, origin: _Origin, pool: httpcore.ConnectionPool) -> None:
        with self._idle_lock:
            self._idle.setdefault(origin, []).append((time.monotonic(), pool))

    @property
    def _pool(self) -> httpcore.ConnectionPool:
        """The connection of the request this thread is sending (httpx's ``handle_request`` sends through it)."""
        pool: httpcore.ConnectionPool = self._current.pool
        return pool

    @_pool.setter
    def _pool(self, unused: object) -> None:
        """httpx's constructor sets a pool of its own (unchecked, never used): it is dropped at once."""
        if isinstance(unused, httpcore.ConnectionPool):
            unused.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        origin: _Origin = (request.url.raw_scheme, request.url.raw_host, request.url.port)
        pool = self._current.pool = self._take(origin)
        try:
            response = super().handle_request(request)
        except BaseException:
            self._hand_back(origin, pool)
            raise
        finally:
            self._current.pool = None
        assert isinstance(response.stream, httpx.SyncByteStream)
        response.stream = _Releasing(response.stream, lambda: self._hand_back(origin, pool))
        return response

    def __enter__(self) -> _CheckedTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._idle_lock:
            pools, self._idle = list(self._every), {}
        for pool in pools:
            pool.close()


class _CheckedAsyncBackend(httpcore.AsyncNetworkBackend):
    """The async twin of ``_CheckedBackend`` (msgraph-core's Graph client runs on an event loop)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # Name resolution blocks: it runs on a worker thread, never on the loop that serves every Graph call.
        addresses = await asyncio.to_thread(resolve_checked, host, port, self._policy)
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an outbound destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CheckedAsyncTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: OutboundPolicy, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=30.0,
            network_backend=_CheckedAsyncBackend(policy),
        )


_ClientT = TypeVar("_ClientT", httpx.Client, httpx.AsyncClient)


def without_cookies(client: _ClientT) -> _ClientT:
    """The client with a cookie jar that keeps nothing: a cookie an EHR or Microsoft sets is never sent back on a
    later request (another launch, another user); every call carries its own credentials. (httpx copies a jar
    handed to its constructor into a default one, so the policy is set on the client's own jar.)"""
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return client


def checked_async_client(policy: OutboundPolicy, *, base_url: str, timeout: float) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for a fixed service (Microsoft Graph): every connection's address is checked,
    no proxy or other setting comes from the environment, redirects are not followed by httpx itself."""
    check_url_syntax(base_url, policy)
    client = httpx.AsyncClient(
        base_url=base_url,
        transport=_CheckedAsyncTransport(policy, httpx.create_ssl_context(trust_env=True)),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
    return without_cookies(client)


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (or nests too deep): callers treat both as unusable."""
        try:
            return parse_json(self.body)
        except MalformedJson:
            return None


class SafeHttp:
    """The one HTTP client for URLs we did not choose: checks, no redirects, timeouts, size limit.

    ``system`` names the remote side in errors ("EHR"). A refused URL raises ``UnsafeUrl``;
    network failures raise ``UpstreamUnavailable``; a redirect raises ``UpstreamRejected``.
    """

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        system: str = "EHR",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.system = system
        self._client = without_cookies(
            httpx.Client(
                transport=transport or _CheckedTransport(policy, httpx.create_ssl_context(trust_env=True)),
                timeout=httpx.Timeout(policy.timeout_seconds, connect=min(5.0, policy.timeout_seconds)),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": "teams-ehr-connector"},
            )
        )

    def get(
        self, url: str, *, headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None
    ) -> HttpResult:
        return self.request("GET", url, headers=headers, params=params)

    def post_form(self, url: str, data: Mapping[str, str], *, headers: Mapping[str, str] | None = None) -> HttpResult:
        return self.request("POST", url, data=data, headers=headers)

    def post_json(
        self,
        url: str,
        document: str | bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> HttpResult:
        """POST an already serialised JSON document (FHIR resources come serialised from their models)."""
        body = document.encode("utf-8") if isinstance(document, str) else document
        return self.request("POST", url, content=body, headers={**(headers or {}), "Content-Type": content_type})

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> HttpResult:
        """One request; the URL's syntax is checked here and every address again when the connection opens."""
        check_url_syntax(url, self.policy)
        # httpx's timeouts bound each read, not the whole answer: a server trickling a byte at a time
        # would otherwise hold this worker indefinitely.
        deadline = time.monotonic() + 2 * self.policy.timeout_seconds
        try:
            with self._client.stream(
                method, url, headers=dict(headers or {}), params=params, data=data, content=content
            ) as response:
                if response.is_redirect:
                    raise UpstreamRejected(
                        N_("The %(system)s answered with a redirect, which is not followed.", system=self.system),
                        system=self.system,
                        code="redirect",
                    )
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                    raise UpstreamRejected(
                        N_("The %(system)s's response is too large.", system=self.system),
                        system=self.system,
                        code="too_large",
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    if time.monotonic() > deadline:
                        raise UpstreamUnavailable(
                            N_("The %(system)s did not answer in time.", system=self.system),
                            system=self.system,
                            code="too_slow",
                        )
                    body.extend(chunk)
                    if len(body) > self.policy.max_bytes:
                        raise UpstreamRejected(
                            N_("The %(system)s's response is too large.", system=self.system),
                            system=self.system,
                            code="too_large",
                        )
                return HttpResult(status=response.status_code, headers=dict(response.headers), body=bytes(body))
        except httpx.TimeoutException:
            raise UpstreamUnavailable(
                N_("The %(system)s did not answer in time.", system=self.system), system=self.system
            ) from None
        except httpx.TransportError:
            raise UpstreamUnavailable(
                N_("The %(system)s could not be reached.", system=self.system), system=self.system
            ) from None

    def close(self) -> None:
        self._client.close()


# --- the storage SDKs' transport ------------------------------------------------------------------------

# Connections kept per storage host: the worker's threads (PYTHON_THREADPOOL_THREAD_COUNT) plus the queue output.
POOL_SIZE = 64
_transport_lock = threading.Lock()
_transport: RequestsTransport | None = None  # imported lazily: only storage users pay for requests
# A URL as azure-core builds it (quoted): only characters RFC 3986 allows in a URL, every "%" an escape.
_BUILT_URL = re.compile(r"https?://(?:[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*")


def storage_session(pool_size: int = POOL_SIZE) -> requests.Session:
    """A ``requests`` session for azure-core's ``RequestsTransport``: no environment scan, no per-call merging.

    ``trust_env`` is off, so requests does not scan the environment for proxies and certificate bundles on every
    call (~15 % of a point read's CPU); storage is reached directly, never through a proxy. And a call as the
    transport makes it (a URL it built and quoted, its headers and body, redirects left to the SDK's own policy)
    is prepared and sent as requests does, without the session-level merging it never needs (settings, cookies,
    hooks, authentication: the SDK signs each request itself): ~20 % of a storage call's CPU. Anything else takes
    requests' general path. Retries belong to the SDK's retry policy, never to urllib3 underneath it.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from requests.structures import CaseInsensitiveDict
    from urllib3.util.retry import Retry

    class StorageSession(requests.Session):
        def request(  # type: ignore[override]
            self,
            method: str,
            url: str,
            params: Any = None,
            data: Any = None,
            headers: Any = None,
            cookies: Any = None,
            files: Any = None,
            auth: Any = None,
            timeout: Any = None,
            allow_redirects: bool = True,
            proxies: Any = None,
            hooks: Any = None,
            stream: bool | None = None,
            verify: Any = None,
            cert: Any = None,
            json: Any = None,
        ) -> requests.Response:
            as_built = (
                isinstance(url, str)
                and _BUILT_URL.fullmatch(url) is not None
                and isinstance(data, bytes | str | None)
                and not (params or cookies or files or auth or allow_redirects or proxies or hooks)
                and json is None
                and not (self.cookies or self.auth or self.params or self.proxies or any(self.hooks.values()))
            )
            if not as_built:
                return super().request(
                    method, url, params=params, data=data, headers=headers, cookies=cookies, files=files,
                    auth=auth, timeout=timeout, allow_redirects=allow_redirects, proxies=proxies, hooks=hooks,
                    stream=stream, verify=verify, cert=cert, json=json,
                )  # fmt: skip
            prepared = requests.PreparedRequest()
            prepared.method = method.upper()
            prepared.url = url  # as built: requests' requoting would leave it as it is
            merged = CaseInsensitiveDict(self.headers)  # the session's, then the call's (None removes one)
            for name, value in (headers or {}).items():
                if value is None:
                    merged.pop(name, None)
                else:
                    merged[name] = value
            prepared.prepare_headers(merged)
            prepared.prepare_body(data, None)
            streamed = bool(self.stream if stream is None else stream)
            response = self.get_adapter(url).send(
                prepared,
                stream=streamed,
                timeout=timeout,
                verify=self.verify if verify is None else verify,
                cert=self.cert if cert is None else cert,
                proxies={},
            )
            if not streamed:
                response.content  # noqa: B018 - read now, as requests does for a call that does not stream
            return response

    session = StorageSession()
    session.trust_env = False  # no per-call environment scan; storage is never reached through a proxy
    adapter = HTTPAdapter(
        pool_connections=8,
        pool_maxsize=pool_size,
        max_retries=Retry(total=False, redirect=False, raise_on_status=False),
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def storage_transport() -> RequestsTransport:
    """The storage SDKs' one transport per process, for every account's Table and Queue clients; never closed.

    Not a checked transport: storage endpoints come from settings (the app's own accounts), never from a user
    or an EHR. Its session is ``storage_session``'s.
    """
    global _transport
    with _transport_lock:
        if _transport is None:
            from azure.core.pipeline.transport import RequestsTransport

            _transport = RequestsTransport(session=storage_session(), session_owner=False, use_env_settings=False)
        return _transport
