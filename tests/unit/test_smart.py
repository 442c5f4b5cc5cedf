"""The SMART client's steps against a small SMART 2 server: discover, authorize, exchange, validate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.local_settings import private_key_pem
from shared.ehr.smart import DiscoveryError, OAuthError, Pkce, SmartClient
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.jose.keys import SigningKeys
from shared.kernel.errors import InvalidIdToken, UnsafeUrl
from tests.support.fake_ehr import FakeEhr, running_fake_ehr

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


def test_a_repeated_discovery_is_answered_from_memory_until_stale_or_forgotten(ehr: FakeEhr) -> None:
    now = [0.0]
    client = SmartClient(SafeHttp(POLICY), KEYS, discovery_ttl_seconds=60, clock=lambda: now[0])
    fetched: list[str] = []
    get = client.http.get

    def counted(url: str, **kwargs: Any) -> Any:
        fetched.append(url)
        return get(url, **kwargs)

    client.http.get = counted  # type: ignore[method-assign]
    first = client.discover(ehr.fhir_base, client_id="prov")
    assert client.discover(ehr.fhir_base, client_id="prov") is first
    assert client.discover(ehr.fhir_base + "/", client_id="prov") is first  # another spelling, same base
    assert len(fetched) == 1
    now[0] = 61.0  # stale: discovered again, whichever way it is asked
    assert client.discover(ehr.fhir_base, client_id="prov") is not first
    assert len(fetched) == 2
    client.forget(ehr.fhir_base + "/")  # a configuration changed: forgotten for every spelling
    client.discover(ehr.fhir_base, client_id="prov")
    assert len(fetched) == 3
    with pytest.raises(UnsafeUrl):  # a URL the rules refuse is refused every time, never remembered
        client.discover("https://10.0.0.1/fhir")
    with pytest.raises(UnsafeUrl):
        client.discover("https://10.0.0.1/fhir")


def test_an_answer_fetched_while_it_was_forgotten_is_neither_kept_nor_shared(ehr: FakeEhr) -> None:
    """A configuration changed (``forget``) while a discovery was in flight: its answer is from before the change,
    so the next ask fetches again, and an ask made while the old fetch is still running does not wait for it."""
    import threading

    client = SmartClient(SafeHttp(POLICY), KEYS)
    fetched: list[str] = []
    entered, release = threading.Event(), threading.Event()
    get = client.http.get

    def gated(url: str, **kwargs: Any) -> Any:
        fetched.append(url)
        if len(fetched) == 1:  # the first fetch waits until the configuration has been forgotten
            entered.set()
            assert release.wait(10)
        return get(url, **kwargs)

    client.http.get = gated  # type: ignore[method-assign]
    answers: list[object] = []
    early = threading.Thread(target=lambda: answers.append(client.discover(ehr.fhir_base, client_id="prov")))
    early.start()
    assert entered.wait(10)
    client.forget(ehr.fhir_base)
    later = client.discover(ehr.fhir_base, client_id="prov")  # not joined to the flight from before the forget
    assert len(fetched) == 2
    release.set()
    early.join(10)
    assert answers and answers[0] is not later
    assert client.discover(ehr.fhir_base, client_id="prov") is later  # the answer after the forget is the one kept
    assert len(fetched) == 2


def test_the_authorize_url_carries_aud_pkce_state_and_nonce(ehr: FakeEhr, client: SmartClient) -> None:
    config = client.discover(ehr.fhir_base)
    pkce = Pkce.new()
    url = client.authorize_url(
        config, client_id="prov", redirect_uri=REDIRECT, scope="openid fhirUser", state="abc", pkce=pkce, nonce="n"
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "response_type": "code",
        "client_id": "prov",
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser",
        "state": "abc",
        "aud": ehr.fhir_base,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
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


# --- malformed discovery documents: always a DiscoveryError, never a crash ------------------------

_OAUTH = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
MALFORMED_METADATA = [
    {"resourceType": "CapabilityStatement", "rest": "not a list"},
    {"resourceType": "CapabilityStatement", "rest": 7},
    {"resourceType": "CapabilityStatement", "rest": {"security": {}}},
    {"resourceType": "CapabilityStatement", "rest": ["text", 3, None]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": ["a", "list"]}]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": "text"}]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": {"extension": {"url": _OAUTH}}}]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": {"extension": 5}}]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": {"extension": ["x", 1, [2]]}}]},
    {"resourceType": "CapabilityStatement", "rest": [{"security": {"extension": [{"url": _OAUTH, "extension": 9}]}}]},
    {
        "resourceType": "CapabilityStatement",
        "rest": [{"security": {"extension": [{"url": _OAUTH, "extension": {"url": "authorize"}}]}}],
    },
    {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "security": {
                    "extension": [
                        {"url": _OAUTH, "extension": ["x", None, {"url": ["authorize"], "valueUri": "https://a"}]}
                    ]
                }
            }
        ],
    },
]


def _metadata_only(document: object) -> SmartClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            return httpx.Response(200, json=document)
        return httpx.Response(404)

    return SmartClient(SafeHttp(OutboundPolicy(), transport=httpx.MockTransport(answer)), None)


@pytest.mark.parametrize("document", MALFORMED_METADATA)
def test_malformed_metadata_is_a_discovery_error(document: object) -> None:
    with pytest.raises(DiscoveryError, match="no OAuth authorize and token endpoints"):
        _metadata_only(document).discover("https://ehr.example.org/api/FHIR/R4")


def test_well_formed_metadata_still_yields_its_endpoints() -> None:
    document = {
        "resourceType": "CapabilityStatement",
        "rest": [
            {
                "security": {
                    "extension": [
                        {
                            "url": _OAUTH,
                            "extension": [
                                {"url": "authorize", "valueUri": "https://ehr.example.org/oauth2/authorize"},
                                {"url": "token", "valueUri": "https://ehr.example.org/oauth2/token"},
                            ],
                        }
                    ]
                }
            }
        ],
    }
    config = _metadata_only(document).discover("https://ehr.example.org/api/FHIR/R4")
    assert config.token_endpoint == "https://ehr.example.org/oauth2/token" and config.source == "metadata"


def test_an_id_token_with_an_unparseable_issuer_is_invalid_not_a_crash() -> None:
    import jwt as pyjwt

    from shared.ehr.smart import SmartConfiguration

    config = SmartConfiguration(
        fhir_base_url="https://ehr.example.org/fhir",
        authorization_endpoint="https://ehr.example.org/oauth2/authorize",
        token_endpoint="https://ehr.example.org/oauth2/token",
    )
    token = pyjwt.encode({"iss": "https://[not-an-address/x", "aud": "client"}, "k" * 32, algorithm="HS256")
    client = SmartClient(SafeHttp(OutboundPolicy(), transport=httpx.MockTransport(lambda r: httpx.Response(500))), None)
    with pytest.raises(InvalidIdToken, match="issuer is not a valid URL"):
        client.validate_id_token(config, token, client_id="client", nonce=None)
