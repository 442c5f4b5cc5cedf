"""HTTP triggers over real HTTP: routing, keys, request and response mapping."""

from __future__ import annotations

import base64
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx

from sandbox.host import LocalHost


def test_anonymous_route_with_parameter(client: httpx.Client) -> None:
    response = client.get("/api/hello/world")
    assert response.status_code == 200
    assert response.text == "Hello, world"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_route_prefix_and_literals_are_case_insensitive_and_trailing_slash_is_ignored(client: httpx.Client) -> None:
    assert client.get("/API/Hello/Case/").text == "Hello, Case"


def test_percent_encoded_route_value_is_decoded(client: httpx.Client) -> None:
    assert client.get("/api/hello/J%C3%BCrgen%20M").text == "Hello, Jürgen M"


def test_unknown_route_is_404_with_empty_body(client: httpx.Client) -> None:
    for path in ("/api/nope", "/api/hello", "/api/hello/a/b", "/hello/world", "/api"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.content == b""


def test_disabled_function_is_not_served(client: httpx.Client) -> None:
    assert client.get("/api/disabled/x").status_code == 404


def test_wrong_method_is_404_like_the_real_host(client: httpx.Client) -> None:
    response = client.post("/api/hello/world")
    assert response.status_code == 404
    assert response.content == b""
    # HEAD is not implied by GET either (azure-functions-host#11625).
    assert client.head("/api/hello/world").status_code == 404


def test_literal_route_wins_over_parameter_and_constraint_filters(host: LocalHost, client: httpx.Client) -> None:
    assert client.get("/api/items/new").text == "form"
    key = {"x-functions-key": host.function_key}
    response = client.get("/api/items/42", params={"a": "1", "b": ""}, headers=key)
    assert response.status_code == 200
    assert response.json() == {"id": "42", "method": "GET", "params": {"a": "1", "b": ""}}
    assert response.headers["content-type"] == "application/json"
    # {id:int}: not an int (or out of Int32 range) → no route.
    assert client.get("/api/items/abc", headers=key).status_code == 404
    assert client.get("/api/items/99999999999", headers=key).status_code == 404
    assert client.delete("/api/items/7", headers=key).json()["method"] == "DELETE"


def test_catch_all_and_optional_parameters(client: httpx.Client) -> None:
    assert client.get("/api/files/a/b/c.txt").json() == {"path": "a/b/c.txt"}
    assert client.get("/api/files").json() == {}
    assert client.get("/api/optional").json() == {}
    assert client.get("/api/optional/x").json() == {"value": "x"}


def test_function_level_route_needs_a_key(host: LocalHost, client: httpx.Client) -> None:
    response = client.get("/api/items/1")
    assert response.status_code == 401
    assert response.content == b""
    assert client.get("/api/items/1", params={"code": "wrong"}).status_code == 401
    assert client.get("/api/items/1", headers={"x-functions-key": "wrong"}).status_code == 401
    assert client.get("/api/items/1", params={"code": host.function_key}).status_code == 200
    assert client.get("/api/items/1", headers={"x-functions-key": host.function_key}).status_code == 200
    assert client.get("/api/items/1", params={"code": host.master_key}).status_code == 200


def test_admin_route_accepts_only_the_master_key(host: LocalHost, client: httpx.Client) -> None:
    assert client.get("/api/ops/stats").status_code == 401
    assert client.get("/api/ops/stats", headers={"x-functions-key": host.function_key}).status_code == 401
    response = client.get("/api/ops/stats", headers={"x-functions-key": host.master_key})
    assert response.status_code == 200
    assert response.text == "admin only"


def test_post_maps_method_url_headers_query_body_and_context(host: LocalHost, client: httpx.Client) -> None:
    response = client.post(
        "/api/echo",
        params={"code": host.function_key, "q": "1"},
        json={"hello": "wörld"},
        headers={"X-Custom": "yes"},
    )
    assert response.status_code == 201
    body = response.json()
    assert body["method"] == "POST"
    assert body["url"].startswith(f"{host.url}/api/echo?")
    assert "q=1" in body["url"]
    assert body["params"]["q"] == "1"
    assert body["contentType"] == "application/json"
    assert body["custom"] == "yes"
    assert body["json"] == {"hello": "wörld"}
    assert body["function"] == "echo"


def test_binary_and_form_bodies_arrive_unchanged(host: LocalHost, client: httpx.Client) -> None:
    key = {"x-functions-key": host.function_key}
    raw = bytes(range(256))
    response = client.put("/api/echo", content=raw, headers={**key, "content-type": "application/octet-stream"})
    assert base64.b64decode(response.json()["body"]) == raw
    form = client.post("/api/echo", data={"a": "1", "b": "two words"}, headers=key).json()
    assert form["form"] == {"a": "1", "b": "two words"}


def test_multiple_set_cookie_headers_and_html_mimetype_pass_through(client: httpx.Client) -> None:
    response = client.get("/api/cookies")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-frame-options"] == "DENY"
    cookies = response.headers.get_list("set-cookie")
    assert cookies == ["session=abc; Path=/; HttpOnly; Secure; SameSite=Lax", "theme=dark; Path=/api; Max-Age=60"]


def test_redirect_is_returned_to_the_client(client: httpx.Client) -> None:
    response = client.get("/api/go")
    assert response.status_code == 302
    assert response.headers["location"] == "/api/hello/redirected"
    assert client.get("/api/go", follow_redirects=True).text == "Hello, redirected"


def test_unhandled_exception_is_500_without_details(client: httpx.Client) -> None:
    response = client.get("/api/boom")
    assert response.status_code == 500
    assert response.content == b""


def test_returning_none_fails_the_invocation_like_the_worker(client: httpx.Client) -> None:
    response = client.get("/api/nothing")
    assert response.status_code == 500
    assert response.content == b""


def test_request_body_over_100_mb_is_refused(host: LocalHost) -> None:
    port = int(host.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
            + f"x-functions-key: {host.function_key}\r\nContent-Length: {100 * 1024 * 1024 + 1}\r\n\r\n".encode()
        )
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"


def test_async_function_and_string_return(client: httpx.Client) -> None:
    assert client.get("/api/async-hello").json() == {"async": True}
    response = client.get("/api/plain-text")
    assert response.text == "just a string"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_sync_functions_run_in_a_thread_pool_concurrently(host: LocalHost) -> None:
    # Each call blocks until the other one is inside the function too; run one after the other, both would fail.
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda _: httpx.get(f"{host.url}/api/rendezvous", timeout=20), range(2)))
    assert [r.status_code for r in responses] == [200, 200]
    assert all(r.text.startswith("functions-worker") for r in responses)
    assert responses[0].text != responses[1].text


def test_root_answers_like_the_host_landing_page(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "up and running" in response.text
