"""The EHR-launch additions to the SMART client: the authorization request (GET or POST) and FHIR reads."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from shared.ehr.smart import Pkce, SmartClient, SmartConfiguration
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.kernel.errors import UpstreamRejected, UpstreamUnavailable

FHIR = "https://ehr.example/api/FHIR/R4"


def config(*capabilities: str) -> SmartConfiguration:
    return SmartConfiguration(
        fhir_base_url=FHIR,
        authorization_endpoint="https://ehr.example/oauth2/authorize",
        token_endpoint="https://ehr.example/oauth2/token",
        capabilities=capabilities,
    )


def request(smart_config: SmartConfiguration, launch: str):  # type: ignore[no-untyped-def]
    return SmartClient.authorization_request(
        smart_config, client_id="c", redirect_uri="https://app/cb", scope="launch openid fhirUser", state="s" * 43,
        pkce=Pkce.new(), launch=launch, nonce="n", aud=FHIR + "/",
    )  # fmt: skip


def test_short_requests_are_get_with_every_parameter() -> None:
    built = request(config("authorize-post"), "a+b")
    assert built.method == "GET"
    params = {k: v[0] for k, v in parse_qs(urlsplit(built.url).query).items()}
    assert params["launch"] == "a+b" and params["aud"] == FHIR + "/" and params["code_challenge_method"] == "S256"
    assert params["nonce"] == "n" and params["response_type"] == "code"


def test_long_requests_are_posted_only_when_advertised() -> None:
    posted = request(config("launch-ehr", "authorize-post"), "x" * 3000)
    assert posted.method == "POST" and posted.url == "https://ehr.example/oauth2/authorize"
    assert posted.fields["launch"] == "x" * 3000
    assert "x" * 100 not in repr(posted)
    assert request(config("launch-ehr"), "x" * 3000).method == "GET"  # never truncated, never guessed


def client(handler) -> SmartClient:  # type: ignore[no-untyped-def]
    http = SafeHttp(OutboundPolicy(), transport=httpx.MockTransport(handler))
    return SmartClient(http, None)


def test_read_sends_the_token_and_returns_the_resource() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"resourceType": "Appointment", "id": "a1"})

    epic = replace(config(), client_headers=(("Epic-Client-ID", "cid"),))  # as discovered for an Epic configuration
    resource = client(handler).read(epic, "Appointment/a1", access_token="tok")
    assert resource["id"] == "a1"
    assert str(seen[0].url) == f"{FHIR}/Appointment/a1"
    assert seen[0].headers["authorization"] == "Bearer tok" and seen[0].headers["epic-client-id"] == "cid"
    client(handler).read(config(), "Appointment/a1", access_token="tok")  # any other vendor: no Epic header
    assert "epic-client-id" not in seen[1].headers


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, {"resourceType": "OperationOutcome"}, UpstreamRejected),
        (403, {}, UpstreamRejected),
        (200, {"resourceType": "Patient"}, UpstreamRejected),
        (503, {}, UpstreamUnavailable),
        (429, {}, UpstreamUnavailable),
    ],
)
def test_read_failures(status: int, body: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        client(lambda req: httpx.Response(status, json=body)).read(config(), "Appointment/a1", access_token="t")


@pytest.mark.parametrize("reference", ["Appointment/../x", "Appointment/", "../metadata", "Appointment/a?b"])
def test_read_refuses_odd_references(reference: str) -> None:
    with pytest.raises(UpstreamRejected):
        client(lambda req: httpx.Response(200, json={})).read(config(), reference, access_token="t")
