"""OpenID Connect discovery, signing keys and msal's instance discovery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from sandbox.entra.context import Entra, entra_of
from sandbox.entra.errors import CATALOGUE, EntraError, json_error

Endpoint = Callable[[Request], Awaitable[Response]]


def api_only(endpoint: Endpoint) -> Endpoint:
    """API endpoints answer on the issuer origin only (https), never on the plain-http browser port."""

    @wraps(endpoint)
    async def guarded(request: Request) -> Response:
        entra = entra_of(request)
        if request.url.scheme != urlsplit(entra.config.issuer_host).scheme:
            return JSONResponse({"error": "not_found", "error_description": "Use the https issuer host."}, 404)
        return await endpoint(request)

    return guarded


def openid_configuration_document(entra: Entra, segment: str) -> dict[str, Any]:
    tenant = entra.check_tenant_segment(segment)
    path = tenant.id if tenant is not None else segment.lower()
    api = f"{entra.config.issuer_host}/{path}"
    issuer_tenant = tenant.id if tenant is not None else "{tenantid}"  # a placeholder, as Entra publishes it
    return {
        "token_endpoint": f"{api}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{api}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{entra.config.issuer_host}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": f"{entra.config.browser_host}/{path}/oauth2/v2.0/authorize",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{entra.config.browser_host}/{path}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
            "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name",
            "tid", "ver", "at_hash", "c_hash", "email",
        ],
        "code_challenge_methods_supported": ["plain", "S256"],
        "tenant_region_scope": "NA" if tenant is not None else None,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }  # fmt: skip


@api_only
async def openid_configuration(request: Request) -> Response:
    entra = entra_of(request)
    try:
        return JSONResponse(openid_configuration_document(entra, request.path_params["tenant"]))
    except EntraError as error:
        return json_error(error, request, entra.config.issuer_host)


@api_only
async def keys(request: Request) -> Response:
    entra = entra_of(request)
    try:
        entra.check_tenant_segment(request.path_params.get("tenant", "common"))
    except EntraError as error:
        return json_error(error, request, entra.config.issuer_host)
    return JSONResponse(entra.issuer.jwks())


@api_only
async def instance_discovery(request: Request) -> Response:
    """``/common/discovery/instance``: only used by msal when given ``instance_discovery=<this URL>``."""
    entra = entra_of(request)
    endpoint = urlsplit(request.query_params.get("authorization_endpoint", ""))
    ours = {urlsplit(entra.config.issuer_host).netloc, urlsplit(entra.config.browser_host).netloc}
    if endpoint.netloc not in ours:
        error = EntraError("invalid_instance", 50049, "Unknown or invalid instance.")
        return json_error(error, request, entra.config.issuer_host)
    tenant = (endpoint.path.strip("/").split("/") or ["common"])[0] or "common"
    host = urlsplit(entra.config.issuer_host).hostname or ""
    return JSONResponse(
        {
            "tenant_discovery_endpoint": f"{entra.config.issuer_host}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }
    )


async def error_page(request: Request) -> Response:
    """``error_uri`` target: ``/error?code=70008``."""
    code = request.query_params.get("code", "")
    text = CATALOGUE.get(int(code), "Unknown error code.") if code.isdigit() else "Unknown error code."
    templates = request.app.state.templates
    return HTMLResponse(templates.get_template("error_code.html").render(code=code, text=text))
