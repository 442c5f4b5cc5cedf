"""Outbound URL rules: what a user-supplied URL may be, and that refused URLs are never connected to."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

from sandbox.server import ServerThread
from shared.http.outbound import OutboundPolicy, SafeHttp, check_url, check_url_syntax, normalise_base_url
from shared.kernel.errors import UnsafeUrl, UpstreamRejected, UpstreamUnavailable

STRICT = OutboundPolicy()
LOCAL = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1", "localhost"}), timeout_seconds=2, max_bytes=1024)


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Fails the test if anything opens a TCP connection."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("connected to a refused URL")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only https"),
        ("ftp://ehr.example.org/fhir", "only https"),
        ("http://ehr.example.org/fhir", "only https"),
        ("https://user:pw@ehr.example.org/fhir", "user name or password"),
        ("https://ehr.example.org/fhir#frag", "fragment"),
        ("https://ehr.example.org/fhir?x=1", "query"),
        ("https://169.254.169.254/latest/meta-data", "non-public address (169.254.169.254)"),
        ("https://10.1.2.3/fhir", "non-public address (10.1.2.3)"),
        ("https://127.0.0.1/fhir", "non-public address (127.0.0.1)"),
        ("https://[::1]/fhir", "non-public address (::1)"),
        ("https://[::ffff:10.0.0.1]/fhir", "non-public address"),
        ("https://[2002:a00:1::]/fhir", "non-public address"),  # 6to4 relaying to 10.0.0.1
        ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/fhir", "non-public address"),  # Teredo, client 10.0.0.1
        ("https://224.0.0.1/fhir", "non-public address"),
        ("https://0.0.0.0/fhir", "non-public address"),
        ("https:///fhir", "no host"),
        ("https://ehr .example.org/fhir", "spaces"),
        ("", "enter the full"),
        ("ehr.example.org/api/FHIR/R4", "the scheme is missing: start the address with https://"),
        ("ehr.example.org:443/api/FHIR/R4", "the scheme is missing"),
        ("//ehr.example.org/api/FHIR/R4", "the scheme is missing"),
    ],
)
def test_refused_urls_say_why_without_connecting(url: str, reason: str, no_connect: list[object]) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url, STRICT, base_url=True)
    assert reason in caught.value.message
    assert no_connect == []


@pytest.mark.parametrize("url", ["https://2130706433/fhir", "https://127.1/fhir", "https://0x7f000001/fhir"])
def test_other_spellings_of_loopback_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url, STRICT)


def test_6to4_addresses_are_judged_by_their_embedded_ipv4_address() -> None:
    from shared.http.outbound import _is_public

    assert not _is_public(ipaddress.ip_address("2002:a00:1::"))  # 10.0.0.1
    assert not _is_public(ipaddress.ip_address("2002:7f00:1::"))  # 127.0.0.1
    assert not _is_public(ipaddress.ip_address("2002:a9fe:a9fe::"))  # 169.254.169.254
    assert _is_public(ipaddress.ip_address("2002:5db8:d70e::"))  # 93.184.215.14


def test_teredo_addresses_are_judged_by_their_embedded_client_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.http import outbound as urls

    # Whatever this Python thinks of 2001::/32 as a whole, the embedded client address decides on its own.
    monkeypatch.setattr(ipaddress.IPv6Address, "is_private", property(lambda self: False))
    assert not urls._is_public(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:f5ff:fffe"))  # client 10.0.0.1


def test_a_name_resolving_to_loopback_is_refused_unless_allow_listed() -> None:
    with pytest.raises(UnsafeUrl, match="does not resolve to a public internet address"):
        check_url("https://localhost/fhir", STRICT)
    assert check_url("https://localhost/fhir", LOCAL).host == "localhost"


def test_a_private_name_and_a_missing_name_are_refused_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message must not reveal whether an internal name exists, nor the private address it resolves to."""

    def resolve(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        if host == "db.corp.example.org":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port))]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    messages = []
    for host in ("db.corp.example.org", "nothing.corp.example.org"):
        with pytest.raises(UnsafeUrl) as caught:
            check_url(f"https://{host}/fhir", STRICT)
        messages.append(caught.value.message.replace(host, "HOST"))
        assert "10.20.30.40" not in caught.value.message
    assert messages[0] == messages[1]


