"""Token-endpoint client authentication: ``private_key_jwt`` (SMART asymmetric), secret basic/post, public.

Assertions are checked as SMART App Launch 2 ``client-confidential-asymmetric`` and Epic describe:
header ``alg`` RS384/ES384 (RS256, RS512, ES256 also accepted), ``kid`` required, optional ``jku``
equal to the registered JWKS URL; claims ``iss`` = ``sub`` = client id, ``aud`` = token URL,
``exp`` at most five minutes ahead, ``jti`` a string of at most 151 characters never seen before.
Keys come from the client's registered JWKS URL, fetched over HTTP, cached, and fetched again when
a ``kid`` is unknown (key rotation).
"""

from __future__ import annotations

import base64
import hmac
import threading
import time
from typing import Any
from urllib.parse import unquote

import httpx
import jwt

from sandbox.ehr.config import RegisteredClient
from sandbox.ehr.state import EhrState

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384"})
MAX_ASSERTION_LIFETIME = 300
LEEWAY = 30


class ClientAuthError(Exception):
    """Authentication failed: answer ``invalid_client`` (401)."""

    def __init__(self, description: str, *, basic: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.basic = basic


class JwksCache:
    """Client JWK Sets by URL; ``fetches`` counts HTTP fetches (tests assert caching)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sets: dict[str, list[dict[str, Any]]] = {}
        self.fetches = 0

    async def keys(self, url: str, *, refresh: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._sets.get(url)
        if cached is not None and not refresh:
            return cached
        async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client:
            response = await client.get(url, headers={"Accept": "application/json"})
        with self._lock:
            self.fetches += 1
        response.raise_for_status()
        body = response.json()
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list):
            raise ValueError("not a JWK Set")
        valid = [k for k in keys if isinstance(k, dict)]
        with self._lock:
            self._sets[url] = valid
        return valid


def _kty_for(alg: str) -> str:
    return "EC" if alg.startswith("ES") else "RSA"


def _pick(keys: list[dict[str, Any]], kid: str, alg: str) -> dict[str, Any] | None:
    return next((k for k in keys if k.get("kid") == kid and k.get("kty") == _kty_for(alg)), None)


async def _client_key(client: RegisteredClient, kid: str, alg: str, cache: JwksCache) -> dict[str, Any]:
    if client.jwks is not None:
        found = _pick(list(client.jwks.get("keys") or []), kid, alg)
        if found:
            return found
    if client.jwks_url:
        try:
            found = _pick(await cache.keys(client.jwks_url), kid, alg)
            if found is None:
                found = _pick(await cache.keys(client.jwks_url, refresh=True), kid, alg)
        except (httpx.HTTPError, ValueError) as exc:
            raise ClientAuthError("the client's JWK Set URL could not be fetched") from exc
        if found:
            return found
    raise ClientAuthError(f"no key with kid {kid!r} for this client")


async def verify_assertion(
    assertion: str, state: EhrState, token_url: str, cache: JwksCache, form_client_id: str | None
) -> RegisteredClient:
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ClientAuthError("client_assertion is not a JWT") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise ClientAuthError(f"client_assertion alg must be one of {', '.join(sorted(ALGORITHMS))}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ClientAuthError("client_assertion header needs a kid")
    typ = header.get("typ")
    if typ is not None and str(typ).upper() != "JWT":
        raise ClientAuthError("client_assertion typ must be JWT")
    issuer = unverified.get("iss")
    client = state.client(issuer if isinstance(issuer, str) else None)
    if client is None:
        raise ClientAuthError("unknown client")
    if form_client_id and form_client_id != client.client_id:
        raise ClientAuthError("client_id does not match the assertion issuer")
    if "jku" in header and header["jku"] != client.jwks_url:
        raise ClientAuthError("jku does not match the registered JWK Set URL")
    if not (client.jwks_url or client.jwks):
        raise ClientAuthError("client has no registered keys")
    key = await _client_key(client, kid, alg, cache)
    try:
        claims = jwt.decode(
            assertion,
            jwt.PyJWK(key, algorithm=alg).key,
            algorithms=[alg],
            audience=token_url,
            issuer=client.client_id,
            leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise ClientAuthError("client_assertion has expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise ClientAuthError("client_assertion aud must be the token endpoint URL") from exc
    except jwt.PyJWTError as exc:
        raise ClientAuthError(f"client_assertion is invalid: {exc}") from exc
    if claims.get("sub") != client.client_id:
        raise ClientAuthError("client_assertion sub must equal iss (the client id)")
    exp = float(claims["exp"])
    if exp - time.time() > MAX_ASSERTION_LIFETIME + LEEWAY:
        raise ClientAuthError("client_assertion exp must be at most 5 minutes in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 151:
        raise ClientAuthError("client_assertion jti must be a string of at most 151 characters")
    if not state.remember_jti(client.client_id, jti, exp):
        raise ClientAuthError("client_assertion jti was already used")
    return client


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError as exc:
        raise ClientAuthError("malformed Basic credentials", basic=True) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise ClientAuthError("malformed Basic credentials", basic=True)
    return client_id, secret


def _secret_matches(client: RegisteredClient, secret: str) -> bool:
    if not client.client_secret:
        return False
    expected = client.client_secret.encode()
    # Epic's text says URL-encode the Basic parts, field reports say don't: accept both.
    return hmac.compare_digest(secret.encode(), expected) or hmac.compare_digest(unquote(secret).encode(), expected)


async def authenticate(
    form: dict[str, str], authorization: str | None, state: EhrState, token_url: str, cache: JwksCache
) -> tuple[RegisteredClient, str]:
    """The authenticated client and the method used (private_key_jwt, client_secret_basic/post, none)."""
    form_client_id = form.get("client_id") or None
    if form.get("client_assertion_type") or form.get("client_assertion"):
        if form.get("client_assertion_type") != JWT_BEARER:
            raise ClientAuthError(f"client_assertion_type must be {JWT_BEARER}")
        if not form.get("client_assertion"):
            raise ClientAuthError("client_assertion is required")
        if authorization:
            raise ClientAuthError("use one client authentication method only")
        return await verify_assertion(form["client_assertion"], state, token_url, cache, form_client_id), (
            "private_key_jwt"
        )
    if authorization:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            raise ClientAuthError("unsupported Authorization scheme", basic=True)
        client_id, secret = credentials
        client = state.client(client_id) or state.client(unquote(client_id))
        if client is None or not _secret_matches(client, secret):
            raise ClientAuthError("client authentication failed", basic=True)
        if form_client_id and form_client_id != client.client_id:
            raise ClientAuthError("client_id does not match the Basic credentials", basic=True)
        return client, "client_secret_basic"
    client = state.client(form_client_id)
    if client is None:
        raise ClientAuthError("unknown client" if form_client_id else "client authentication is required")
    if form.get("client_secret"):
        if not _secret_matches(client, form["client_secret"]):
            raise ClientAuthError("client authentication failed")
        return client, "client_secret_post"
    if not client.is_public:
        raise ClientAuthError("this client must authenticate (private_key_jwt or client secret)")
    return client, "none"
