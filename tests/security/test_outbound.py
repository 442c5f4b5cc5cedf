"""Every outbound request goes through the one checked transport (``shared/http/outbound.py``).

Two proofs: no module of ``shared/`` builds an HTTP client of its own (read from the source with ``ast``),
and the writeback, built by the composition root, refuses to send the EHR's bearer token to a host whose
name now resolves to an internal address (DNS rebinding), over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.writeback_load import seed_configuration
from connector.services import services
from sandbox.server import ServerThread
from shared.configurations.model import WritebackMode
from shared.ehr.smart import TokenResponse
from shared.http.outbound import OutboundPolicy, SafeHttp, check_url
from shared.kernel.errors import UnsafeUrl, UpstreamUnavailable
from shared.kernel.settings import Geography
from shared.microsoft.app_credentials import AppOnlyCredentials
from shared.microsoft.teams import TeamsClient
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import VisitContext
from shared.visits.repository import VisitRepository
from tests.support.sealing import sealer_for

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = "shared/http/outbound.py"  # the one place that constructs clients and transports

# Calls that build an HTTP client, a connection or a transport. ``requests.get`` & co. build a session each time.
CLIENT_BUILDERS = {
    "httpx.Client",
    "httpx.AsyncClient",
    "httpx.HTTPTransport",
    "httpx.AsyncHTTPTransport",
    "httpx.get",
    "httpx.post",
    "httpx.put",
    "httpx.patch",
    "httpx.delete",
    "httpx.request",
    "httpx.stream",
    "httpcore.ConnectionPool",
    "httpcore.AsyncConnectionPool",
    "requests.Session",
    "requests.session",
    "requests.get",
    "requests.post",
    "requests.put",
    "requests.patch",
    "requests.delete",
    "requests.request",
    "urllib.request.urlopen",
    "urllib.request.Request",
    "urllib.request.build_opener",
    "urllib3.PoolManager",
    "http.client.HTTPConnection",
    "http.client.HTTPSConnection",
    "aiohttp.ClientSession",
    "socket.create_connection",
    "socket.socket",
    "GraphClientFactory.create_with_default_middleware",  # without client= it builds its own httpx client
    "KiotaClientFactory.get_default_client",
}
# Modules whose mere import means hand-rolled HTTP (none of them is needed anywhere in shared/).
CLIENT_MODULES = ("requests", "urllib.request", "urllib3", "http.client", "aiohttp", "pycurl")
# Libraries that build a client unless handed ours: the keyword that hands it over.
MUST_BE_HANDED_A_CLIENT = {
    "msal.ConfidentialClientApplication": "http_client",
    "msal.PublicClientApplication": "http_client",
    "GraphClientFactory.create_with_default_middleware": "client",
}


def dotted(node: ast.expr, aliases: dict[str, str]) -> str:
    """``httpx.Client`` for ``httpx.Client`` (and for ``Client`` after ``from httpx import Client``)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def client_violations(source: str, name: str) -> list[str]:
    """One ``name:line what`` per place that builds an HTTP client or imports a raw HTTP module."""
    tree = ast.parse(source, filename=name)
    aliases: dict[str, str] = {}
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
                if alias.name.startswith(CLIENT_MODULES):
                    found.append(f"{name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.startswith(CLIENT_MODULES):
                found.append(f"{name}:{node.lineno} imports from {node.module}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = dotted(node.func, aliases)
        short = ".".join(called.split(".")[-2:])
        handed = MUST_BE_HANDED_A_CLIENT.get(called) or MUST_BE_HANDED_A_CLIENT.get(short)
        if handed is not None:
            if not any(keyword.arg == handed for keyword in node.keywords):
                found.append(f"{name}:{node.lineno} {called}(...) without {handed}=")
        elif called in CLIENT_BUILDERS or short in CLIENT_BUILDERS:
            found.append(f"{name}:{node.lineno} builds {called}")
    return found


def test_no_module_in_shared_builds_its_own_http_client() -> None:
    """Only ``shared/http/outbound.py`` constructs clients; everything else is handed ``SafeHttp`` (or, for
    msgraph-sdk, the ``httpx.AsyncClient`` from ``checked_async_client``; for msal, ``MsalHttp``).

    Nothing is exempt: msal and msgraph-sdk would build their own clients for their fixed Microsoft hosts, so
    both are handed ours (``http_client=``, ``client=``) and the scan requires that keyword. Library internals
    (msal's ``requests`` fallback, kiota's middleware) are not our modules and are not scanned.
    """
    files = sorted((ROOT / "shared").rglob("*.py"))
    assert len(files) > 40  # the whole context tree, not an empty folder
    violations = [
        violation
        for path in files
        if path.relative_to(ROOT).as_posix() != ALLOWED
        for violation in client_violations(path.read_text(), path.relative_to(ROOT).as_posix())
    ]
    assert violations == []
    # The one allowed module does build them (the scan sees what it looks for).
    assert client_violations((ROOT / ALLOWED).read_text(), ALLOWED)


@pytest.mark.parametrize(
    "source",
    [
        "import httpx\nc = httpx.Client(timeout=1)\n",
        "from httpx import AsyncClient\nc = AsyncClient()\n",
        "import httpx as h\nh.get('https://x')\n",
        "import requests\n",
        "from urllib.request import urlopen\n",
        "import msal\nmsal.ConfidentialClientApplication('id', client_credential='s')\n",
        "from msgraph_core import GraphClientFactory\nGraphClientFactory.create_with_default_middleware(options={})\n",
    ],
)
def test_the_scan_catches_each_way_of_building_a_client(source: str) -> None:
    assert client_violations(source, "shared/x.py")


def test_the_scan_accepts_clients_handed_over() -> None:
    source = (
        "import msal\nfrom msgraph_core import GraphClientFactory\n"
        "msal.ConfidentialClientApplication('id', client_credential='s', http_client=ours)\n"
        "GraphClientFactory.create_with_default_middleware(client=ours)\n"
    )
    assert client_violations(source, "shared/x.py") == []


# --- DNS rebinding ------------------------------------------------------------------------------------------

REBINDING_HOST = "ehr.rebind.test"
PUBLIC_ANSWER = "93.184.215.14"  # what the name resolved to when the configuration was approved


class Internal:
    """An internal service on 127.0.0.1 that records every request it gets (and would gladly answer 200)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def app(self) -> Starlette:
        async def anything(request: Request) -> JSONResponse:
            self.seen.append({"path": request.url.path, "authorization": request.headers.get("authorization", "")})
            return JSONResponse({})

        return Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])])


def certificate_for(host: str, folder: Path) -> tuple[str, str]:
    """A CA (trustme, as the sandbox's) and a server certificate naming ``host``: TLS itself lets the request through.

    Returns (CA bundle, server certificate chain + key file).
    """
    ca = trustme.CA()
    issued = ca.issue_cert(host)
    ca_file, server_file = folder / "rebind-ca.pem", folder / "rebind.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    issued.private_key_and_cert_chain_pem.write_to_path(str(server_file))
    return str(ca_file), str(server_file)


class Resolver:
    """``socket.getaddrinfo`` for the rebinding name: first a public address, then (after ``rebind``) 127.0.0.1."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.answer = PUBLIC_ANSWER

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == REBINDING_HOST:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (self.answer, int(port or 443)))]
        return self._real(host, port, *args, **kwargs)


@pytest.fixture
def internal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Internal, ServerThread]]:
    service = Internal()
    ca, server_pem = certificate_for(REBINDING_HOST, tmp_path)
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):  # every client trusts it: only the address rules refuse
        monkeypatch.setenv(variable, ca)
    with ServerThread(service.app(), ssl_certfile=server_pem, ssl_keyfile=server_pem) as server:
        yield service, server


