"""Microsoft 365 sign-in (Entra ID) through msal's auth-code flow, and the checks msal no longer makes.

One ``ConfidentialClientApplication`` per process, authority ``{ENTRA_AUTHORITY_HOST}/organizations``
(any work account; the allowed tenants are enforced here). ``instance_discovery=False``
makes msal read ``{authority}/v2.0/.well-known/openid-configuration`` directly, which is what
it does for login.microsoftonline.com anyway, so the same code works against Entra and the
sandbox. msal needs https; its requests go through ``MsalHttp``, our ``SafeHttp`` in the shape msal's
``http_client`` expects, so they follow the same outbound rules as every other request
(``SSL_CERT_FILE`` names the CA bundle, as for every httpx client).

    begin(redirect_uri, browser_binding=…)
                               flow dict stored server-side under its ``state`` (single use), with
                               the SHA-256 of a random value the browser holds as a cookie
    complete(form_fields, browser_binding=…)
                               consume state, require the same browser value (login CSRF)
                               → msal redeems the code (PKCE, state, nonce hash)
                               → we validate the id_token: signature (tenant JWKS), iss, aud,
                                 exp, nonce, tid allowed → ``PortalIdentity``

User tokens are not kept: the msal cache of the sign-in app stores nothing.

What Entra publishes (tenant OpenID configurations, signing keys) is fetched by ``EntraDocuments``,
which the change notifications' ``validationTokens`` check shares. App-only Graph tokens are
``app_credentials``'s job.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msal

from shared.http.outbound import SafeHttp
from shared.http.upstream import sanitise_oauth_error
from shared.jose.id_tokens import unverified_claims, validate_id_token
from shared.jose.jwks import JwksCache
from shared.kernel.errors import (
    Forbidden,
    InvalidIdToken,
    StateError,
    Unauthenticated,
    UnsafeUrl,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from shared.kernel.i18n import N_
from shared.kernel.identifiers import random_token
from shared.kernel.settings import Settings
from shared.storage.state import StateRouter

SYSTEM = "Microsoft Entra ID"
STATE_KIND = "entra-signin"
BINDING_KEY = "browserBindingSha256"  # stored next to msal's flow; removed before msal sees the flow
CARRY_KEY = "_carry"  # not an msal flow key; removed before the flow goes back to msal
GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
TEAMS_ADMINISTRATOR = "69091246-20e8-4a56-aa4d-066075b2a7a8"
ADMIN_ROLE_TEMPLATES = frozenset({GLOBAL_ADMINISTRATOR, TEAMS_ADMINISTRATOR})
ADMIN_APP_ROLE = "Connector.Admin"


@dataclass(frozen=True)
class PortalIdentity:
    """Who signed in, from a validated id_token."""

    tenant_id: str
    object_id: str
    upn: str
    name: str
    roles: tuple[str, ...] = ()
    wids: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return bool(ADMIN_ROLE_TEMPLATES.intersection(self.wids)) or ADMIN_APP_ROLE in self.roles


class _NoUserTokens(msal.TokenCache):  # type: ignore[misc]
    """The portal needs only the id_token once; no user tokens are cached in memory."""

    def add(self, event: dict[str, Any], now: float | None = None) -> None:
        return None


def _binding_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def nonce_hash(nonce: str) -> str:
    """What msal sends as ``nonce`` (and Entra echoes in the id_token): SHA-256 hex of the flow's nonce."""
    return hashlib.sha256(nonce.encode("ascii")).hexdigest()


class EntraDocuments:
    """The JSON documents Entra ID publishes (tenant OpenID configurations, signing keys), over ``SafeHttp``.

    No redirects, the policy's timeouts and size limit; anything but a 200 answer with a JSON object is
    ``UpstreamUnavailable``. Sign-in and the change-notification ``validationTokens`` both fetch Entra's keys
    through it.
    """

    def __init__(self, http: SafeHttp) -> None:
        self._http = http

    def get(self, url: str) -> dict[str, Any]:
        try:
            response = self._http.get(url, headers={"Accept": "application/json"})
        except (UpstreamError, UnsafeUrl):
            raise UpstreamUnavailable(N_("Microsoft sign-in is unreachable right now."), system=SYSTEM) from None
        document = response.json()
        if response.status != 200 or not isinstance(document, dict):
            raise UpstreamUnavailable(N_("Microsoft sign-in is unavailable right now."), system=SYSTEM)
        return document


@dataclass(frozen=True)
class _MsalResponse:
    """What msal reads of an answer: status, text, headers, ``raise_for_status``."""

    status_code: int
    text: str
    headers: Mapping[str, str]

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise UpstreamUnavailable(
                N_("Microsoft Entra ID answered HTTP %(status_code)s.", status_code=self.status_code), system=SYSTEM
            )


