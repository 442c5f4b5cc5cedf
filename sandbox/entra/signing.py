"""The sandbox token signer: RSA keys published as a JWKS, shared by every stand-in that mints Microsoft tokens.

Like Entra ID, one key set signs tokens for every tenant and is published at both
``/{tenant}/discovery/v2.0/keys`` and ``/common/discovery/v2.0/keys``; ``kid`` = ``x5t`` =
base64url(SHA-1 of the key's self-signed certificate), and each JWK carries ``x5c``.

    issuer = TokenIssuer.generate()                      # or TokenIssuer.load_or_create(path)
    token = issuer.sign({"iss": ..., "aud": ...})       # RS256, header {"typ", "alg", "kid", "x5t"}
    issuer.jwks()                                        # {"keys": [...]}
    graph_validation_token(issuer, tenant_id=..., app_id=...)   # a Graph change-notification validationToken
"""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.certificates import self_signed
from sandbox.entra.config import GRAPH_CHANGE_NOTIFICATION_PUBLISHER


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def kid(self) -> str:
        return b64url(self.certificate.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is defined as SHA-1

    def jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "x5c": [base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")],
        }

    def private_pem(self) -> bytes:
        key = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key + self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(*self_signed("sandbox-entra-token-signing", days=3650))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the token signing key must be an RSA key")
        return cls(key, x509.load_pem_x509_certificate(pem))


class TokenIssuer:
    """Signs JWTs with the newest key; publishes every key (older ones stay verifiable during rotation)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a TokenIssuer needs at least one key")
        self._keys = list(keys)

    @classmethod
    def generate(cls) -> TokenIssuer:
        return cls([SigningKey.generate()])

    @classmethod
    def load_or_create(cls, path: Path | str) -> TokenIssuer:
        """Keys shared between processes (e.g. the Entra and Graph stand-ins run separately in the demo)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(SigningKey.generate().private_pem())
            return cls([SigningKey.from_pem(path.read_bytes())])

    @property
    def active_key(self) -> SigningKey:
        return self._keys[-1]

    def rotate(self) -> SigningKey:
        """Add a new signing key; the old ones remain in the JWKS."""
        key = SigningKey.generate()
        self._keys.append(key)
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self._keys]}

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        key = self.active_key
        header = {"typ": "JWT", "kid": key.kid, "x5t": key.kid, **(headers or {})}
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=header)

    def verify(self, token: str, *, audience: str | list[str], issuer: str | None = None) -> dict[str, Any]:
        """Decode and verify a token this issuer signed (for stand-ins that accept its access tokens)."""
        kid = jwt.get_unverified_header(token).get("kid")
        key = next((k for k in self._keys if k.kid == kid), None)
        if key is None:
            raise jwt.InvalidTokenError("unknown signing key")
        options = {"require": ["exp", "iat", "nbf", "aud", "iss"]}
        claims: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=["RS256"],
            audience=audience,
            issuer=issuer,
            options=options,  # type: ignore[arg-type]
        )
        return claims


def graph_validation_token(
    issuer: TokenIssuer,
    *,
    tenant_id: str,
    app_id: str,
    now: float | None = None,
    lifetime: float = 3600.0,
) -> str:
    """A Graph change-notification ``validationToken`` as Microsoft documents it: ``iss`` =
    ``https://sts.windows.net/{tenantId}/``, ``aud`` = the subscribing app's id, ``appid`` = the
    Graph change-notification publisher, signed with the keys at ``/common/discovery/v2.0/keys``."""
    issued = int(now if now is not None else time.time())
    publisher_sp = str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-entra:sp:{tenant_id}:{GRAPH_CHANGE_NOTIFICATION_PUBLISHER}")
    )
    return issuer.sign(
        {
            "aud": app_id,
            "iss": f"https://sts.windows.net/{tenant_id}/",
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime),
            "appid": GRAPH_CHANGE_NOTIFICATION_PUBLISHER,
            "appidacr": "2",
            "idp": f"https://sts.windows.net/{tenant_id}/",
            "oid": publisher_sp,
            "sub": publisher_sp,
            "tid": tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
    )
