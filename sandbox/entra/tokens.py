"""Token contents: scopes → resource, and the claims of id_tokens and access tokens (v1.0 and v2.0 shapes)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sandbox.entra.config import GRAPH, OIDC_SCOPES, AppRegistration, EntraConfig, Resource
from sandbox.entra.errors import EntraError
from sandbox.entra.signing import TokenIssuer, b64url
from sandbox.seed import User


@dataclass(frozen=True)
class Scopes:
    """Requested delegated scopes split into OpenID Connect scopes and one resource's permissions."""

    oidc: tuple[str, ...]
    resource: Resource
    permissions: tuple[str, ...]
    requested: tuple[str, ...]

    @property
    def granted_text(self) -> str:
        """The ``scope`` of the token response: what was granted, offline_access aside."""
        return " ".join(s for s in self.requested if s != "offline_access")


def parse_scopes(config: EntraConfig, app: AppRegistration, scopes: tuple[str, ...]) -> Scopes:
    oidc: list[str] = []
    by_resource: dict[str, tuple[Resource, list[str]]] = {}
    for scope in scopes:
        if scope.lower() in OIDC_SCOPES:
            oidc.append(scope.lower())
            continue
        prefix, _, name = scope.rpartition("/")
        resource = config.resource(prefix) if prefix else GRAPH  # bare names are Graph permissions
        if resource is None:
            raise EntraError(
                "invalid_resource",
                500011,
                f"The resource principal named {prefix} was not found in the tenant. This can happen if the "
                "application has not been installed by the administrator of the tenant or consented to by any "
                "user in the tenant. You might have sent your authentication request to the wrong tenant.",
            )
        by_resource.setdefault(resource.identifier, (resource, []))[1].append(name)
    if len(by_resource) > 1:
        raise EntraError(
            "invalid_scope",
            28000,
            "Provided value for the input parameter scope is not valid because it contains more than one "
            f"resource. Scope {' '.join(scopes)} is not valid.",
        )
    if not by_resource:  # OpenID Connect scopes only: Entra issues a Graph token for the userinfo endpoint
        return Scopes(tuple(oidc), GRAPH, (), scopes)
    resource, names = next(iter(by_resource.values()))
    permissions: list[str] = []
    for name in names:
        if name == ".default":
            permissions.extend(app.delegated_permissions.get(resource.identifier, ()))
        else:
            permissions.append(name)
    return Scopes(tuple(oidc), resource, tuple(dict.fromkeys(permissions)), scopes)


def pairwise_subject(object_id: str, audience: str) -> str:
    """``sub`` is unique per user *and* application in Entra ID."""
    return b64url(hashlib.sha256(f"{object_id}|{audience}".encode()).digest())[:43]


def client_info(user: User) -> str:
    payload = json.dumps({"uid": user.object_id, "utid": user.tenant_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def v2_issuer(config: EntraConfig, tenant_id: str) -> str:
    return f"{config.issuer_host}/{tenant_id}/v2.0"


def v1_issuer(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


def _times(now: float, lifetime: float) -> dict[str, int]:
    issued = int(now)
    return {"iat": issued, "nbf": issued, "exp": issued + int(lifetime)}


def id_token(
    config: EntraConfig, issuer: TokenIssuer, app: AppRegistration, user: User, *, nonce: str | None, now: float
) -> str:
    claims: dict[str, Any] = {
        "aud": app.client_id,
        "iss": v2_issuer(config, user.tenant_id),
        **_times(now, config.id_token_lifetime),
        "name": user.name,
        "oid": user.object_id,
        "preferred_username": user.upn,
        "sub": pairwise_subject(user.object_id, app.client_id),
        "tid": user.tenant_id,
        "uti": secrets.token_urlsafe(16),
        "ver": "2.0",
    }
    if nonce is not None:
        claims["nonce"] = nonce
    roles = [role for role in user.app_roles if role in app.app_roles]
    if roles:
        claims["roles"] = roles
    if user.wids:
        claims["wids"] = list(user.wids)
    return issuer.sign(claims)


def _client_claims(
    resource: Resource, app: AppRegistration, tenant_id: str, acr: str, config: EntraConfig
) -> dict[str, Any]:
    if resource.access_token_version == 1:
        return {
            "aud": resource.identifier,
            "iss": v1_issuer(tenant_id),
            "appid": app.client_id,
            "appidacr": acr,
            "app_displayname": app.display_name,
            "idp": v1_issuer(tenant_id),
            "ver": "1.0",
        }
    return {
        "aud": resource.app_id,
        "iss": v2_issuer(config, tenant_id),
        "azp": app.client_id,
        "azpacr": acr,
        "ver": "2.0",
    }


def user_access_token(
    config: EntraConfig,
    issuer: TokenIssuer,
    app: AppRegistration,
    user: User,
    scopes: Scopes,
    *,
    acr: str,
    now: float,
) -> str:
    scp = " ".join((*scopes.permissions, *(s for s in scopes.oidc if s != "offline_access")))
    claims: dict[str, Any] = {
        **_client_claims(scopes.resource, app, user.tenant_id, acr, config),
        **_times(now, config.access_token_lifetime),
        "idtyp": "user",
        "name": user.name,
        "oid": user.object_id,
        "scp": scp,
        "sub": pairwise_subject(user.object_id, scopes.resource.app_id),
        "tid": user.tenant_id,
        "uti": secrets.token_urlsafe(16),
    }
    if scopes.resource.access_token_version == 1:
        claims.update({"upn": user.upn, "unique_name": user.upn})
    else:
        claims["preferred_username"] = user.upn
    if user.wids:
        claims["wids"] = list(user.wids)
    return issuer.sign(claims)


def app_access_token(
    config: EntraConfig,
    issuer: TokenIssuer,
    app: AppRegistration,
    tenant_id: str,
    resource: Resource,
    *,
    acr: str,
    now: float,
) -> str:
    principal = app.service_principal_id(tenant_id)
    claims: dict[str, Any] = {
        **_client_claims(resource, app, tenant_id, acr, config),
        **_times(now, config.access_token_lifetime),
        "idtyp": "app",
        "oid": principal,
        "sub": principal,
        "tid": tenant_id,
        "uti": secrets.token_urlsafe(16),
    }
    roles = app.application_permissions.get(resource.identifier, ())
    if roles:
        claims["roles"] = list(roles)
    return issuer.sign(claims)
