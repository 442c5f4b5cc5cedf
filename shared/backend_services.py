"""SMART Backend Services: app-only EHR access tokens for writeback (no user present).

``client_credentials`` with a ``private_key_jwt`` assertion (SMART-ASYM): header ``alg`` RS384
(or ES384) and ``kid``; claims ``iss`` = ``sub`` = client id, ``aud`` = token endpoint, a unique
``jti`` (string, ≤ 151 chars for Epic), ``exp`` ≤ 5 minutes. Tokens are cached per
(token endpoint, client id, scope) until shortly before they expire; the token endpoint comes
from the FHIR server's ``.well-known/smart-configuration``, cached per base URL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from shared.errors import UpstreamRejected, UpstreamUnavailable
from shared.upstream import error_for_response, error_for_transport

SYSTEM = "EHR"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXPIRY_MARGIN = 60  # renew this long before a token expires
DISCOVERY_TTL = 3600.0


class AssertionSigner(Protocol):
    """Our signing keys (``shared.keys.SigningKeys``): a fresh client assertion per call (new jti)."""

    def client_assertion(self, client_id: str, audience: str) -> str: ...


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class BackendServices:
    """Backend Services tokens and SMART discovery for one process (thread-safe caches)."""

    def __init__(
        self, http: httpx.Client, signer: AssertionSigner, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._http = http
        self._signer = signer
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._token_urls: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.requests = 0  # token requests made (tests, benchmark)

    def token_endpoint(self, fhir_base_url: str, client_id: str) -> str:
        base = fhir_base_url.rstrip("/")
        with self._lock:
            cached = self._token_urls.get(base)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        response = self._send(
            "GET",
            f"{base}/.well-known/smart-configuration",
            headers={"Accept": "application/json", "Epic-Client-ID": client_id},
        )
        try:
            url = response.json()["token_endpoint"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamRejected("The EHR's SMART configuration has no token endpoint.", system=SYSTEM) from None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise UpstreamRejected("The EHR's SMART configuration has no valid token endpoint.", system=SYSTEM)
        with self._lock:
            self._token_urls[base] = (url, self._clock() + DISCOVERY_TTL)
        return url

    def access_token(self, fhir_base_url: str, client_id: str, scope: str) -> str:
        token_url = self.token_endpoint(fhir_base_url, client_id)
        key = (token_url, client_id, scope)
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached.expires_at - EXPIRY_MARGIN > self._clock():
            return cached.value
        assertion = self._signer.client_assertion(client_id, token_url)
        response = self._send(
            "POST",
            token_url,
            data={
                "grant_type": "client_credentials",
                "scope": scope,
                "client_assertion_type": JWT_BEARER,
                "client_assertion": assertion,
            },
            headers={"Accept": "application/json", "Epic-Client-ID": client_id},
        )
        self.requests += 1
        try:
            body = response.json()
            value = str(body["access_token"])
            lifetime = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise UpstreamUnavailable("The EHR returned an unreadable token response.", system=SYSTEM) from None
        token = _Token(value, self._clock() + lifetime)
        with self._lock:
            self._tokens[key] = token
        return value

    def forget_token(self, fhir_base_url: str, client_id: str, scope: str) -> None:
        """Drop a cached token the EHR refused (401), so the next attempt fetches a new one."""
        base = fhir_base_url.rstrip("/")
        with self._lock:
            token_url = self._token_urls.get(base, ("", 0.0))[0]
            self._tokens.pop((token_url, client_id, scope), None)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise error_for_transport(exc, system=SYSTEM) from None
        error = error_for_response(response, system=SYSTEM)
        if error is not None:
            raise error
        return response
