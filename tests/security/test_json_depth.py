"""Deeply nested or malformed JSON is a refusal everywhere we parse it: a 400 on our JSON endpoints, a clear
"unusable" from an EHR's documents; never a 500, never an ERROR log line.

Before the fix ``json.loads`` raised ``RecursionError`` (not a ``ValueError``), so the Graph webhooks answered
500 with "Unhandled RecursionError" logged, and a FHIR server could break discovery the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.server import ServerThread
from shared.ehr.smart import DiscoveryError, OAuthError, SmartClient, SmartConfiguration
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.kernel.errors import InvalidEvent
from shared.kernel.json_input import MAX_DEPTH, MalformedJson, parse_json
from shared.visits.events import VisitEvent
from tests.security.edge_world import client, world  # noqa: F401 - fixture
from tests.support.launch_world import LaunchWorld

pytestmark = pytest.mark.azurite

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"value":' * 5_000 + b"[]" + b"}" * 5_000
JUST_TOO_DEEP = b'{"value":[' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"]}"
MALFORMED = [
    DEEP_ARRAY,
    DEEP_OBJECT,
    JUST_TOO_DEEP,
    b'{"value": [',
    b"\xff\xfe\x00{",  # not UTF-8
    b'{"value": [' + b"1" * 5000 + b"]}",  # an integer beyond Python's digit limit
    b'{"value": [NaN, Infinity]',
    b"",
]
JSON_ENDPOINTS = ("/api/graph/notifications", "/api/graph/lifecycle")


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize("body", MALFORMED, ids=[f"body{i}" for i in range(len(MALFORMED))])
def test_deep_or_malformed_json_on_our_json_endpoints_is_a_400_without_an_error_log(
    world: LaunchWorld,  # noqa: F811
    path: str,
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO), client(world) as http:
        response = http.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "Traceback" not in response.text and "Recursion" not in response.text
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_the_parser_refuses_every_malformed_body_with_one_error() -> None:
    for body in MALFORMED:
        with pytest.raises(MalformedJson):
            parse_json(body)
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert isinstance(parse_json(nested), list)  # the limit itself is accepted


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-be"])
def test_the_depth_is_checked_whatever_the_text_holds_besides_brackets_and_its_encoding(encoding: str) -> None:
    """A text with no more brackets than the limit is not walked; brackets inside strings do not hide nesting."""
    too_deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(MalformedJson):
        parse_json(too_deep.encode(encoding))
    with pytest.raises(MalformedJson):
        parse_json('{"s":"[[[{{{","v":' + too_deep + "}")
    in_strings = '{"s":"' + "[{" * MAX_DEPTH + '","v":[[1]]}'
    assert parse_json(in_strings.encode(encoding))["v"] == [[1]]  # many brackets, all in a string: depth 3
    assert parse_json('{"a":[{"b":[]}]}') == {"a": [{"b": []}]}


def test_a_deep_queue_message_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent):
        VisitEvent.from_json(DEEP_OBJECT)


# --- an EHR that answers with deep JSON ------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_ehr() -> Iterator[str]:
    """A FHIR server whose every JSON document (SMART configuration, metadata, token answer) nests too deep."""

    async def deep(request: Request) -> Response:
        return Response(DEEP_OBJECT, media_type="application/json")

    app = Starlette(routes=[Route("/{path:path}", deep, methods=["GET", "POST"])])
    with ServerThread(app) as server:
        yield f"{server.url}/api/FHIR/R4"


def smart() -> SmartClient:
    return SmartClient(SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}))), None)


def test_deep_json_from_ehr_discovery_is_a_clear_refusal(deep_ehr: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(DiscoveryError) as refused:
        smart().discover(deep_ehr)
    assert "no SMART configuration" in refused.value.message
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_deep_json_from_a_token_endpoint_is_an_oauth_refusal(deep_ehr: str) -> None:
    class Signer:  # the client assertion's content does not matter to a server that answers everyone alike
        def client_assertion(self, client_id: str, audience: str) -> str:
            return "assertion"

    config = SmartConfiguration(
        fhir_base_url=deep_ehr, authorization_endpoint=f"{deep_ehr}/authorize", token_endpoint=f"{deep_ehr}/token"
    )
    client_ = SmartClient(SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}))), Signer())  # type: ignore[arg-type]
    with pytest.raises(OAuthError) as refused:
        client_.exchange_code(config, client_id="c", code="x", redirect_uri="https://c.example/cb", code_verifier="v")
    assert refused.value.error == "invalid_response"
