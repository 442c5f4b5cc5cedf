"""The SMART client's steps against a small SMART 2 server: discover, authorize, exchange, validate."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.local_settings import private_key_pem
from shared.errors import UnsafeUrl
from shared.id_tokens import InvalidIdToken
from shared.keys import SigningKeys
from shared.smart import DiscoveryError, OAuthError, Pkce, SmartClient
from shared.urls import OutboundPolicy, SafeHttp
from tests.support.ehr_server import running_fake_ehr
from tests.support.fake_ehr import FakeEhr

KEYS = SigningKeys.from_pem(private_key_pem())
POLICY = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=5)
REDIRECT = "http://localhost:7071/api/portal/ehr/callback"


@pytest.fixture(scope="module")
def ehr() -> Iterator[FakeEhr]:
    with running_fake_ehr(KEYS.jwks) as server:
        yield server


@pytest.fixture
def client() -> SmartClient:
    return SmartClient(SafeHttp(POLICY), KEYS)


def sign_in(ehr: FakeEhr, client: SmartClient, *, nonce: str = "nonce-1") -> tuple[str, Pkce]:
    config = client.discover(ehr.fhir_base)
    pkce = Pkce.new()
    url = client.authorize_url(
        config, client_id="prov", redirect_uri=REDIRECT, scope="openid fhirUser", state="s" * 43, pkce=pkce, nonce=nonce
    )
    answer = httpx.get(url, follow_redirects=False)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    return query["code"][0], pkce


def test_discovery_reads_the_smart_configuration_and_caches_it(ehr: FakeEhr, client: SmartClient) -> None:
    config = client.discover(ehr.fhir_base + "/")
    assert config.token_endpoint == f"{ehr.base}/oauth2/token"
    assert "S256" in config.code_challenge_methods
    assert client.discover(ehr.fhir_base) is config


def test_the_authorize_url_carries_aud_pkce_state_and_nonce(ehr: FakeEhr, client: SmartClient) -> None:
    config = client.discover(ehr.fhir_base)
    pkce = Pkce.new()
    url = client.authorize_url(
        config, client_id="prov", redirect_uri=REDIRECT, scope="openid fhirUser", state="abc", pkce=pkce, nonce="n"
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "response_type": "code", "client_id": "prov", "redirect_uri": REDIRECT, "scope": "openid fhirUser",
        "state": "abc", "aud": ehr.fhir_base, "code_challenge": pkce.challenge, "code_challenge_method": "S256",
        "nonce": "n",
    }
    assert 43 <= len(pkce.verifier) <= 128


def test_code_exchange_with_private_key_jwt_and_id_token_validation(ehr: FakeEhr, client: SmartClient) -> None:
    code, pkce = sign_in(ehr, client)
    config = client.discover(ehr.fhir_base)
    tokens = client.exchange_code(
        config, client_id="prov", code=code, redirect_uri=REDIRECT, code_verifier=pkce.verifier
    )
    assert tokens.id_token and tokens.access_token not in repr(tokens) and tokens.id_token not in repr(tokens)
    sent = ehr.token_requests[-1]
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert "client_secret" not in sent
    claims = client.validate_id_token(config, tokens.id_token, client_id="prov", nonce="nonce-1")
    assert claims["fhirUser"].endswith("/Practitioner/eVfmO0VstOuhL2fVS-bl8cg3")


def test_a_wrong_nonce_or_audience_fails_validation(ehr: FakeEhr, client: SmartClient) -> None:
    code, pkce = sign_in(ehr, client)
    config = client.discover(ehr.fhir_base)
    tokens = client.exchange_code(
        config, client_id="prov", code=code, redirect_uri=REDIRECT, code_verifier=pkce.verifier
    )
    assert tokens.id_token
    with pytest.raises(InvalidIdToken, match="nonce"):
        client.validate_id_token(config, tokens.id_token, client_id="prov", nonce="other")
    with pytest.raises(InvalidIdToken, match="another application"):
        client.validate_id_token(config, tokens.id_token, client_id="someone-else", nonce="nonce-1")


def test_oauth_errors_are_reported_with_their_code(ehr: FakeEhr, client: SmartClient) -> None:
    config = client.discover(ehr.fhir_base)
    with pytest.raises(OAuthError) as caught:
        client.exchange_code(config, client_id="prov", code="bogus", redirect_uri=REDIRECT, code_verifier="v" * 43)
    assert caught.value.message == "OAuth2 error from the EHR: invalid_grant"


def test_a_server_without_pkce_s256_is_refused(ehr: FakeEhr) -> None:
    ehr.advertise_s256 = False
    try:
        with pytest.raises(DiscoveryError, match="S256"):
            SmartClient(SafeHttp(POLICY), KEYS).discover(ehr.fhir_base)
    finally:
        ehr.advertise_s256 = True


def test_a_url_without_smart_configuration_is_refused(ehr: FakeEhr, client: SmartClient) -> None:
    with pytest.raises(DiscoveryError, match="no SMART configuration"):
        client.discover(f"{ehr.base}/not-fhir")


def test_discovery_refuses_private_addresses_before_connecting(client: SmartClient) -> None:
    with pytest.raises(UnsafeUrl):
        client.discover("https://10.0.0.1/fhir")
