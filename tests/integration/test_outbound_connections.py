"""The checked transport's connections: kept per origin, the freshest taken first, closed when idle too long.

Over real sockets on 127.0.0.1, against a minimal HTTP/1.1 keep-alive server that answers every request with the
port the request came from (which connection carried it) and records the connections it saw close.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.http import outbound
from shared.http.outbound import OutboundPolicy, SafeHttp, _CheckedTransport
from shared.kernel.errors import UnsafeUrl

POLICY = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=5.0)


class KeepAliveServer:
    """Answers ``GET`` with ``{"port": <the client's port>}``, keeping each connection open until the client closes."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted: list[int] = []
        self.closed: list[int] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def _accept(self) -> None:
        while True:
            try:
                connection, (_, port) = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(port)
            threading.Thread(target=self._serve, args=(connection, port), daemon=True).start()

    def _serve(self, connection: socket.socket, port: int) -> None:
        buffered = b""
        with connection:
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = connection.recv(4096)
                    if not chunk:
                        with self._lock:
                            self.closed.append(port)
                        return
                    buffered += chunk
                _, buffered = buffered.split(b"\r\n\r\n", 1)
                body = json.dumps({"port": port}).encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                connection.sendall(head.encode() + body)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    running = KeepAliveServer()
    yield running
    running.close()


def _port_of(http: SafeHttp, url: str) -> int:
    result = http.get(url)
    assert result.status == 200
    port: int = result.json()["port"]
    return port


def test_requests_one_after_another_reuse_one_connection_whatever_their_thread(server: KeepAliveServer) -> None:
    """A light load keeps one warm connection (fresh within the keep-alive), not one per worker thread."""
    http = SafeHttp(POLICY)
    try:
        first = {_port_of(http, server.url) for _ in range(3)}
        with ThreadPoolExecutor(max_workers=1) as other:
            second = set(other.map(lambda _: _port_of(http, server.url), range(3)))
        assert len(first) == 1 and second == first
        assert server.accepted == list(first)  # no other connection was opened
    finally:
        http.close()


def test_requests_in_flight_together_open_one_connection_each_and_never_reopen(server: KeepAliveServer) -> None:
    """The writeback's 24 messages in flight: 24 connections at most, kept for every later round.

    Released together, the threads' requests still overlap only mostly: a request may find a connection another
    thread has just given back, so the first round may open fewer than 24 and a later round the few it did not
    need yet; never more than are in flight at once, and none is closed and opened again."""
    threads, rounds = 24, 5
    http = SafeHttp(POLICY)
    start = threading.Barrier(threads)

    def requests_of_one_thread(_: int) -> list[int]:
        start.wait(timeout=10)  # all at once, so every thread is in flight together
        return [_port_of(http, server.url) for _ in range(rounds)]

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            ports = [port for ports in pool.map(requests_of_one_thread, range(threads)) for port in ports]
            after_first = len(server.accepted)
            again = [port for ports in pool.map(requests_of_one_thread, range(threads)) for port in ports]
        assert len(ports) == len(again) == threads * rounds
        assert 1 < after_first <= threads
        assert len(server.accepted) <= threads  # the second round opened at most what the first did not need yet
        assert server.closed == []  # every connection was kept for the later round
        assert set(again) <= set(server.accepted)
    finally:
        http.close()


def test_closing_the_client_closes_every_connection(server: KeepAliveServer) -> None:
    http = SafeHttp(POLICY)
    opened = _at_once(http, server.url, 3)
    http.close()
    _wait_until(lambda: set(server.closed) == opened == set(server.accepted))


def test_a_body_not_read_to_the_end_hands_its_pool_back_when_closed(server: KeepAliveServer) -> None:
    """A pool serves one request at a time and goes back when the body is closed, read or not (an answer refused
    halfway as too large): requests one after another never need a second pool."""
    http = SafeHttp(POLICY)
    transport = http._client._transport
    assert isinstance(transport, _CheckedTransport)
    try:
        for _ in range(3):
            with http._client.stream("GET", server.url) as response:
                assert response.status_code == 200  # the body left unread
            _port_of(http, server.url)
        assert len(transport._every) == 1
    finally:
        http.close()


def test_requests_to_two_hosts_in_turn_keep_one_connection_to_each(server: KeepAliveServer) -> None:
    """An EHR's FHIR and token hosts, or two EHRs: each request reuses a connection to its own host."""
    other = KeepAliveServer()
    http = SafeHttp(POLICY)
    try:
        for _ in range(4):
            _port_of(http, server.url)
            _port_of(http, other.url)
        assert len(server.accepted) == 1 and len(other.accepted) == 1
    finally:
        http.close()
        other.close()


def test_a_connection_idle_longer_than_the_keepalive_is_closed_at_the_next_request(
    server: KeepAliveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbound, "KEEPALIVE_SECONDS", 0.3)
    http = SafeHttp(POLICY)
    transport = http._client._transport
    assert isinstance(transport, _CheckedTransport)
    try:
        burst = _at_once(http, server.url, 3)
        time.sleep(0.5)  # every connection of the burst is now idle too long
        fresh = _port_of(http, server.url)
        assert fresh not in burst
        _wait_until(lambda: burst <= set(server.closed))
        assert all(kept._network_backend is transport._backend for kept in transport._every)  # all checked
    finally:
        http.close()


def test_a_new_pools_first_connection_is_checked_like_any_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pool opens connections through the same checked backend: a name that now resolves to an internal
    address is refused at the connection, before any byte is sent."""
    asked: list[str] = []
    real = socket.getaddrinfo

    def resolver(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "ehr.rebind.test":
            asked.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", int(port or 443)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    http = SafeHttp(POLICY)
    try:
        with ThreadPoolExecutor(max_workers=1) as other:
            failure = other.submit(http.get, "https://ehr.rebind.test/fhir/metadata").exception(timeout=10)
        assert isinstance(failure, UnsafeUrl) and asked == ["ehr.rebind.test"]
    finally:
        http.close()


def _at_once(http: SafeHttp, url: str, count: int) -> set[int]:
    """``count`` requests released together on as many threads: the ports of the connections that carried them."""
    start = threading.Barrier(count)

    def one(_: int) -> int:
        start.wait(timeout=10)
        return _port_of(http, url)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return set(pool.map(one, range(count)))


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
