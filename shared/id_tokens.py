"""Validating OpenID Connect id_tokens from Entra ID and from EHRs: one set of rules, PyJWT doing the crypto.

Rules: an asymmetric algorithm from an allow-list (never ``none`` or HMAC), a key found by
``kid`` in the issuer's JWKS (refetched once when a ``kid`` is unknown, for key rotation),
signature, ``iss``, ``aud``, ``exp``/``iat`` with a small leeway, and ``nonce`` when one was sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY_SECONDS = 120


class InvalidIdToken(Exception):
    """The id_token failed validation; ``reason`` is safe to show (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksCache:
    """Per-process JWKS cache keyed by URL, with a TTL and a rate-limited refetch for unknown ``kid``s."""

    def __init__(
        self,
        fetch: Callable[[str], Mapping[str, Any]],
        *,
        ttl_seconds: float = 3600,
        min_refetch_seconds: float = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, jwt.PyJWKSet]] = {}
        self._lock = threading.Lock()

    def key(self, jwks_uri: str, kid: str | None) -> jwt.PyJWK:
        keys = self._get(jwks_uri, force=False)
        found = _find(keys, kid)
        if found is None:
            fetched_at = self._entries.get(jwks_uri, (0.0, keys))[0]
            if self._clock() - fetched_at >= self._min_refetch:
                found = _find(self._get(jwks_uri, force=True), kid)
        if found is None:
            raise InvalidIdToken("it was signed with a key the issuer does not publish")
        return found

    def _get(self, jwks_uri: str, *, force: bool) -> jwt.PyJWKSet:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(jwks_uri)
            if entry is not None and not force and now - entry[0] < self._ttl:
                return entry[1]
        document = self._fetch(jwks_uri)
        try:
            keys = jwt.PyJWKSet.from_dict(dict(document))
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, KeyError, TypeError):
            raise InvalidIdToken("the issuer's key set could not be read") from None
        with self._lock:
            self._entries[jwks_uri] = (now, keys)
        return keys


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    candidates = [k for k in keys.keys if k.public_key_use in (None, "sig")]
    if kid is None:
        return candidates[0] if len(candidates) == 1 else None
    return next((k for k in candidates if k.key_id == kid), None)


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims read without checking the signature: only to choose the issuer to check against."""
    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidIdToken("it is not a well-formed JWT") from None
    return claims


def validate_id_token(
    token: str,
    *,
    key_for: Callable[[str | None], jwt.PyJWK],
    issuer: str,
    audience: str,
    nonce: str | None,
    algorithms: tuple[str, ...] = ASYMMETRIC_ALGORITHMS,
) -> dict[str, Any]:
    """Return the claims of a valid id_token, or raise ``InvalidIdToken`` saying which rule failed."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidIdToken("it is not a well-formed JWT") from None
    algorithm = header.get("alg")
    if algorithm not in algorithms:
        raise InvalidIdToken(f"its signing algorithm {algorithm!r} is not accepted")
    key = key_for(header.get("kid"))
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key.key,
            algorithms=[str(algorithm)],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["iss", "aud", "exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidIdToken("it has expired") from None
    except jwt.InvalidAudienceError:
        raise InvalidIdToken("it was issued for another application") from None
    except jwt.InvalidIssuerError:
        raise InvalidIdToken("it was issued by an unexpected issuer") from None
    except jwt.InvalidSignatureError:
        raise InvalidIdToken("its signature is not valid") from None
    except jwt.MissingRequiredClaimError as exc:
        raise InvalidIdToken(f"it lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise InvalidIdToken("it is not valid") from None
    if nonce is not None and claims.get("nonce") != nonce:
        raise InvalidIdToken("its nonce does not match this sign-in")
    return claims
