"""Our signing keys: RFC 7638 kids, published JWKS, SMART client assertions."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.local_settings import private_key_pem
from shared.jose.keys import SigningKeys, jwk_thumbprint
from shared.kernel.errors import ConfigurationError


def test_rfc7638_thumbprint_matches_the_rfc_example() -> None:
    # RFC 7638 section 3.1
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
        "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91"
        "CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_all_keys_are_published_and_the_first_signs() -> None:
    keys = SigningKeys.from_pem(private_key_pem() + "\n" + private_key_pem())
    published = keys.jwks()["keys"]
    assert [k["kid"] for k in published] == [k.kid for k in keys.keys]
    assert all(k["alg"] == "RS384" and k["use"] == "sig" and "d" not in k for k in published)
    assert keys.active is keys.keys[0]


def test_client_assertion_follows_smart_asymmetric_rules() -> None:
    keys = SigningKeys.from_pem(private_key_pem())
    token = keys.client_assertion("client-1", "https://ehr.example.org/oauth2/token", now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS384", "kid": keys.active.kid, "typ": "JWT"}
    public = jwt.PyJWK(keys.jwks()["keys"][0]).key
    claims = jwt.decode(
        token,
        public,
        algorithms=["RS384"],
        audience="https://ehr.example.org/oauth2/token",
        options={"verify_exp": False},
    )
    assert claims["iss"] == claims["sub"] == "client-1"
    assert 0 < claims["exp"] - claims["iat"] <= 300
    assert len(claims["jti"]) <= 151
    another = jwt.decode(keys.client_assertion("client-1", "x"), options={"verify_signature": False})
    assert claims["jti"] != another["jti"]


def test_ec_p384_keys_sign_es384() -> None:
    pem = (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    keys = SigningKeys.from_pem(pem)
    assert keys.active.algorithm == "ES384"
    assert keys.jwks()["keys"][0]["crv"] == "P-384"


def test_unusable_key_text_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="SIGNING_KEYS"):
        SigningKeys.from_pem("-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----")
