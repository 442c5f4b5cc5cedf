"""One JWKS cache for every issuer (Entra ID, each EHR).

Keyed by the key set's URL, kept for a TTL, and refetched at most every ``min_refetch_seconds`` when a
token names an unknown ``kid`` (key rotation), so a stream of forged ``kid``s cannot hammer the issuer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from shared.kernel.errors import InvalidIdToken


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
