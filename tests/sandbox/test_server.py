"""The stand-ins' uvicorn server: serves, keeps the Date header fresh, and stops when told, from any thread."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from sandbox.server import ServerThread


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_a_server_answers_with_a_date_and_stops_when_told() -> None:
    server = ServerThread(hello).start()
    response = httpx.get(server.url)
    assert response.text == "hello"
    assert parsedate_to_datetime(response.headers["date"]).tzinfo is not None
    server.stop()
    assert not server._thread.is_alive()  # joined: the main loop woke for the stop, not at a later look
    try:
        httpx.get(server.url, timeout=2)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the stopped server still answers")


def test_a_server_stopped_before_it_serves_anything_still_stops() -> None:
    server = ServerThread(hello).start()
    server.stop()
    assert not server._thread.is_alive()
