"""``/oauth2/authorize`` and ``/oauth2/token``: SMART App Launch 2 EHR and standalone launch, Backend Services.

Authorize (GET or form POST, as Epic allows for EHR launch): an unknown client or a redirect URI
that is not registered exactly gets an HTML error page, never a redirect. Every later problem is
redirected back as ``error`` + ``error_description`` (+ ``state``). PKCE is required, S256 only.
With ``launch`` the opaque launch issued by the Hyperspace/MyChart stand-ins is spent and its
context bound to the code; without it the user picks who signs in on an HTML page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from sandbox.ehr import scopes as scope_rules
from sandbox.ehr.client_auth import ClientAuthError, authenticate
from sandbox.ehr.config import GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, RegisteredClient
from sandbox.ehr.responses import NO_STORE, oauth_error
from sandbox.ehr.state import AccessToken, AuthorizationCode, LaunchContext, PendingSignIn, new_token

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
SIGN_IN_SECONDS = 600
ID_TOKEN_SECONDS = 300
STYLE_URL_PATH = "/api/epic/2016/EDI/HTTP/style/100684-40E4D3A2A3D8C9.css"


def _ehr(request: Request) -> EhrSandbox:
    ehr: EhrSandbox = request.app.state.ehr
    return ehr


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def _redirect(redirect_uri: str, params: dict[str, str]) -> RedirectResponse:
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(redirect_uri + separator + urlencode(params), status_code=302, headers=NO_STORE)


def _error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> RedirectResponse:
    params = {"error": error, "error_description": description}
    if state:
        params["state"] = state
    return _redirect(redirect_uri, params)


def _grantable(client: RegisteredClient, requested: list[str], contexts: tuple[str, ...]) -> list[str]:
    granted = []
    for scope in requested:
        if not scope_rules.is_known(scope):
            continue
        clinical = scope_rules.parse_clinical(scope)
        if clinical and clinical.context not in contexts:
            continue
        if client.scopes is not None and scope not in client.scopes:
            continue
        granted.append(scope)
    return granted


async def authorize(request: Request) -> Response:
    ehr = _ehr(request)
    if request.method == "POST":
        form = await request.form()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        params = dict(request.query_params)
    client = ehr.state.client(params.get("client_id"))
    if client is None:
        return ehr.html_error(400, "Unknown application", "The client_id is missing or not registered with this EHR.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        return ehr.html_error(
            400, "Invalid redirect URI", "The redirect_uri is missing or is not registered for this application."
        )
    state = params.get("state") or None

    def fail(error: str, description: str) -> RedirectResponse:
        return _error_redirect(redirect_uri, error, description, state)

    if GRANT_AUTHORIZATION_CODE not in client.grant_types:
        return fail("unauthorized_client", "this client may not use the authorization code grant")
    if params.get("response_type") != "code":
        return fail("unsupported_response_type", "response_type must be code")
    if not state:
        return fail("invalid_request", "state is required")
    aud = params.get("aud") or params.get("resource")
    if not aud:
        return fail("invalid_request", "aud is required (the FHIR base URL)")
    if normalise_url(aud) not in {normalise_url(base) for base in ehr.config.fhir_bases}:
        return fail("invalid_request", "aud does not match this FHIR server's base URL")
    challenge = params.get("code_challenge", "")
    method = params.get("code_challenge_method", "")
    if not challenge:
        return fail("invalid_request", "PKCE code_challenge is required")
    if method != "S256":
        return fail("invalid_request", "code_challenge_method must be S256")
    if not _CHALLENGE.match(challenge):
        return fail("invalid_request", "code_challenge must be a base64url SHA-256 digest")
    requested = scope_rules.split(params.get("scope"))
    launch_value = params.get("launch")
    if launch_value:
        if "launch" not in requested:
            return fail("invalid_scope", "the launch scope is required for an EHR launch")
        launch, why = ehr.state.consume_launch(launch_value)
        if launch is None:
            return fail("invalid_request", why)
        if launch.client_id != client.client_id:
            return fail("invalid_request", "the launch was issued for another application")
        if launch.fhir_base and normalise_url(aud) != normalise_url(launch.fhir_base):
            return fail("invalid_request", "aud is not the FHIR base URL this launch was issued with (its iss)")
        granted = _grantable(client, requested, ("patient", "user"))
        context: LaunchContext | None = launch.context
    else:
        granted = _grantable(client, [s for s in requested if s != "launch"], ("patient", "user"))
        context = None
    if not any(scope_rules.parse_clinical(s) or s == "openid" for s in granted):
        return fail("invalid_scope", "no requested scope can be granted")
    request_params = {
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "nonce": params.get("nonce", ""),
        "code_challenge": challenge,
        "scope": " ".join(granted),
    }
    if context is None:
        pending = PendingSignIn(new_token(), request_params, time.time() + SIGN_IN_SECONDS)
        with ehr.state.lock:
            ehr.state.pending[pending.value] = pending
        return ehr.render("signin.html", status=200, client=client, pending=pending.value,
                          practitioners=ehr.clinic.practitioners, patients=ehr.clinic.patients,
                          pick_patient="launch/patient" in granted,
                          signin_action=ehr.config.spec.authorize_path + "/signin",
                          headers=NO_STORE)  # fmt: skip
    return _issue_code(ehr, request_params, context)


def _issue_code(ehr: EhrSandbox, params: dict[str, str], context: LaunchContext) -> RedirectResponse:
    code = AuthorizationCode(
        value=new_token(),
        client_id=params["client_id"],
        redirect_uri=params["redirect_uri"],
        code_challenge=params["code_challenge"],
        scopes=params["scope"].split(),
        context=context,
        nonce=params.get("nonce") or None,
        state=params["state"],
        expires_at=time.time() + ehr.config.code_seconds,
    )
    with ehr.state.lock:
        ehr.state.codes[code.value] = code
    return _redirect(params["redirect_uri"], {"code": code.value, "state": params["state"]})


async def sign_in(request: Request) -> Response:
    """The standalone sign-in page's form: who signs in (or cancel)."""
    ehr = _ehr(request)
    form = await request.form()
    pending_id = str(form.get("request") or "")
    with ehr.state.lock:
        pending = ehr.state.pending.pop(pending_id, None)
    if pending is None or pending.expires_at < time.time():
        return ehr.html_error(400, "Sign-in expired", "This sign-in request is unknown, used or expired. Start again.")
    params = pending.params
    if form.get("action") == "cancel":
        return _error_redirect(params["redirect_uri"], "access_denied", "the user cancelled sign-in", params["state"])
    user = ehr.clinic.user(str(form.get("user") or ""))
    if user is None:
        return ehr.html_error(400, "Unknown user", "Choose one of the listed EHR users.")
    patient_id = user.id if user.resource_type == "Patient" else None
    if patient_id is None and "launch/patient" in params["scope"].split() and form.get("patient"):
        picked = ehr.clinic.patient(str(form.get("patient")))
        if picked is None:
            return ehr.html_error(400, "Unknown patient", "Choose one of the listed patients.")
        patient_id = picked.id
    context = LaunchContext(user_id=user.id, user_type=user.resource_type, patient_id=patient_id)
    return _issue_code(ehr, params, context)


