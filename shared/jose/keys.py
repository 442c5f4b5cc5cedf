"""Our signing keys: client assertions (``private_key_jwt``, SMART Backend Services) and the public JWKS.

``SIGNING_KEYS`` holds one or more PEM private keys. The first signs; all are published, so a
rotation is: add the new key second, deploy, move it first, deploy, wait for EHR JWKS caches
(Epic: up to 29 h), remove the old one. RSA keys sign RS384, EC P-384 keys ES384 (the two
algorithms SMART asymmetric clients SHALL support). ``kid`` = RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.kernel.errors import ConfigurationError
from shared.kernel.identifiers import random_token

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 240  # SMART: exp no more than 5 minutes ahead
_PEM_BLOCK = re.compile(r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----.+?-----END (?:RSA |EC )?PRIVATE KEY-----", re.S)


def private_key_blocks(pem_text: str) -> list[str]:
    """Each PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a settings value, in order."""
    return list(_PEM_BLOCK.findall(pem_text))


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK (required members, sorted, no whitespace)."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class SigningKey:
    private_key: PrivateKey
    algorithm: str
    kid: str
    public_jwk: dict[str, Any]

    @classmethod
    def from_private_key(cls, key: PrivateKey) -> SigningKey:
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise ValueError("RSA signing keys must have at least 2048 bits")
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            algorithm = "RS384"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            algorithm = "ES384"
        else:
            raise ValueError("signing keys must be RSA (RS384) or EC P-384 (ES384)")
        kid = jwk_thumbprint(jwk)
        public = {**{k: v for k, v in jwk.items() if k in ("kty", "n", "e", "crv", "x", "y")}}
        public.update({"kid": kid, "alg": algorithm, "use": "sig"})
        return cls(private_key=key, algorithm=algorithm, kid=kid, public_jwk=public)


class SigningKeys:
    """The keys from ``SIGNING_KEYS``: ``active`` signs, ``jwks()`` publishes all of them."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self.keys = tuple(keys)

    @classmethod
    def from_pem(cls, pem_text: str) -> SigningKeys:
        blocks = private_key_blocks(pem_text)
        if not blocks:
            raise ConfigurationError({"SIGNING_KEYS": "no PEM private key found"})
        keys: list[SigningKey] = []
        for block in blocks:
            try:
                loaded = serialization.load_pem_private_key(block.encode(), password=None)
                if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                    raise ValueError("unsupported key type")
                keys.append(SigningKey.from_private_key(loaded))
            except (ValueError, TypeError) as exc:
                raise ConfigurationError({"SIGNING_KEYS": f"a key could not be used: {exc}"}) from None
        return cls(keys)

    @property
    def active(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(key.public_jwk) for key in self.keys]}

    def client_assertion(self, client_id: str, audience: str, *, now: float | None = None) -> str:
        """A signed JWT authenticating ``client_id`` to the token endpoint ``audience`` (SMART asymmetric)."""
        issued = int(now if now is not None else time.time())
        key = self.active
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": random_token(24),
            "iat": issued,
            "nbf": issued,
            "exp": issued + ASSERTION_LIFETIME_SECONDS,
        }
        headers = {"kid": key.kid, "typ": "JWT"}
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)


_keys_cache: dict[str, SigningKeys] = {}


def signing_keys_from(pem_text: str) -> SigningKeys:
    """Parse once per process (keys do not change without a restart)."""
    cached = _keys_cache.get(pem_text)
    if cached is None:
        cached = SigningKeys.from_pem(pem_text)
        _keys_cache.clear()
        _keys_cache[pem_text] = cached
    return cached
