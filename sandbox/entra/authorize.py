"""``/{tenant}/oauth2/v2.0/authorize``, the sign-in page behind it, and sign-out.

Validation follows the Microsoft identity platform: while the client and its redirect URI are not
established, errors are shown on an error page (never redirected to an unregistered URI); after that,
errors go back to the redirect URI as ``error``, ``error_description`` and ``state`` in the requested
response mode. Redirect URIs match exactly, except that the port of an ``http://localhost`` or
``http://127.0.0.1`` URI is ignored, as Entra documents ("Redirect URI restrictions", localhost exceptions,
after RFC 8252 §7.3/§8.3); the host, path and query must still match.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sandbox.entra.config import AppRegistration
from sandbox.entra.context import Entra, entra_of
from sandbox.entra.errors import EntraError, error_fields, missing_parameter
from sandbox.entra.store import AuthorizationCode, AuthorizeRequest
from sandbox.entra.tokens import client_info, parse_scopes
from sandbox.seed import User

SESSION_COOKIE = "sandbox_entra_session"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})  # Entra does not support [::1] redirect URIs
RESPONSE_MODES = frozenset({"query", "fragment", "form_post"})
PROMPTS = frozenset({"login", "none", "consent", "select_account"})
S256_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def redirect_uri_registered(app: AppRegistration, given: str) -> bool:
    if given in app.redirect_uris:
        return True
    parts = urlsplit(given)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        return False
    for registered in app.redirect_uris:
        other = urlsplit(registered)
        if (other.scheme, other.hostname, other.path, other.query) == (
            parts.scheme,
            parts.hostname,
            parts.path,
            parts.query,
        ):
            return True
    return False


async def authorize(request: Request) -> Response:
    entra = entra_of(request)
    params = dict(request.query_params)
    if request.method == "POST":
        params.update({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
    segment = request.path_params["tenant"]
    try:
        tenant = entra.check_tenant_segment(segment)
        client_id = params.get("client_id") or ""
        if not client_id:
            raise missing_parameter("client_id")
        app = entra.app_for(client_id, segment, tenant)
        redirect_uri = params.get("redirect_uri") or ""
        if not redirect_uri:
            raise missing_parameter("redirect_uri")
        if not redirect_uri_registered(app, redirect_uri):
            raise EntraError(
                "invalid_request",
                50011,
                f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs "
                f"configured for the application '{app.client_id}'. Make sure the redirect URI sent in the request "
                "matches one added to your application in the Azure portal.",
            )
    except EntraError as error:
        return error_page(request, error)

    mode = params.get("response_mode") or "query"
    state = params.get("state")
    try:
        if mode not in RESPONSE_MODES:
            mode = "query"
            raise EntraError(
                "invalid_request", 9002313, "Invalid request. The response_mode parameter is not supported."
            )
        pending = _validated(entra, app, segment, redirect_uri, mode, params)
    except EntraError as error:
        return deliver(request, redirect_uri, mode, _error_params(request, entra, error), state)

    session_user = _session_user(request, entra)
    if session_user is not None and not _belongs(entra, pending, session_user):
        session_user = None  # a session in another organization does not sign in here silently
    if pending.prompt == "none" or (pending.prompt is None and session_user is not None):
        if session_user is not None and (pending.login_hint or session_user.upn).lower() == session_user.upn.lower():
            return _complete(request, entra, app, pending, session_user)
        if pending.prompt == "none":
            silent = EntraError("login_required", 50058, "A silent sign-in request was sent but no user is signed in.")
            return deliver(request, redirect_uri, mode, _error_params(request, entra, silent), state)
    return _sign_in_page(request, entra, app, pending, entra.store.add_pending(pending))


def _validated(
    entra: Entra, app: AppRegistration, segment: str, redirect_uri: str, mode: str, params: dict[str, str]
) -> AuthorizeRequest:
    response_type = params.get("response_type") or ""
    if not response_type:
        raise missing_parameter("response_type")
    if response_type != "code":
        raise EntraError(
            "unsupported_response_type",
            700051,
            f"response_type '{response_type}' is not enabled for the application.",
        )
    scope = params.get("scope") or ""
    if not scope.strip():
        raise missing_parameter("scope")
    scopes = tuple(scope.split())
    parse_scopes(entra.config, app, scopes)
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    if challenge is None:
        if method is not None:
            raise missing_parameter("code_challenge")
        if app.require_pkce_s256:
            raise EntraError(
                "invalid_request", 9002325, "Proof Key for Code Exchange is required for this application."
            )
    else:
        method = method or "plain"  # RFC 7636 §4.3
        if method not in ("plain", "S256"):
            raise EntraError("invalid_request", 9002313, f"Invalid code_challenge_method '{method}'.")
        if method != "S256" and app.require_pkce_s256:
            raise EntraError(
                "invalid_request",
                9002325,
                "Proof Key for Code Exchange with code_challenge_method 'S256' is required for this application.",
            )
        if method == "S256" and not S256_CHALLENGE.match(challenge):
            raise EntraError("invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
    prompt = params.get("prompt") or None
    if prompt is not None and prompt not in PROMPTS:
        raise EntraError("invalid_request", 9002313, f"Invalid request. The prompt value '{prompt}' is not valid.")
    return AuthorizeRequest(
        tenant_segment=segment,
        client_id=app.client_id,
        redirect_uri=redirect_uri,
        response_mode=mode,
        scopes=scopes,
        state=params.get("state"),
        nonce=params.get("nonce"),
        code_challenge=challenge,
        code_challenge_method=method if challenge else None,
        client_info=params.get("client_info") == "1",
        login_hint=params.get("login_hint") or None,
        prompt=prompt,
        expires_at=entra.now() + entra.config.sign_in_page_lifetime,
    )


async def sign_in(request: Request) -> Response:
    """``POST /{tenant}/login``: the account chosen on the sign-in page (single-use page context)."""
    entra = entra_of(request)
    form = await request.form()
    context, chosen = str(form.get("ctx") or ""), str(form.get("user") or "")
    pending = entra.store.take_pending(context, entra.now()) if context else None
    if pending is None:
        return error_page(
            request,
            EntraError(
                "invalid_request",
                9002313,
                "Invalid request. This sign-in page has expired or was already used; start again from the app.",
            ),
        )
    user = entra.config.directory.user(chosen)
    if user is None:
        return error_page(request, EntraError("invalid_request", 9002313, "Invalid request. Unknown account."))
    app = entra.config.app(pending.client_id)
    if app is None:  # the registration vanished after the page was shown
        return error_page(request, EntraError("unauthorized_client", 700016, "Application was not found."))
    return _complete(request, entra, app, pending, user)


def _complete(request: Request, entra: Entra, app: AppRegistration, pending: AuthorizeRequest, user: User) -> Response:
    """Issue the code for ``user``, or the error Entra gives when that account may not use the app here."""
    tenant = entra.tenant(pending.tenant_segment)
    if tenant is not None and user.tenant_id != tenant.id:
        return error_page(
            request,
            EntraError(
                "invalid_request",
                50020,
                f"User account '{user.upn}' from identity provider "
                f"'https://sts.windows.net/{user.tenant_id}/' does not exist in tenant '{tenant.name}' and cannot "
                f"access the application '{app.client_id}'({app.display_name}) in that tenant. The account needs "
                "to be added as an external user in the tenant first.",
            ),
        )
    if user.tenant_id not in app.consented_tenants:
        error = EntraError(
            "consent_required",
            65001,
            f"The user or administrator has not consented to use the application with ID '{app.client_id}' named "
            f"'{app.display_name}'. Send an interactive authorization request for this user and resource.",
        )
        return deliver(request, pending.redirect_uri, pending.response_mode, _error_params(request, entra, error),
                       pending.state)  # fmt: skip
    now = entra.now()
    code = entra.store.add_code(
        AuthorizationCode(
            client_id=app.client_id,
            redirect_uri=pending.redirect_uri,
            tenant_id=user.tenant_id,
            user_id=user.object_id,
            scopes=pending.scopes,
            nonce=pending.nonce,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            auth_time=int(now),
            expires_at=now + entra.config.code_lifetime,
        )
    )
    fields = {"code": code}
    if pending.client_info:
        fields["client_info"] = client_info(user)
    response = deliver(request, pending.redirect_uri, pending.response_mode, fields, pending.state)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        SESSION_COOKIE,
        entra.store.add_session(user.object_id),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def deliver(request: Request, redirect_uri: str, mode: str, fields: dict[str, str], state: str | None) -> Response:
    """Send the authorization response to the client in its response mode."""
    fields = dict(fields)
    if state is not None:
        fields["state"] = state
    if "code" in fields:
        fields["session_state"] = str(uuid.uuid4())
    if mode == "form_post":
        page = request.app.state.templates.get_template("form_post.html").render(action=redirect_uri, fields=fields)
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})
    separator = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
    return RedirectResponse(redirect_uri + separator + urlencode(fields), status_code=302)


def _error_params(request: Request, entra: Entra, error: EntraError) -> dict[str, str]:
    fields = error_fields(error, request, entra.config.issuer_host)
    return {
        "error": fields["error"],
        "error_description": fields["error_description"],
        "error_uri": fields["error_uri"],
    }


def error_page(request: Request, error: EntraError) -> HTMLResponse:
    entra = entra_of(request)
    fields = error_fields(error, request, entra.config.issuer_host)
    page = request.app.state.templates.get_template("error.html").render(
        error=error, description=fields["error_description"], fields=fields
    )
    return HTMLResponse(page, status_code=400)


def _belongs(entra: Entra, pending: AuthorizeRequest, user: User) -> bool:
    tenant = entra.tenant(pending.tenant_segment)
    return tenant is None or tenant.id == user.tenant_id


def _session_user(request: Request, entra: Entra) -> User | None:
    key = request.cookies.get(SESSION_COOKIE)
    user_id = entra.store.session_user(key) if key else None
    return entra.config.directory.user(user_id) if user_id else None


def _sign_in_page(
    request: Request, entra: Entra, app: AppRegistration, pending: AuthorizeRequest, context: str
) -> HTMLResponse:
    tenant = entra.tenant(pending.tenant_segment)
    directory = entra.config.directory
    groups = []
    for candidate in directory.tenants:
        users = list(directory.users_of(candidate.id))
        if pending.login_hint:  # the hinted account first
            users.sort(key=lambda u: u.upn.lower() != (pending.login_hint or "").lower())
        allowed = (tenant is None or tenant.id == candidate.id) and candidate.id in app.consented_tenants
        groups.append({"tenant": candidate, "users": users, "allowed": allowed})
    groups.sort(key=lambda g: not g["allowed"])
    page = request.app.state.templates.get_template("signin.html").render(
        app=app,
        tenant=tenant,
        groups=groups,
        context=context,
        action=f"/{pending.tenant_segment}/login",
        login_hint=(pending.login_hint or "").lower(),
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


async def logout(request: Request) -> Response:
    """``/{tenant}/oauth2/v2.0/logout``: end the sandbox session; return only to a registered redirect URI."""
    entra = entra_of(request)
    key = request.cookies.get(SESSION_COOKIE)
    if key:
        entra.store.end_session(key)
    target = request.query_params.get("post_logout_redirect_uri")
    client_id = request.query_params.get("client_id")
    apps = [a for a in entra.config.apps if client_id in (None, a.client_id)]
    if target and any(redirect_uri_registered(a, target) for a in apps):
        response: Response = RedirectResponse(target, status_code=302)
    else:
        response = HTMLResponse(request.app.state.templates.get_template("signed_out.html").render())
    response.delete_cookie(SESSION_COOKIE)
    return response
