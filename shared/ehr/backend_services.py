"""SMART Backend Services tokens for writeback, cached until shortly before they expire.

The protocol (discovery, ``client_credentials`` with a ``private_key_jwt`` assertion: RS384/ES384,
``kid``, unique ``jti``, ``exp`` ≤ 5 min) is ``shared.ehr.smart.SmartClient.backend_services_token``;
this module keeps one token per (FHIR base URL, client id, scope) so a busy writeback queue
asks the EHR for a token every few minutes, not per event, and sends the writeback adapters'
requests with it (``send``). The adapters send over ``SafeHttp``, the one checked transport, so
the bearer token only ever travels to an address that passed the outbound rules when the
connection opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from shared.configurations.model import Vendor
from shared.ehr.smart import SYSTEM, TokenResponse
from shared.http.outbound import HttpResult
from shared.http.upstream import error_for_status
from shared.kernel.errors import UnsafeUrl, UpstreamRejected
from shared.kernel.single_flight import SingleFlight

EXPIRY_MARGIN = 60  # renew this long before a token expires
DEFAULT_LIFETIME = 300  # SMART recommends (and Epic uses) 5 minutes when expires_in is missing


class BackendTokenSource(Protocol):
    def backend_services_token(
        self, fhir_base_url: str, *, client_id: str, scope: str, vendor: Vendor | None = None
    ) -> TokenResponse: ...


class BackendServices:
    def __init__(self, source: BackendTokenSource, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._fetching: SingleFlight[tuple[str, str, str], str] = SingleFlight()
        self.requests = 0  # token requests made (tests, benchmark)

    def access_token(self, fhir_base_url: str, client_id: str, scope: str, *, vendor: Vendor | None = None) -> str:
        """The kept token for ``scope``, or a new one: one request for all the threads that find it expired."""
        key = (fhir_base_url.rstrip("/"), client_id, scope)
        fetch = lambda: self._fetch(key, fhir_base_url, client_id, scope, vendor)  # noqa: E731
        return self._fetching.run(key, fetch, kept=lambda: self._kept(key))

    def _kept(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            cached = self._tokens.get(key)
        if cached is not None and cached[1] - EXPIRY_MARGIN > self._clock():
            return cached[0]
        return None

    def _fetch(
        self, key: tuple[str, str, str], fhir_base_url: str, client_id: str, scope: str, vendor: Vendor | None
    ) -> str:
        response = self._source.backend_services_token(fhir_base_url, client_id=client_id, scope=scope, vendor=vendor)
        self.requests += 1
        try:
            lifetime = float(response.fields.get("expires_in", DEFAULT_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_LIFETIME
        with self._lock:
            self._tokens[key] = (response.access_token, self._clock() + lifetime)
        return response.access_token

    def forget_token(self, fhir_base_url: str, client_id: str, scope: str) -> None:
        """Drop a token the EHR refused (401), so the next attempt fetches a new one."""
        with self._lock:
            self._tokens.pop((fhir_base_url.rstrip("/"), client_id, scope), None)

    def send(
        self,
        fhir_base_url: str,
        client_id: str,
        scope: str,
        request: Callable[[str], HttpResult],
        *,
        vendor: Vendor | None = None,
    ) -> HttpResult:
        """One attempt of ``request(access_token)`` with the token for ``scope``; any failure raises.

        Transport failures and error answers raise the upstream error ``shared.http.upstream`` classifies
        them as (retryable or not); a 401 also forgets the token, so the next attempt fetches a new one.
        An address the outbound rules refuse (e.g. a host whose DNS now answers with an internal address)
        is a permanent ``UpstreamRejected``: nothing, least of all the token, was sent there.
        """
        try:
            token = self.access_token(fhir_base_url, client_id, scope, vendor=vendor)
            response = request(token)
        except UnsafeUrl as exc:
            raise UpstreamRejected(
                f"The EHR's address is not allowed: {exc.message}.", system=SYSTEM, code="unsafe_url"
            ) from None
        if response.status == 401:
            self.forget_token(fhir_base_url, client_id, scope)
        error = error_for_status(response.status, response.headers, system=SYSTEM)
        if error is not None:
            raise error
        return response
