"""Bearer-token checks for FHIR and Epic web-service calls (RFC 6750 challenges)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.requests import Request

from sandbox.ehr.state import AccessToken

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox


class BearerError(Exception):
    """401 (no/invalid token) or 403 (insufficient scope), with the ``WWW-Authenticate`` challenge to send."""

    def __init__(self, status: int, description: str, error: str | None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        challenge = 'Bearer realm="Epic"'
        if error:
            challenge += f', error="{error}", error_description="{description}"'
        self.headers = {"WWW-Authenticate": challenge}


def require_token(ehr: EhrSandbox, request: Request) -> AccessToken:
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if not authorization:
        raise BearerError(401, "an access token is required", None)
    if scheme.lower() != "bearer" or not value.strip():
        raise BearerError(401, "the Authorization header must carry a Bearer token", "invalid_request")
    with ehr.state.lock:
        token = ehr.state.tokens.get(value.strip())
    if token is None:
        raise BearerError(401, "the access token is not valid", "invalid_token")
    if token.revoked:
        raise BearerError(401, "the access token was revoked", "invalid_token")
    if token.expires_at < time.time():
        raise BearerError(401, "the access token has expired", "invalid_token")
    return token


def insufficient_scope(description: str) -> BearerError:
    return BearerError(403, description, "insufficient_scope")