class MsalHttp:
    """msal's ``http_client`` (``get``/``post``/``close``) over ``SafeHttp``: msal builds no client of its own.

    ``SafeHttp``'s errors (unreachable, refused address, redirect) surface from inside msal, where the
    callers in this package already turn any failure into ``UpstreamUnavailable``.
    """

    def __init__(self, http: SafeHttp) -> None:
        self._http = http

    def get(
        self, url: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None, **_: Any
    ) -> _MsalResponse:
        return self._answer(self._http.request("GET", url, params=params, headers=headers))

    def post(
        self,
        url: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        **_: Any,
    ) -> _MsalResponse:
        if isinstance(data, str | bytes):  # msal sends a dict, "occasionally a string"
            body = data.encode() if isinstance(data, str) else data
            return self._answer(self._http.request("POST", url, params=params, headers=headers, content=body))
        return self._answer(self._http.request("POST", url, params=params, headers=headers, data=data))

    def close(self) -> None:
        """msal may close its client; ours is shared by the process and stays open."""

    @staticmethod
    def _answer(result: Any) -> _MsalResponse:
        return _MsalResponse(result.status, result.body.decode("utf-8", errors="replace"), dict(result.headers))


class EntraIdTokenValidator:
    """Validates Entra v2.0 id_tokens: keys and issuer come from the token's tenant's discovery document."""

    def __init__(
        self,
        authority_host: str,
        client_id: str,
        allowed_tenants: frozenset[str],
        *,
        http: SafeHttp,
    ) -> None:
        self._host = authority_host.rstrip("/")
        self._client_id = client_id
        self._allowed = frozenset(t.lower() for t in allowed_tenants)
        self._documents = EntraDocuments(http)
        self._jwks = JwksCache(self._documents.get)
        self._discovery: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def validate(self, id_token: str, *, nonce: str | None) -> dict[str, Any]:
        """Claims of a valid id_token. Tenant not allowed → ``Forbidden``; anything invalid → ``Unauthenticated``."""
        try:
            tenant = str(unverified_claims(id_token).get("tid") or "").lower()
            if not tenant:
                raise InvalidIdToken("it names no tenant")
            if tenant not in self._allowed:
                raise Forbidden(
                    N_(
                        "Your organization is not enabled for this connector. Ask your administrator to add its "
                        "tenant to the allowed list."
                    ),
                    code="tenant_not_allowed",
                )
            discovery = self._tenant_discovery(tenant)
            issuer = str(discovery.get("issuer", "")).replace("{tenantid}", tenant)
            jwks_uri = str(discovery.get("jwks_uri", ""))
            if not issuer or not jwks_uri:
                raise InvalidIdToken("the tenant's OpenID configuration is incomplete")
            claims = validate_id_token(
                id_token,
                keys_for=lambda kid, alg: self._jwks.keys_for(jwks_uri, kid, alg),
                issuer=issuer,
                audience=self._client_id,
                nonce=nonce,
            )
        except InvalidIdToken as exc:
            raise Unauthenticated(
                N_("Microsoft sign-in could not be verified: %(reason)s. Please sign in again.", reason=exc.reason),
                code="invalid_id_token",
            ) from None
        if str(claims.get("tid", "")).lower() != tenant or not claims.get("oid"):
            raise Unauthenticated(N_("Microsoft sign-in could not be verified. Please sign in again."))
        return claims

    def _tenant_discovery(self, tenant: str) -> dict[str, Any]:
        with self._lock:
            cached = self._discovery.get(tenant)
        if cached is not None:
            return cached
        document = self._documents.get(f"{self._host}/{tenant}/v2.0/.well-known/openid-configuration")
        with self._lock:
            self._discovery[tenant] = document
        return document


def identity_from_claims(claims: Mapping[str, Any]) -> PortalIdentity:
    """The identity of validated claims. The user name comes from ``preferred_username`` or ``upn`` only:
    ``email`` is not verified by Entra (any user may set it to anything), so it must never name an approver."""
    upn = claims.get("preferred_username") or claims.get("upn")
    if not isinstance(upn, str) or not upn:
        raise Unauthenticated(
            N_("Your Microsoft account has no user name this portal can use. Sign in with a work account."),
            code="no_user_name",
        )
    return PortalIdentity(
        tenant_id=str(claims["tid"]).lower(),
        object_id=str(claims["oid"]).lower(),
        upn=str(upn).lower(),
        name=str(claims.get("name") or upn),
        roles=tuple(str(r) for r in claims.get("roles") or () if isinstance(r, str)),
        wids=tuple(str(w).lower() for w in claims.get("wids") or () if isinstance(w, str)),
    )


