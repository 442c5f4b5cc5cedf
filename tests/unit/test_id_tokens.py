"""id_token validation rules shared by the Entra and EHR sign-ins."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.jose.id_tokens import validate_id_token
from shared.jose.jwks import JwksCache
from shared.kernel.errors import InvalidIdToken

KEY = rsa.generate_private_key(65537, 2048)
OTHER = rsa.generate_private_key(65537, 2048)
ISSUER = "https://issuer.example/tenant/v2.0"


def jwks_of(*pairs: tuple[rsa.RSAPrivateKey, str]) -> dict[str, Any]:
    return {"keys": [{**RSAAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid} for k, kid in pairs]}


def token(key: rsa.RSAPrivateKey = KEY, kid: str = "k1", alg: str = "RS256", **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "client", "sub": "user", "iat": now, "exp": now + 300, "nonce": "n1", **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def check(raw: str, cache: JwksCache | None = None, nonce: str | None = "n1") -> dict[str, Any]:
    cache = cache or JwksCache(lambda url: jwks_of((KEY, "k1")))
    return validate_id_token(
        raw,
        keys_for=lambda kid, alg: cache.keys_for("https://issuer.example/keys", kid, alg),
        issuer=ISSUER,
        audience="client",
        nonce=nonce,
    )


def test_a_valid_token_yields_its_claims() -> None:
    assert check(token())["sub"] == "user"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (token(key=OTHER), "signature"),
        (token(iss="https://evil.example/v2.0"), "unexpected issuer"),
        (token(aud="other-client"), "another application"),
        (token(exp=int(time.time()) - 3600, iat=int(time.time()) - 4000), "expired"),
        (token(nonce="other"), "nonce"),
        (token(nonce=None), "nonce"),
        (token(kid="unknown"), "key the issuer does not publish"),
        (token(sub=None), "'sub'"),
        (jwt.encode({"iss": ISSUER}, "secret-secret-secret-secret-1234", algorithm="HS256"), "algorithm"),
        ("not-a-jwt", "well-formed"),
    ],
)
def test_invalid_tokens_are_refused_with_the_rule_that_failed(raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdToken) as caught:
        check(raw)
    assert reason in caught.value.reason


def test_unsigned_tokens_are_refused() -> None:
    unsigned = jwt.encode({"iss": ISSUER, "aud": "client", "sub": "u"}, None, algorithm="none")
    with pytest.raises(InvalidIdToken, match="algorithm"):
        check(unsigned)


def test_an_unknown_kid_triggers_one_refetch_for_key_rotation() -> None:
    fetched: list[str] = []
    documents = [jwks_of((KEY, "k1")), jwks_of((KEY, "k1"), (OTHER, "k2"))]

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        return documents[min(len(fetched) - 1, 1)]

    cache = JwksCache(fetch, min_refetch_seconds=0)
    check(token(), cache)
    assert check(token(key=OTHER, kid="k2"), cache)["sub"] == "user"
    assert len(fetched) == 2


def test_a_signed_token_whose_payload_is_not_json_is_refused_as_malformed() -> None:
    raw = jwt.api_jws.encode(b"not json", KEY, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(InvalidIdToken, match="well-formed"):
        check(raw)


def test_the_signature_is_verified_once_per_key_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deciding key checks signature and claims in one decode (no second verification of the same token)."""
    verified: list[bool] = []
    algorithm = jwt.get_algorithm_by_name("RS256")
    verify = type(algorithm).verify

    def counted(self: Any, msg: bytes, key: Any, sig: bytes) -> bool:
        verified.append(verify(self, msg, key, sig))
        return verified[-1]

    monkeypatch.setattr(type(algorithm), "verify", counted)
    assert check(token())["sub"] == "user"
    assert verified == [True]
