"""App-only access tokens as Graph checks them: signature (JWKS), audience, issuer, lifetime, roles."""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import jwt

from sandbox.graph.config import GraphConfig, Jwks
from sandbox.graph.odata import GraphError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'}


def _unauthorized(message: str) -> GraphError:
    return GraphError(401, "InvalidAuthenticationToken", message, _CHALLENGE)


@dataclass(frozen=True)
class Caller:
    """The verified application behind a request."""

    app_id: str
    tenant_id: str
    roles: frozenset[str]
    claims: dict[str, Any]

    def require_any_role(self, roles: Collection[str]) -> None:
        if not self.roles.intersection(roles):
            raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation.")


class TokenVerifier:
    """Verifies bearer tokens against the configured JWKS; refreshes the JWKS on an unknown ``kid``."""

    def __init__(self, config: GraphConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._jwks: Jwks | None = None

    def _load(self, refresh: bool) -> Jwks:
        with self._lock:
            if self._jwks is None or refresh:
                source = self._config.jwks
                self._jwks = source() if callable(source) else source
            return self._jwks

    def _key_for(self, kid: str | None) -> Any:
        for refresh in (False, True):
            keys = self._load(refresh).get("keys", [])
            for entry in keys:
                if kid is None or entry.get("kid") == kid:
                    return jwt.PyJWK(dict(entry)).key
            if not callable(self._config.jwks):
                break
        raise _unauthorized("Access token validation failure. Invalid signing key.")

    def verify(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Access token is empty.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _unauthorized("CompactToken parsing failed with error code: 80049217") from None
        if header.get("alg") not in ("RS256", "RS384", "RS512", "PS256"):
            raise _unauthorized("Access token validation failure. Invalid signing algorithm.")
        key = self._key_for(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=list(self._config.accepted_audiences()),
                options={"require": ["exp", "iss", "aud", "tid"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("Lifetime validation failed, the token is expired.") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("Lifetime validation failed, the token is not yet valid.") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("Invalid audience.") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("Access token validation failure. Invalid signature.") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("Access token validation failure.") from None
        tenant_id = str(claims["tid"])
        if claims["iss"] not in self._config.accepted_issuers(tenant_id):
            raise _unauthorized("Access token validation failure. Invalid issuer.")
        app_id = claims.get("appid") or claims.get("azp")
        if not isinstance(app_id, str) or not app_id:
            raise _unauthorized("Access token validation failure. No application id.")
        roles = claims.get("roles") or []
        if "scp" in claims or not isinstance(roles, list):
            # Delegated tokens use /me; the /users/{id} application routes need application permissions.
            raise GraphError(403, "Forbidden", "Insufficient privileges to complete the operation.")
        return Caller(app_id=app_id, tenant_id=tenant_id, roles=frozenset(str(r) for r in roles), claims=claims)