class EntraSignIn:
    """A Microsoft 365 sign-in: ``begin`` returns the URL to send the browser to, ``complete`` the identity.

    The portal signs users in with it; a provider's first EHR launch uses it once (its own ``state_kind``)
    and passes the pending launch as ``carry``, which is stored server-side with the msal flow and
    returned by ``complete_with_carry``. ``states`` keeps the flow where its kind belongs: the portal's in the
    app's account, the launch's (it carries launch context) in the configuration's geography, under a state
    tagged with it (``StateRouter``).
    """

    def __init__(
        self,
        app: msal.ConfidentialClientApplication,
        validator: EntraIdTokenValidator,
        states: StateRouter,
        *,
        state_kind: str = STATE_KIND,
    ) -> None:
        self._app = app
        self._validator = validator
        self._states = states
        self._kind = state_kind

    def begin(
        self,
        redirect_uri: str,
        *,
        browser_binding: str | None,
        login_hint: str | None = None,
        carry: Mapping[str, Any] | None = None,
        state: str | None = None,
    ) -> str:
        """The authorize URL.

        ``state`` may be chosen by the caller (an unguessable ``random_token()``, or ``StateRouter.new_state``
        for a kind kept in a geography), e.g. to seal ``carry`` bound to the state row it will live in; by
        default a fresh one is drawn.
        ``browser_binding`` is a random value the caller also gives the browser (a cookie); only its
        SHA-256 is stored with the flow, and ``complete`` requires the same value back (login CSRF).
        Callers must choose: ``None`` is only for flows whose browser may drop cookies and whose
        state already carries who started them (an EHR launch, see connector/launch.py).
        """
        flow: dict[str, Any] = self._app.initiate_auth_code_flow(
            [],
            redirect_uri=redirect_uri,
            state=state or random_token(),
            response_mode="form_post",
            login_hint=login_hint,
            prompt="select_account",
        )
        if "auth_uri" not in flow:
            raise UpstreamUnavailable(N_("Microsoft sign-in could not be started."), system=SYSTEM)
        payload: dict[str, Any] = {**flow}
        if browser_binding is not None:
            payload[BINDING_KEY] = _binding_hash(browser_binding)
        if carry is not None:
            payload[CARRY_KEY] = dict(carry)
        self._states.create(self._kind, payload, state=flow["state"])
        return str(flow["auth_uri"])

    def complete(self, auth_response: Mapping[str, str], *, browser_binding: str | None) -> PortalIdentity:
        return self.complete_with_carry(auth_response, browser_binding=browser_binding)[0]

    def complete_with_carry(
        self, auth_response: Mapping[str, str], *, browser_binding: str | None
    ) -> tuple[PortalIdentity, dict[str, Any]]:
        state = auth_response.get("state", "")
        flow = self._states.consume(self._kind, state)  # unknown, expired or replayed state stops here
        carry: dict[str, Any] = flow.pop(CARRY_KEY, None) or {}
        expected = flow.pop(BINDING_KEY, None)
        if expected is not None:
            supplied = _binding_hash(browser_binding) if browser_binding else ""
            if not isinstance(expected, str) or not hmac.compare_digest(supplied.encode(), expected.encode()):
                # A valid code and state from someone else's browser (login CSRF) or a lost cookie.
                raise StateError(
                    N_("This sign-in was not started in this browser, or took too long. Please start again."),
                    code="state_not_bound",
                )
        error = auth_response.get("error")
        if error:
            raise _entra_rejected(error)
        if not auth_response.get("code"):
            raise StateError(N_("The sign-in response was incomplete. Please start again."), code="missing_code")
        try:
            result = self._app.acquire_token_by_auth_code_flow(flow, dict(auth_response))
        except ValueError:
            raise StateError(N_("This sign-in response does not match its request. Please start again.")) from None
        except RuntimeError:  # msal's nonce check
            raise Unauthenticated(N_("Microsoft sign-in could not be verified. Please sign in again.")) from None
        except Exception:  # noqa: BLE001 - requests' connection errors from inside msal
            raise UpstreamUnavailable(N_("Microsoft sign-in is unreachable right now."), system=SYSTEM) from None
        if "error" in result:
            raise _entra_rejected(str(result["error"]))
        id_token = result.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthenticated(N_("Microsoft sign-in returned no identity. Please sign in again."))
        claims = self._validator.validate(id_token, nonce=nonce_hash(str(flow["nonce"])))
        return identity_from_claims(claims), carry


def _entra_rejected(error: str) -> UpstreamRejected:
    code = sanitise_oauth_error(error).code
    return UpstreamRejected(
        N_("Microsoft sign-in failed: %(code)s. Please try again.", code=code), system=SYSTEM, code=code
    )


# --- builders (the composition root, connector/services.py, builds each once per process) -------------


def build_msal_app(settings: Settings, http: SafeHttp) -> msal.ConfidentialClientApplication:
    """The confidential client for user sign-ins (msal discovers the authority over HTTP when built)."""
    try:
        return msal.ConfidentialClientApplication(
            settings.entra_client_id,
            client_credential=settings.entra_client_secret.reveal(),
            authority=f"{settings.entra_authority_host}/organizations",
            instance_discovery=False,
            token_cache=_NoUserTokens(),
            http_client=MsalHttp(http),
        )
    except ValueError:
        raise UpstreamUnavailable(N_("Microsoft sign-in is not reachable right now."), system=SYSTEM) from None
    except Exception:  # noqa: BLE001 - requests' connection errors during authority discovery
        raise UpstreamUnavailable(N_("Microsoft sign-in is not reachable right now."), system=SYSTEM) from None


def build_validator(settings: Settings, http: SafeHttp) -> EntraIdTokenValidator:
    return EntraIdTokenValidator(
        settings.entra_authority_host, settings.entra_client_id, settings.entra_allowed_tenant_ids, http=http
    )
