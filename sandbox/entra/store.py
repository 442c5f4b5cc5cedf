"""In-memory state of the sandbox Entra ID: pending sign-ins, authorization codes, refresh tokens, sessions.

One process, one lock: the app is served by two uvicorn threads (http and https) at once.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated authorize request waiting for the user to pick an account on the sign-in page."""

    tenant_segment: str
    client_id: str
    redirect_uri: str
    response_mode: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    client_info: bool
    login_hint: str | None
    prompt: str | None
    expires_at: float


@dataclass
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    tenant_id: str
    user_id: str
    scopes: tuple[str, ...]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    expires_at: float
    redeemed: bool = False


@dataclass(frozen=True)
class RefreshGrant:
    client_id: str
    tenant_id: str
    user_id: str
    scopes: tuple[str, ...]
    auth_time: int
    expires_at: float


@dataclass
class Store:
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[str, AuthorizeRequest] = field(default_factory=dict)
    _codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    _refresh: dict[str, RefreshGrant] = field(default_factory=dict)
    _sessions: dict[str, str] = field(default_factory=dict)
    _assertion_ids: dict[str, float] = field(default_factory=dict)

    def add_pending(self, request: AuthorizeRequest) -> str:
        key = secrets.token_urlsafe(32)
        with self._lock:
            self._pending[key] = request
        return key

    def take_pending(self, key: str, now: float) -> AuthorizeRequest | None:
        """Single use: the sign-in page's context is consumed by the first account choice."""
        with self._lock:
            request = self._pending.pop(key, None)
            self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        return request if request is not None and request.expires_at > now else None

    def add_code(self, code: AuthorizationCode) -> str:
        value = secrets.token_urlsafe(48)
        with self._lock:
            self._codes[value] = code
        return value

    def present_code(self, value: str) -> tuple[AuthorizationCode, bool] | None:
        """The code and whether it had already been redeemed; marks it redeemed either way (single use)."""
        with self._lock:
            code = self._codes.get(value)
            if code is None:
                return None
            already = code.redeemed
            code.redeemed = True
            return code, already

    def add_refresh(self, grant: RefreshGrant) -> str:
        value = "1.sandbox." + secrets.token_urlsafe(64)
        with self._lock:
            self._refresh[value] = grant
        return value

    def refresh(self, value: str) -> RefreshGrant | None:
        with self._lock:
            return self._refresh.get(value)

    def add_session(self, user_id: str) -> str:
        key = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[key] = user_id
        return key

    def session_user(self, key: str) -> str | None:
        with self._lock:
            return self._sessions.get(key)

    def end_session(self, key: str) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def first_use_of_assertion(self, jti: str, expires_at: float, now: float) -> bool:
        """Client assertions are single use (replay protection keyed by ``jti`` until they expire)."""
        with self._lock:
            self._assertion_ids = {k: v for k, v in self._assertion_ids.items() if v > now}
            if jti in self._assertion_ids:
                return False
            self._assertion_ids[jti] = expires_at
            return True
