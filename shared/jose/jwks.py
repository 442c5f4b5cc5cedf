"""One JWKS cache for every issuer (Entra ID, each EHR).

Keyed by the key set's URL, kept for a TTL, and refetched at most every ``min_refetch_seconds`` when a
token names an unknown ``kid`` (key rotation), so a stream of forged ``kid``s cannot hammer the issuer.

A token without ``kid`` (the SMART reference launcher sends such id_tokens) is checked against each
published signing key of the token's algorithm: ``keys_for`` returns them, at most ``MAX_KIDLESS_KEYS``,
so the work one such token costs stays bounded however many keys the issuer publishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from shared.kernel.errors import InvalidIdToken
from shared.kernel.single_flight import SingleFlight

MAX_KIDLESS_KEYS = 5
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


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
        self._fetching: SingleFlight[tuple[str, bool], jwt.PyJWKSet] = SingleFlight()

    def key(self, jwks_uri: str, kid: str | None) -> jwt.PyJWK:
        """The signing key named ``kid`` (refetched once, rate-limited, when unknown: key rotation)."""
        keys = self._get(jwks_uri, force=False)
        found = _find(keys, kid)
        if found is None and self._may_refetch(jwks_uri, keys):
            found = _find(self._get(jwks_uri, force=True), kid)
        if found is None:
            raise InvalidIdToken("it was signed with a key the issuer does not publish")
        return found

    def keys_for(self, jwks_uri: str, kid: str | None, algorithm: str) -> list[jwt.PyJWK]:
        """The keys a token signed with ``algorithm`` may be checked against: the one named ``kid``, or, for a
        token without ``kid``, every published signing key of that algorithm (at most ``MAX_KIDLESS_KEYS``)."""
        if kid is not None:
            return [self.key(jwks_uri, kid)]
        keys = self._get(jwks_uri, force=False)
        found = _fitting(keys, algorithm)
        if not found and self._may_refetch(jwks_uri, keys):
            found = _fitting(self._get(jwks_uri, force=True), algorithm)
        if not found:
            raise InvalidIdToken(f"it names no key id and the issuer publishes no {algorithm} key")
        if len(found) > MAX_KIDLESS_KEYS:
            raise InvalidIdToken(
                f"it names no key id and the issuer publishes more than {MAX_KIDLESS_KEYS} {algorithm} keys"
            )
        return found

    def _may_refetch(self, jwks_uri: str, keys: jwt.PyJWKSet) -> bool:
        fetched_at = self._entries.get(jwks_uri, (0.0, keys))[0]
        return self._clock() - fetched_at >= self._min_refetch

    def _get(self, jwks_uri: str, *, force: bool) -> jwt.PyJWKSet:
        """The kept key set while fresh (unless ``force``), else fetched: one fetch for the threads that ask
        meanwhile (a burst of launches when the set expires, or when a new key is first seen)."""
        kept = (lambda: self._kept(jwks_uri)) if not force else (lambda: None)
        return self._fetching.run((jwks_uri, force), lambda: self._load(jwks_uri, force=force), kept=kept)

    def _kept(self, jwks_uri: str) -> jwt.PyJWKSet | None:
        with self._lock:
            entry = self._entries.get(jwks_uri)
        return entry[1] if entry is not None and self._clock() - entry[0] < self._ttl else None

    def _load(self, jwks_uri: str, *, force: bool) -> jwt.PyJWKSet:
        now = self._clock()
        if force:  # at most once per ``min_refetch_seconds`` whoever asks (a flight may have just refetched)
            with self._lock:
                entry = self._entries.get(jwks_uri)
            if entry is not None and now - entry[0] < self._min_refetch:
                return entry[1]
        document = self._fetch(jwks_uri)
        try:
            keys = jwt.PyJWKSet.from_dict(dict(document))
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, KeyError, TypeError):
            raise InvalidIdToken("the issuer's key set could not be read") from None
        with self._lock:
            self._entries[jwks_uri] = (now, keys)
        return keys


def _signing(keys: jwt.PyJWKSet) -> list[jwt.PyJWK]:
    return [k for k in keys.keys if k.public_key_use in (None, "sig")]


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    candidates = _signing(keys)
    if kid is None:
        return candidates[0] if len(candidates) == 1 else None
    return next((k for k in candidates if k.key_id == kid), None)


def _fitting(keys: jwt.PyJWKSet, algorithm: str) -> list[jwt.PyJWK]:
    """Signing keys that can verify ``algorithm``: its declared ``alg`` if any, else its key type (and curve)."""
    return [key for key in _signing(keys) if _fits(key, algorithm)]


def _fits(key: jwt.PyJWK, algorithm: str) -> bool:
    data: Any = getattr(key, "_jwk_data", {})
    declared = data.get("alg") if isinstance(data, dict) else None
    if declared:
        return bool(declared == algorithm)
    if algorithm[:2] in ("RS", "PS"):
        return key.key_type == "RSA"
    if algorithm in _EC_CURVES:
        return key.key_type == "EC" and isinstance(data, dict) and data.get("crv") == _EC_CURVES[algorithm]
    return False
