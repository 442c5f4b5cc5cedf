"""The EHR's id_token signing key: RS256, ``kid`` = base64url SHA-256 of the public key (as Epic does)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class SigningKey:
    def __init__(self, private_pem: str | None = None) -> None:
        if private_pem:
            loaded = serialization.load_pem_private_key(private_pem.encode(), password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("the EHR signing key must be RSA")
            self._key = loaded
        else:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()

    def private_pem(self) -> str:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def jwks(self, *, with_kid: bool = True) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"use": "sig", "alg": "RS256", **({"kid": self.kid} if with_kid else {})})
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any], *, with_kid: bool = True) -> str:
        """RS256; without ``kid`` as servers with one key may sign (the client then tries the JWKS's only key)."""
        headers = {"typ": "JWT", **({"kid": self.kid} if with_kid else {})}
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