def _pkce_ok(verifier: str, challenge: str) -> bool:
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(digest, challenge)


def _id_token(ehr: EhrSandbox, client_id: str, context: LaunchContext, code: AuthorizationCode) -> str:
    user = ehr.clinic.user(context.user_id)
    spec = ehr.config.spec
    now = int(time.time())
    # Epic's sub is the user's FHIR id; Oracle's is an opaque id "locally unique within the issuer".
    subject = (
        context.user_id
        if spec.epic_extras
        else str(uuid.uuid5(uuid.NAMESPACE_URL, ehr.config.issuer + "/" + context.user_id))
    )
    claims: dict[str, Any] = {
        "iss": ehr.config.issuer,
        "sub": subject,
        "aud": client_id,
        "iat": now,
        "exp": now + ID_TOKEN_SECONDS,
        "auth_time": now,
    }
    if code.nonce:
        claims["nonce"] = code.nonce
    if "fhirUser" in code.scopes and user is not None:
        claims["fhirUser"] = user.reference if spec.relative_fhir_user else ehr.clinic.fhir_user_url(user)
    if "profile" in code.scopes and user is not None:
        claims["preferred_username"] = user.username
    return ehr.key.sign(claims, with_kid=spec.id_token_kid)


def _context_fields(ehr: EhrSandbox, context: LaunchContext, ehr_launch: bool) -> dict[str, Any]:
    spec = ehr.config.spec
    fields: dict[str, Any] = {}
    for key, value in context.extra.items():  # per-integration extras first; standard keys win
        fields[key] = value
    if context.patient_id:
        fields["patient"] = context.patient_id
        if spec.epic_extras:
            fields["__epic.dstu2.patient"] = "T" + context.patient_id.replace("-", "")
    if context.encounter_id:
        fields["encounter"] = context.encounter_id
    if context.location_id:
        fields["location"] = context.location_id
    if context.appointment_id:
        if spec.appointment_in_fhir_context:  # SMART 2.1: other resources travel as fhirContext objects
            fields["fhirContext"] = [{"reference": f"Appointment/{context.appointment_id}"}]
        else:
            fields["appointment"] = context.appointment_id
    if context.login_department_id:
        fields["loginDepartment"] = context.login_department_id
    banner = not ehr_launch
    fields["need_patient_banner"] = ("true" if banner else "false") if spec.banner_as_string else banner
    if ehr_launch:
        style = STYLE_URL_PATH if spec.epic_extras else "/styles/smart-v1.json"
        fields["smart_style_url"] = ehr.config.origin + style
    if spec.oracle_extras:  # Millennium's token response names the tenant and the signed-in user
        user = ehr.clinic.user(context.user_id)
        fields["tenant"] = spec.fhir_path.rsplit("/", 1)[-1]
        fields["username"] = user.username if user else context.user_id
        fields["user"] = context.user_id
    return fields