@pytest.mark.azurite
def test_writeback_to_a_host_that_rebinds_to_an_internal_address_never_sends_the_bearer_token(
    env: dict[str, str],
    internal: tuple[Internal, ServerThread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service, server = internal
    settings = services().settings
    assert REBINDING_HOST not in settings.outbound_allowed_hosts
    resolver = Resolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    fhir_base = f"https://{REBINDING_HOST}:{server.port}/api/FHIR/R4"
    # When the configuration was approved, the name resolved to a public address: every rule passed.
    check_url(fhir_base, OutboundPolicy(allowed_hosts=settings.outbound_allowed_hosts), base_url=True)
    storage = Storage(settings)
    config = seed_configuration(storage, fhir_base, "rebind-client", WritebackMode.EPIC)
    # The EHR issued a backend token while the name was public (it is cached for minutes).
    token = f"secret-bearer-{uuid.uuid4().hex}"
    monkeypatch.setattr(
        services().smart,
        "backend_services_token",
        lambda *a, **k: TokenResponse(access_token=token, id_token=None, scope=None, fields={"expires_in": 300}),
    )
    key = uuid.uuid4().hex
    VisitRepository(storage, sealer_for(settings)).get_or_create(
        Geography.AMERICAS, key, config.id, VisitContext(csn="1234", provider="Practitioner/p1", confirmed=True)
    )
    event = VisitEvent(
        configuration_id=config.id,
        geography="americas",
        visit_key=key,
        kind=EventKind.CONNECTED,
        role=Role.PROVIDER,
        occurred_at=dt.datetime.now(dt.UTC),
        source=Source.GRAPH,
        participant="Practitioner/p1",
        csn="1234",
    )
    # Now the name answers with an internal address.
    resolver.answer = "127.0.0.1"
    outcome = services().worker.handle(event.to_json())
    assert service.seen == [], "the bearer token reached an internal address"
    assert outcome.status == "failed" and outcome.code == "unsafe_url"
    # The same rule at the address level, for the record: the name is refused outright now.
    with pytest.raises(UnsafeUrl):
        check_url(fhir_base, OutboundPolicy(allowed_hosts=settings.outbound_allowed_hosts), base_url=True)


class FixedToken:
    """An app-only Graph credential that already holds a token (kiota sends it as the bearer)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(dt.datetime.now(dt.UTC).timestamp()) + 3600)


def test_graph_and_entra_requests_to_a_rebound_name_are_refused_before_any_byte_is_sent(
    internal: tuple[Internal, ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """msgraph-sdk and msal run on the checked transport too: a Microsoft host name answering with an internal
    address (a poisoned resolver, a wrong GRAPH_BASE_URL or ENTRA_AUTHORITY_HOST) gets neither token nor secret."""
    service, server = internal
    resolver = Resolver(socket.getaddrinfo)
    resolver.answer = "127.0.0.1"
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    base = f"https://{REBINDING_HOST}:{server.port}"
    policy = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1", "localhost"}))  # the sandbox's, not the name
    graph = TeamsClient(base, FixedToken(f"graph-bearer-{uuid.uuid4().hex}"), policy=policy, timeout=5)
    with pytest.raises(UpstreamUnavailable, match="address is not allowed"):  # refused by the policy, not DNS
        graph.renew_subscription("s1", dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    secret = f"client-secret-{uuid.uuid4().hex}"
    credential = AppOnlyCredentials(base, "client-id", secret, http=SafeHttp(policy)).for_tenant(str(uuid.uuid4()))
    with pytest.raises(UpstreamUnavailable):
        asyncio.run(credential.get_token("https://graph.microsoft.com/.default"))
    assert service.seen == [], "a Microsoft client reached an internal address"


def test_a_cookie_a_remote_service_sets_is_never_sent_back_on_a_later_request() -> None:
    """One checked client serves every launch: a cookie from one call must not ride along on the next."""
    seen: list[str] = []

    async def endpoint(request: Request) -> JSONResponse:
        seen.append(request.headers.get("cookie", ""))
        response = JSONResponse({"ok": True})
        response.set_cookie("session", "launch-1", path="/")
        return response

    app = Starlette(routes=[Route("/fhir", endpoint)])
    with ServerThread(app) as server:
        http = SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=5.0))
        try:
            for _ in range(3):
                result = http.get(f"{server.url}/fhir")
                assert result.status == 200 and "session=launch-1" in result.headers.get("set-cookie", "")
        finally:
            http.close()
    assert seen == ["", "", ""]