def test_every_resolved_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def two_answers(host: str, port: int, **kwargs: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    with pytest.raises(UnsafeUrl) as caught:
        check_url("https://ehr.example.org/fhir", STRICT)
    assert "10.0.0.7" not in caught.value.message


def test_http_is_allowed_only_for_allow_listed_hosts() -> None:
    assert check_url_syntax("http://127.0.0.1:7300/fhir", LOCAL).port == 7300
    with pytest.raises(UnsafeUrl):
        check_url_syntax("http://127.0.0.2:7300/fhir", LOCAL)


def test_normalisation_makes_spellings_of_one_url_equal() -> None:
    assert normalise_base_url("HTTPS://EHR.Example.org:443/api/FHIR/R4/") == "https://ehr.example.org/api/FHIR/R4"
    assert normalise_base_url("https://ehr.example.org:8443/x") == "https://ehr.example.org:8443/x"


def _app() -> Starlette:
    async def small(request: object) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def big(request: object) -> PlainTextResponse:
        return PlainTextResponse("x" * 5000)

    async def away(request: object) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def trickle(request: object) -> StreamingResponse:
        async def one_byte_at_a_time() -> AsyncIterator[bytes]:
            for _ in range(40):  # each byte well inside the read timeout, the whole far beyond it
                yield b"x"
                await asyncio.sleep(0.1)

        return StreamingResponse(one_byte_at_a_time(), media_type="text/plain")

    return Starlette(
        routes=[Route("/small", small), Route("/big", big), Route("/away", away), Route("/trickle", trickle)]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(_app()) as running:
        yield running


def test_safe_http_fetches_allow_listed_local_servers(server: ServerThread) -> None:
    result = SafeHttp(LOCAL).get(f"{server.url}/small")
    assert result.status == 200 and result.json() == {"ok": True}


def test_redirects_are_not_followed(server: ServerThread) -> None:
    with pytest.raises(UpstreamRejected) as caught:
        SafeHttp(LOCAL).get(f"{server.url}/away")
    assert caught.value.code == "redirect"


def test_oversized_responses_are_refused(server: ServerThread) -> None:
    with pytest.raises(UpstreamRejected, match="too large"):
        SafeHttp(LOCAL).get(f"{server.url}/big")


def test_a_trickling_response_is_cut_off_at_twice_the_timeout(server: ServerThread) -> None:
    slow = OutboundPolicy(allowed_hosts=LOCAL.allowed_hosts, timeout_seconds=0.5, max_bytes=1024)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="did not answer in time"):
        SafeHttp(slow).get(f"{server.url}/trickle")
    assert time.monotonic() - started < 2.5


def test_the_transport_checks_the_address_it_connects_to(
    monkeypatch: pytest.MonkeyPatch, no_connect: list[object]
) -> None:
    """DNS rebinding: whatever a name resolves to at connect time is checked, and only checked addresses are used."""
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, **kw: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", port))],
    )
    with pytest.raises(UnsafeUrl, match="does not resolve to a public internet address"):
        SafeHttp(STRICT).get("https://rebinding.example.org/fhir/metadata")
    assert no_connect == []


def test_the_transport_connects_to_the_checked_address(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[str] = []
    real = socket.getaddrinfo

    def spy(host: str, port: int, *args: object, **kwargs: object) -> object:
        resolved.append(host)
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", spy)
    result = SafeHttp(LOCAL).get(f"http://localhost:{server.port}/small")
    assert result.status == 200
    # The name is resolved once, by the check; the socket is handed the checked address itself.
    assert resolved[0] == "localhost"
    assert all(host in ("127.0.0.1", "::1") for host in resolved[1:])


def test_unreachable_hosts_are_upstream_unavailable() -> None:
    from sandbox.server import free_port

    with pytest.raises(UpstreamUnavailable):
        SafeHttp(LOCAL).get(f"http://127.0.0.1:{free_port()}/small")
