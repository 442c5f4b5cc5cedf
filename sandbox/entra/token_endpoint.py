"""``POST /{tenant}/oauth2/v2.0/token``: authorization_code, refresh_token and client_credentials grants."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.entra.client_auth import authenticate, read_credentials, s256
from sandbox.entra.config import AppRegistration
from sandbox.entra.context import Entra, entra_of
from sandbox.entra.discovery import api_only
from sandbox.entra.errors import EntraError, json_error, missing_parameter
from sandbox.entra.store import RefreshGrant
from sandbox.entra.tokens import (
    Scopes,
    app_access_token,
    client_info,
    id_token,
    parse_scopes,
    user_access_token,
)
from sandbox.seed import Tenant, User

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@api_only
async def token(request: Request) -> Response:
    entra = entra_of(request)
    try:
        if request.method != "POST":
            raise EntraError(
                "invalid_request",
                900561,
                f"The endpoint only accepts POST, OPTIONS requests. Received a {request.method} request.",
            )
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        return JSONResponse(_grant(request, entra, form), headers=NO_STORE)
    except EntraError as error:
        return json_error(error, request, entra.config.issuer_host)


def _grant(request: Request, entra: Entra, form: Mapping[str, str]) -> dict[str, Any]:
    segment = request.path_params["tenant"]
    tenant = entra.check_tenant_segment(segment)
    grant_type = form.get("grant_type") or ""
    if not grant_type:
        raise missing_parameter("grant_type")
    if grant_type not in ("authorization_code", "refresh_token", "client_credentials"):
        raise EntraError(
            "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'."
        )
    credentials = read_credentials(form, request.headers.get("authorization"))
    app = entra.app_for(credentials.client_id, segment, tenant)
    endpoint = f"{entra.config.issuer_host}/{segment}/oauth2/v2.0/token"
    audiences = [endpoint]
    if tenant is not None:
        audiences += [
            f"{entra.config.issuer_host}/{tenant.id}/oauth2/v2.0/token",
            f"{entra.config.issuer_host}/{tenant.id}/v2.0",
        ]
    authenticate(entra, app, credentials, audiences)
    if grant_type == "client_credentials":
        return _client_credentials(entra, app, tenant, form, credentials.acr)
    if grant_type == "authorization_code":
        return _authorization_code(entra, app, tenant, form, credentials.acr)
    return _refresh_token(entra, app, tenant, form, credentials.acr)


def _authorization_code(
    entra: Entra, app: AppRegistration, tenant: Tenant | None, form: Mapping[str, str], acr: str
) -> dict[str, Any]:
    value = form.get("code") or ""
    if not value:
        raise missing_parameter("code")
    presented = entra.store.present_code(value)
    if presented is None:
        raise EntraError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    code, already_redeemed = presented
    if code.client_id != app.client_id:
        raise EntraError("invalid_grant", 70000, "The provided value for the 'code' parameter is not valid.")
    if tenant is not None and tenant.id != code.tenant_id:
        raise EntraError(
            "invalid_grant",
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        )
    if already_redeemed:
        raise EntraError(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing "
            "refresh token.",
        )
    if entra.now() >= code.expires_at:
        raise EntraError(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new "
            "interactive authorization request for this user and resource.",
        )
    redirect_uri = form.get("redirect_uri") or ""
    if not redirect_uri:
        raise missing_parameter("redirect_uri")
    if redirect_uri != code.redirect_uri:
        raise EntraError(
            "invalid_grant",
            500112,
            f"The reply address '{redirect_uri}' does not match the reply address '{code.redirect_uri}' provided "
            "when requesting Authorization code.",
        )
    if code.code_challenge is not None:
        verifier = form.get("code_verifier") or ""
        derived = s256(verifier) if code.code_challenge_method == "S256" else verifier
        if not verifier or not hmac.compare_digest(derived.encode(), code.code_challenge.encode()):
            raise EntraError(
                "invalid_grant",
                50148,
                "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
            )
    user = _user(entra, code.user_id)
    scopes = _scopes(entra, app, form.get("scope"), code.scopes)
    return _user_tokens(entra, app, user, scopes, nonce=code.nonce, auth_time=code.auth_time, acr=acr,
                        client_info_requested=form.get("client_info") == "1")  # fmt: skip


def _refresh_token(
    entra: Entra, app: AppRegistration, tenant: Tenant | None, form: Mapping[str, str], acr: str
) -> dict[str, Any]:
    value = form.get("refresh_token") or ""
    if not value:
        raise missing_parameter("refresh_token")
    grant = entra.store.refresh(value)
    if grant is None:
        raise EntraError("invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if grant.client_id != app.client_id or (tenant is not None and tenant.id != grant.tenant_id):
        raise EntraError("invalid_grant", 70000, "Provided grant is invalid or malformed.")
    if entra.now() >= grant.expires_at:
        raise EntraError(
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity. Send a new interactive authorization request for "
            "this user and resource.",
        )
    user = _user(entra, grant.user_id)
    scopes = _scopes(entra, app, form.get("scope"), grant.scopes)
    return _user_tokens(entra, app, user, scopes, nonce=None, auth_time=grant.auth_time, acr=acr,
                        client_info_requested=form.get("client_info") == "1", refreshing=True)  # fmt: skip


def _client_credentials(
    entra: Entra, app: AppRegistration, tenant: Tenant | None, form: Mapping[str, str], acr: str
) -> dict[str, Any]:
    if tenant is None:
        raise EntraError(
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any provided credentials.",
        )
    scope = (form.get("scope") or "").split()
    if not scope:
        raise missing_parameter("scope")
    if len(scope) != 1 or not scope[0].endswith("/.default"):
        raise EntraError(
            "invalid_scope",
            1002012,
            f"The provided value for scope {' '.join(scope)} is not valid. Client credential flows must have a scope "
            "value with /.default suffixed to the resource identifier (application ID URI).",
        )
    name = scope[0][: -len("/.default")]
    resource = entra.config.resource(name)
    if resource is None:
        raise EntraError(
            "invalid_resource",
            500011,
            f"The resource principal named {name} was not found in the tenant named {tenant.name}. This can happen "
            "if the application has not been installed by the administrator of the tenant or consented to by any "
            "user in the tenant. You might have sent your authentication request to the wrong tenant.",
        )
    lifetime = int(entra.config.access_token_lifetime)
    return {
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": app_access_token(
            entra.config, entra.issuer, app, tenant.id, resource, acr=acr, now=entra.now()
        ),
    }


def _user(entra: Entra, user_id: str) -> User:
    user = entra.config.directory.user(user_id)
    if user is None:
        raise EntraError("invalid_grant", 70000, "Provided grant is invalid or malformed.")
    return user


def _scopes(entra: Entra, app: AppRegistration, requested: str | None, granted: tuple[str, ...]) -> Scopes:
    return parse_scopes(entra.config, app, tuple(requested.split()) if requested else granted)


def _user_tokens(
    entra: Entra,
    app: AppRegistration,
    user: User,
    scopes: Scopes,
    *,
    nonce: str | None,
    auth_time: int,
    acr: str,
    client_info_requested: bool,
    refreshing: bool = False,
) -> dict[str, Any]:
    now = entra.now()
    lifetime = int(entra.config.access_token_lifetime)
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": scopes.granted_text,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": user_access_token(entra.config, entra.issuer, app, user, scopes, acr=acr, now=now),
    }
    if refreshing or "offline_access" in scopes.oidc:  # refreshing rotates the refresh token
        body["refresh_token"] = entra.store.add_refresh(
            RefreshGrant(
                client_id=app.client_id,
                tenant_id=user.tenant_id,
                user_id=user.object_id,
                scopes=scopes.requested,
                auth_time=auth_time,
                expires_at=now + entra.config.refresh_token_lifetime,
            )
        )
    if "openid" in scopes.oidc:
        body["id_token"] = id_token(entra.config, entra.issuer, app, user, nonce=nonce, now=now)
    if client_info_requested:
        body["client_info"] = client_info(user)
    return body
