"""id_tokens without ``kid`` (the SMART reference launcher sends them): accepted when one of the EHR's few
published keys of the token's algorithm verifies it, whatever the number of keys; refused otherwise.

Before the fix such a token was accepted only while the EHR published exactly one key, so an EHR in the middle
of a key rotation (two keys) failed every approver's EHR sign-in. Keys are served over real HTTP, through the
SMART client the portal uses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.server import ServerThread
from shared.ehr.smart import SmartClient, SmartConfiguration
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.jose.jwks import MAX_KIDLESS_KEYS
from shared.kernel.errors import InvalidIdToken

RSA_KEYS = [rsa.generate_private_key(65537, 2048) for _ in range(MAX_KIDLESS_KEYS + 1)]
EC_KEY = ec.generate_private_key(ec.SECP256R1())
CLIENT = "kidless-client"


class KeyServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def jwks(request: Request) -> JSONResponse:
            return JSONResponse({"keys": self.keys})

        return Starlette(routes=[Route("/jwks", jwks)])


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[KeyServer, str]]:
    keys = KeyServer()
    with ServerThread(keys.app()) as server:
        yield keys, server.url


def publish(keys: KeyServer, *rsa_keys: rsa.RSAPrivateKey, with_ec: bool = False) -> None:
    keys.keys = [{**RSAAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": f"r{i}"} for i, k in enumerate(rsa_keys)]
    if with_ec:
        keys.keys.insert(0, {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "e"})


def kidless_token(issuer: str, key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "aud": CLIENT, "sub": "Practitioner/1", "iat": now, "exp": now + 300, "nonce": "n"}
    token = jwt.encode(claims, key, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    return token


def validate(base: str, token: str) -> dict[str, Any]:
    # A fresh client per check: the JWKS cache must not carry one test's key set into another.
    smart = SmartClient(SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}))), None)
    config = SmartConfiguration(
        fhir_base_url=base,
        authorization_endpoint=f"{base}/authorize",
        token_endpoint=f"{base}/token",
        issuer=base,
        jwks_uri=f"{base}/jwks",
    )
    return smart.validate_id_token(config, token, client_id=CLIENT, nonce="n")


def test_a_kidless_token_is_checked_against_each_published_key_of_its_algorithm(
    served: tuple[KeyServer, str],
) -> None:
    keys, base = served
    publish(keys, RSA_KEYS[0], RSA_KEYS[1], with_ec=True)  # a rotation in progress, and a key of another type
    assert validate(base, kidless_token(base, RSA_KEYS[1]))["sub"] == "Practitioner/1"
    assert validate(base, kidless_token(base, RSA_KEYS[0]))["sub"] == "Practitioner/1"


def test_a_kidless_token_signed_by_an_unpublished_key_is_refused(served: tuple[KeyServer, str]) -> None:
    keys, base = served
    publish(keys, RSA_KEYS[0], RSA_KEYS[1])
    with pytest.raises(InvalidIdToken, match="signature"):
        validate(base, kidless_token(base, RSA_KEYS[2]))


def test_the_keys_tried_for_a_kidless_token_are_bounded(served: tuple[KeyServer, str]) -> None:
    keys, base = served
    publish(keys, *RSA_KEYS)  # one more RSA key than a kid-less token may be tried against
    with pytest.raises(InvalidIdToken, match=f"more than {MAX_KIDLESS_KEYS}"):
        validate(base, kidless_token(base, RSA_KEYS[0]))


def test_claims_are_still_checked_for_a_kidless_token(served: tuple[KeyServer, str]) -> None:
    keys, base = served
    publish(keys, RSA_KEYS[0], RSA_KEYS[1])
    with pytest.raises(InvalidIdToken, match="unexpected issuer"):
        validate(base, kidless_token("https://evil.example", RSA_KEYS[1]))
