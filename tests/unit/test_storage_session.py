"""The storage SDKs' session sends what a default requests session sends, minus the work a storage call never needs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from shared.http.outbound import storage_session


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def _record(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        Recorder.seen.append({"line": f"{self.command} {self.path}", "headers": headers, "body": body})
        self.send_response(302 if self.path.startswith("/moved") else 201)
        self.send_header("Location", "/elsewhere")
        self.send_header("Set-Cookie", "affinity=1; Path=/")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_PUT = do_POST = do_DELETE = _record

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def sent(session: requests.Session, method: str, url: str, **kwargs: Any) -> tuple[requests.Response, dict[str, Any]]:
    Recorder.seen.clear()
    response = session.request(method, url, **kwargs)
    assert len(Recorder.seen) == 1
    return response, Recorder.seen[0]


def plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


CALLS = [
    # As azure-core's RequestsTransport makes them: a built URL, the SDK's headers and body, no redirects.
    ("POST", "/devstoreaccount1/AuthStates", {"Content-Type": "application/json"}, b'{"PartitionKey":"k"}'),
    ("PUT", "/acct/Visits(PartitionKey='a%2Fb',RowKey='r')", {"If-Match": "*", "x-ms-version": "2019-02-02"}, "{}"),
    ("GET", "/acct/q/messages?numofmessages=1&visibilitytimeout=30", {"Accept": "application/xml"}, None),
    ("DELETE", "/acct/q/messages/id?popreceipt=AAA%3D%3D", {"User-Agent": "azsdk-python-storage-queue"}, None),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), CALLS)
def test_a_storage_call_is_sent_as_a_default_session_sends_it(
    server: str, method: str, path: str, headers: dict[str, str], body: bytes | str | None
) -> None:
    options = {"headers": headers, "data": body, "allow_redirects": False, "timeout": (5, 5), "verify": True}
    lean_response, lean = sent(storage_session(), method, server + path, **options)
    plain_response, plain = sent(plain_session(), method, server + path, **options)
    assert lean == plain
    assert (lean_response.status_code, lean_response.content) == (plain_response.status_code, b"ok")
    assert lean_response.headers["location"] == "/elsewhere"


def test_redirects_are_the_callers_and_cookies_are_neither_kept_nor_sent(server: str) -> None:
    session = storage_session()
    response, _ = sent(session, "GET", server + "/moved", allow_redirects=False, timeout=5)
    assert response.status_code == 302  # not followed: azure-core's RedirectPolicy decides
    _, second = sent(session, "GET", server + "/again", allow_redirects=False, timeout=5)
    assert "cookie" not in second["headers"]


def test_a_call_that_is_not_as_built_takes_the_general_path(server: str) -> None:
    session = storage_session()
    _, seen = sent(session, "GET", server + "/q", params={"a": "b c"}, allow_redirects=False, timeout=5)
    assert seen["line"] == "GET /q?a=b+c"
    _, seen = sent(session, "GET", server + "/with space", allow_redirects=False, timeout=5)
    assert seen["line"] == "GET /with%20space"  # requests quoted it
    Recorder.seen.clear()
    response = session.request("GET", server + "/moved", timeout=5)  # allow_redirects defaults to True
    assert response.status_code == 201
    assert [seen["line"] for seen in Recorder.seen] == ["GET /moved", "GET /elsewhere"]
