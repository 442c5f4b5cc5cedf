"""The checked transport's connections: one pool per thread, each connection reused by the thread that opened it.

Over real sockets on 127.0.0.1, against a minimal HTTP/1.1 keep-alive server that answers every request with the
port the request came from (which connection carried it) and records the connections it saw close.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.http.outbound import OutboundPolicy, SafeHttp
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


def test_a_thread_reuses_its_own_connection_and_threads_do_not_share_one(server: KeepAliveServer) -> None:
    http = SafeHttp(POLICY)
    try:
        first = {_port_of(http, server.url) for _ in range(3)}
        with ThreadPoolExecutor(max_workers=1) as other:
            second = set(other.map(lambda _: _port_of(http, server.url), range(3)))
        assert len(first) == 1 and len(second) == 1 and first != second
        assert sorted(server.accepted) == sorted(first | second)  # no other connection was opened
    finally:
        http.close()


def test_many_threads_at_once_open_one_connection_each_and_never_reopen(server: KeepAliveServer) -> None:
    """The writeback's messages in flight: each worker thread keeps its connection for every later request."""
    threads, rounds = 24, 5
    http = SafeHttp(POLICY)
    start = threading.Barrier(threads)

    def requests_of_one_thread(_: int) -> set[int]:
        start.wait(timeout=10)  # all at once, so every thread is in flight together
        return {_port_of(http, server.url) for _ in range(rounds)}

    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            per_thread = list(pool.map(requests_of_one_thread, range(threads)))
        assert all(len(ports) == 1 for ports in per_thread)
        assert len(set().union(*per_thread)) == threads == len(server.accepted)
    finally:
        http.close()


def test_closing_the_client_closes_every_threads_connections(server: KeepAliveServer) -> None:
    http = SafeHttp(POLICY)
    with ThreadPoolExecutor(max_workers=3) as pool:
        start = threading.Barrier(3)

        def one(_: int) -> int:
            start.wait(timeout=10)
            return _port_of(http, server.url)

        opened = set(pool.map(one, range(3)))
        assert len(opened) == 3  # the threads are still alive: their pools too
        http.close()
        _wait_until(lambda: set(server.closed) == opened)


def test_a_new_threads_first_connection_is_checked_like_any_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each thread's pool opens connections through the same checked backend: a name that now resolves to an
    internal address is refused at the connection, before any byte is sent."""
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


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_a_finished_threads_connections_are_closed(server: KeepAliveServer) -> None:
    http = SafeHttp(POLICY)
    try:
        ports: list[int] = []
        short_lived = threading.Thread(target=lambda: ports.append(_port_of(http, server.url)))
        short_lived.start()
        short_lived.join(timeout=10)
        assert not server.closed and len(ports) == 1
        port = ports[0]
        del short_lived
        gc.collect()  # the finished thread's object goes, and its pool's connections with it
        _wait_until(lambda: server.closed == [port])
    finally:
        http.close()
