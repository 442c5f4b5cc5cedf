"""App-only Microsoft Graph tokens (client credentials): one msal application per tenant."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import msal
from azure.core.credentials import AccessToken

from shared.http.outbound import SafeHttp
from shared.http.upstream import sanitise_oauth_error
from shared.kernel.errors import (
    UpstreamRejected,
    UpstreamUnavailable,
)
from shared.kernel.i18n import N_
from shared.microsoft.entra import SYSTEM, MsalHttp

# --- app-only Microsoft Graph tokens (client credentials) ----------------------------------------
# TeamsClient calls ``get_token(scope)`` and awaits the result when it is awaitable, on the Graph
# adapter's event loop. msal is synchronous and may do network I/O, so it runs in a thread of
# that loop's executor rather than on the loop, which serves every Graph call; a token is kept until five
# minutes before it expires, so a warm launch never waits for Entra ID. One msal application per
# tenant (client credentials need a tenant-specific authority), built on first use.

REFRESH_BEFORE_SECONDS = 300


class AppOnlyCredential:
    def __init__(self, build_app: Callable[[], Any], *, clock: Callable[[], float] = time.time) -> None:
        self._build_app = build_app
        self._app: Any = None
        self._clock = clock
        self._tokens: dict[tuple[str, ...], AccessToken] = {}
        self._lock = threading.Lock()

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        cached = self._tokens.get(scopes)
        if cached is not None and cached.expires_on - REFRESH_BEFORE_SECONDS > self._clock():
            return cached
        return await asyncio.to_thread(self._acquire, scopes)

    def _acquire(self, scopes: tuple[str, ...]) -> AccessToken:
        with self._lock:  # one token request at a time; the others then find it cached
            cached = self._tokens.get(scopes)
            if cached is not None and cached.expires_on - REFRESH_BEFORE_SECONDS > self._clock():
                return cached
            try:
                if self._app is None:
                    self._app = self._build_app()
                result = self._app.acquire_token_for_client(list(scopes))
            except ValueError:
                raise UpstreamUnavailable(
                    N_("Microsoft Entra ID's configuration could not be read."), system=SYSTEM
                ) from None
            except Exception:  # noqa: BLE001 - requests' connection errors from inside msal
                raise UpstreamUnavailable(N_("Microsoft Entra ID could not be reached."), system=SYSTEM) from None
            token = result.get("access_token") if isinstance(result, dict) else None
            if not isinstance(token, str) or not token:
                error = result.get("error") if isinstance(result, dict) else None
                code = sanitise_oauth_error(error or "no_token").code
                raise UpstreamRejected(
                    N_("Microsoft Entra ID refused the connector's app-only token (%(code)s).", code=code),
                    system=SYSTEM,
                    code=code,
                )
            expires_in = int(result.get("expires_in") or 0)
            access = AccessToken(token, int(self._clock()) + max(expires_in, 0))
            self._tokens[scopes] = access
            return access


class AppOnlyCredentials:
    """One ``AppOnlyCredential`` per tenant for the connector's app registration."""

    def __init__(self, authority_host: str, client_id: str, client_secret: str, *, http: SafeHttp) -> None:
        self._http = http
        self._host = authority_host.rstrip("/")
        self._client_id = client_id
        self._secret = client_secret
        self._credentials: dict[str, AppOnlyCredential] = {}
        self._lock = threading.Lock()

    def for_tenant(self, tenant_id: str) -> AppOnlyCredential:
        tenant = tenant_id.lower()
        with self._lock:
            credential = self._credentials.get(tenant)
            if credential is None:
                credential = AppOnlyCredential(lambda: self._msal_app(tenant))
                self._credentials[tenant] = credential
        return credential

    def _msal_app(self, tenant: str) -> Any:
        return msal.ConfidentialClientApplication(
            self._client_id,
            client_credential=self._secret,
            authority=f"{self._host}/{tenant}",
            instance_discovery=False,  # the same code works against the sandbox; real Entra needs no discovery
            http_client=MsalHttp(self._http),
        )