async def token(request: Request) -> Response:
    ehr = _ehr(request)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return oauth_error("invalid_request", "the token request must be application/x-www-form-urlencoded")
    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    grant_type = form.get("grant_type")
    if grant_type not in (GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS):
        return oauth_error("unsupported_grant_type", "grant_type must be authorization_code or client_credentials")
    try:
        client, method = await authenticate(
            form, request.headers.get("authorization"), ehr.state, ehr.config.token_url, ehr.jwks_cache
        )
    except ClientAuthError as exc:
        challenge = {"WWW-Authenticate": 'Basic realm="oauth2"'} if exc.basic else {}
        return oauth_error("invalid_client", exc.description, status=401, headers=challenge)
    if grant_type not in client.grant_types:
        return oauth_error("unauthorized_client", f"this client may not use {grant_type}")
    if grant_type == GRANT_CLIENT_CREDENTIALS:
        return _backend_token(ehr, client, method, form)
    return _code_token(ehr, client, form)


def _token_response(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=NO_STORE)


def _backend_token(ehr: EhrSandbox, client: RegisteredClient, method: str, form: dict[str, str]) -> Response:
    if method != "private_key_jwt":
        return oauth_error("invalid_client", "Backend Services require a private_key_jwt client assertion", 401)
    requested = scope_rules.split(form.get("scope"))
    if not requested:
        return oauth_error("invalid_scope", "scope is required (system scopes)")
    granted = _grantable(client, requested, ("system",))
    granted = [s for s in granted if scope_rules.parse_clinical(s)]
    if not granted:
        return oauth_error("invalid_scope", "no requested system scope can be granted")
    access = AccessToken(
        value=new_token(),
        client_id=client.client_id,
        scopes=granted,
        expires_at=time.time() + ehr.config.backend_token_seconds,
        grant_type=GRANT_CLIENT_CREDENTIALS,
    )
    with ehr.state.lock:
        ehr.state.tokens[access.value] = access
    return _token_response(
        {
            "access_token": access.value,
            "token_type": "Bearer",
            "expires_in": ehr.config.backend_token_seconds,
            "scope": " ".join(granted),
        }
    )


def _code_token(ehr: EhrSandbox, client: RegisteredClient, form: dict[str, str]) -> Response:
    for required in ("code", "redirect_uri", "code_verifier"):
        if not form.get(required):
            return oauth_error("invalid_request", f"{required} is required")
    code, why = ehr.state.consume_code(form["code"])
    if code is None:
        return oauth_error("invalid_grant", why)
    if code.client_id != client.client_id:
        return oauth_error("invalid_grant", "the code was issued to another client")
    if form["redirect_uri"] != code.redirect_uri:
        return oauth_error("invalid_grant", "redirect_uri does not match the authorization request")
    if not _VERIFIER.match(form["code_verifier"]) or not _pkce_ok(form["code_verifier"], code.code_challenge):
        return oauth_error("invalid_grant", "PKCE verification failed")
    context = code.context
    assert context is not None
    access = AccessToken(
        value=new_token(),
        client_id=client.client_id,
        scopes=code.scopes,
        expires_at=time.time() + ehr.config.access_token_seconds,
        grant_type=GRANT_AUTHORIZATION_CODE,
        context=context,
    )
    with ehr.state.lock:
        ehr.state.tokens[access.value] = access
        code.issued_tokens.append(access.value)
    body: dict[str, Any] = {
        "access_token": access.value,
        "token_type": "Bearer",
        "expires_in": ehr.config.spec.expires_in or ehr.config.access_token_seconds,
        "scope": " ".join(code.scopes),
    }
    if ehr.config.spec.epic_extras:  # Epic echoes the state in the token response
        body["state"] = code.state
    if "openid" in code.scopes:
        body["id_token"] = _id_token(ehr, client.client_id, context, code)
    return _token_response({**_context_fields(ehr, context, context.ehr_launch), **body})
