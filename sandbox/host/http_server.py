"""The host's HTTP front end: an ASGI app that routes, authorizes and maps requests and responses.

Behaviour copied from the Functions host:
- an unknown path, or a known path with a method the function does not list, is 404 with an
  empty body (azure-functions-host#10098, #11625): methods are part of route matching;
- a missing or wrong key is 401 with an empty body; the key is read from the
  ``x-functions-key`` header, else the ``code`` query parameter;
- an unhandled exception is 500 with an empty body (the host logs the exception);
- bodies over 100 MB are refused with 413;
- responses are mapped as the Python worker's ``HttpResponseConverter`` does (Content-Type
  from mimetype/charset when not set, every ``Set-Cookie`` header kept); redirects are
  returned to the client, never followed.

Known differences: ``Set-Cookie`` values are sent verbatim, where the real host re-serialises
them through ASP.NET's cookie API (same attributes, possibly different spelling); CORS
(``Host.CORS``) and ``functionTimeout`` are not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from azure.functions import _abc as azf_abc
from azure.functions.http import HttpRequest

from sandbox.host.index import IndexedFunction
from sandbox.host.invocation import Invoker
from sandbox.host.keys import HostKeys

logger = logging.getLogger(__name__)

MAX_REQUEST_BODY = 100 * 1024 * 1024
KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"
HTTP_REASON = "This function was programmatically called via the host APIs."

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

LANDING_PAGE = (
    b'<!DOCTYPE html><html><head><meta charset="utf-8"><title>Your Functions app is up and running</title>'
    b"</head><body><h1>Your Functions 4.0 app is up and running</h1>"
    b"<p>Local host from sandbox/host.</p></body></html>"
)


class _BodyTooLarge(Exception):
    pass


def _joined(pairs: Sequence[tuple[str, str]], separator: str) -> dict[str, str]:
    """Repeated names joined the way ASP.NET's StringValues.ToString() joins them."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]}{separator}{value}" if name in joined else value
    return joined


def response_parts(result: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body for what the function returned."""
    if isinstance(result, azf_abc.HttpResponse):
        headers = result.headers
        names: dict[str, tuple[str, str]] = {}
        cookies: list[str] = []
        for name, value in headers.items():
            lowered = name.lower()
            if lowered == "set-cookie":
                cookies.append(value)
            elif lowered not in ("content-length", "transfer-encoding"):
                names[lowered] = (name, value)  # the worker builds a dict: the last value wins
        if "content-type" not in names:
            mimetype, charset = result.mimetype, result.charset
            content_type = f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
            names["content-type"] = ("Content-Type", content_type)
        body = result.get_body() or b""
        pairs = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in names.values()]
        pairs += [(b"set-cookie", cookie.encode("latin-1")) for cookie in cookies]
        return int(result.status_code), pairs, body
    if isinstance(result, str):
        return 200, [(b"content-type", b"text/plain; charset=utf-8")], result.encode("utf-8")
    # The worker cannot encode anything else, None included (azure-functions-python-worker#683):
    # the invocation fails and the host answers 500.
    raise TypeError(f"an HTTP function returned {type(result).__name__}, not HttpResponse or str")


class HttpFrontend:
    def __init__(self, functions: list[IndexedFunction], keys: HostKeys, invoker: Invoker, route_prefix: str):
        http_functions = [f for f in functions if f.route is not None]
        # Stable sort: equal precedence keeps index order.
        self.functions = sorted(http_functions, key=lambda f: f.route.precedence if f.route else ())
        self.keys = keys
        self.invoker = invoker
        self.route_prefix = route_prefix.strip("/")

    def _relative_path(self, path: str) -> str | None:
        if not self.route_prefix:
            return path
        prefix = "/" + self.route_prefix
        if path.lower() == prefix.lower() or path.lower().startswith(prefix.lower() + "/"):
            return path[len(prefix) :]
        return None

    def match(self, method: str, path: str) -> tuple[IndexedFunction, dict[str, str]] | None:
        relative = self._relative_path(path)
        if relative is None:
            return None
        for entry in self.functions:
            assert entry.route is not None
            if method not in entry.methods:
                continue
            values = entry.route.match(relative)
            if values is not None:
                return entry, values
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method = str(scope["method"]).upper()
        raw_path = scope.get("raw_path") or str(scope["path"]).encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        found = self.match(method, path)
        if found is None:
            if path == "/" and method in ("GET", "HEAD"):
                await self._send(send, method, 200, [(b"content-type", b"text/html; charset=utf-8")], LANDING_PAGE)
            else:
                await self._send(send, method, 404, [], b"")
            return
        entry, route_values = found
        query_string = bytes(scope.get("query_string") or b"").decode("latin-1")
        query = _joined(parse_qsl(query_string, keep_blank_values=True), ",")
        headers = _joined([(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]], ",")
        supplied = headers.get(KEY_HEADER) or query.get(KEY_QUERY)
        if not self.keys.authorizes(entry.auth_level, entry.name, supplied):
            await self._send(send, method, 401, [], b"")
            return
        try:
            body = await self._read_body(receive, headers)
        except _BodyTooLarge:
            await self._send(send, method, 413, [], b"")
            return
        scheme = scope.get("scheme", "http")
        host = headers.get("host") or "{}:{}".format(*scope["server"])
        url = f"{scheme}://{host}{path}" + (f"?{query_string}" if query_string else "")
        request = HttpRequest(
            method=method,
            url=url,
            headers=headers,
            params=query,
            route_params=route_values,
            body_type="bytes",
            body=body,
        )
        try:
            result = await self.invoker.invoke_async(entry, request, HTTP_REASON)
            status, response_headers, response_body = response_parts(result)
        except Exception:
            logger.exception("Exception while executing function: Functions.%s", entry.name)
            await self._send(send, method, 500, [], b"")
            return
        await self._send(send, method, status, response_headers, response_body)

    @staticmethod
    async def _read_body(receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REQUEST_BODY:
            raise _BodyTooLarge
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_REQUEST_BODY:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    @staticmethod
    async def _send(send: Send, method: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
