"""SMART App Launch 2 client: the explicit steps of a launch, reusable by the portal and the launch.

    discover(fhir_base_url, vendor=)   .well-known/smart-configuration, fallback {base}/metadata; the
                                       vendor profile (``shared.ehr.vendors``) decides extra headers
    fhir_version(fhir_base_url)        the CapabilityStatement's fhirVersion (the portal accepts R4 only)
    Pkce.new(), authorize_url(...)     PKCE S256, state, aud = FHIR base, optional launch + nonce
    authorization_request(...)         the EHR launch's request: GET, or a POST form when the EHR
                                       advertises ``authorize-post`` and the URL would be long
    exchange_code(...)                 authorization_code grant, private_key_jwt client assertion
    validate_id_token(...)             signature from the EHR's JWKS, iss, aud = client id, exp, nonce
    read(...)                          one FHIR resource with the launch's access token

Every request goes through ``SafeHttp`` (the FHIR base URL and whatever the discovery document
names are user-controlled). Discovery documents are cached per process for a few minutes.
Token responses are parsed leniently (vendor keys, string booleans) and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode, urlsplit

from shared.configurations.model import Vendor
from shared.ehr.vendors import CLIENT_AUTH_METHOD, profile_for
from shared.http.outbound import HttpResult, SafeHttp, check_url_syntax, normalise_base_url, outbound_policy
from shared.http.upstream import retry_after_seconds, sanitise_oauth_error
from shared.jose.id_tokens import unverified_claims, validate_id_token
from shared.jose.jwks import JwksCache
from shared.jose.keys import CLIENT_ASSERTION_TYPE, SigningKeys, signing_keys_from
from shared.kernel.errors import InvalidIdToken, UnsafeUrl, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.i18n import N_
from shared.kernel.settings import Settings
from shared.kernel.single_flight import SingleFlight

SYSTEM = "EHR"
AUTHORIZE_POST_CAPABILITY = "authorize-post"
MAX_AUTHORIZE_GET_URL = 2000  # longer URLs are cut by some browsers and proxies: POST when the EHR allows it
OAUTH_URIS_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
DISCOVERY_TTL_SECONDS = 600.0


class DiscoveryError(UpstreamRejected):
    """The FHIR server's SMART configuration is missing or unusable; ``message`` says why, in plain words."""

    code = "smart_discovery"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, system=SYSTEM)


class OAuthError(UpstreamRejected):
    """The EHR's authorization server answered with an OAuth 2 error (``code`` is its ``error`` value)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        safe = sanitise_oauth_error(error, description)
        super().__init__(f"OAuth2 error from the EHR: {safe.code}", system=SYSTEM, code=safe.code)
        self.error = safe.code
        self.description = safe.description


@dataclass(frozen=True)
class SmartConfiguration:
    fhir_base_url: str
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    jwks_uri: str | None = None
    code_challenge_methods: tuple[str, ...] = ()
    token_endpoint_auth_methods: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    source: str = "smart-configuration"
    # Headers naming our client on this EHR's APIs (``Epic-Client-ID`` for Epic only), decided by the
    # configuration's vendor profile when it was discovered; sent again on reads with this configuration.
    client_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str
    method: str = "S256"

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier=verifier, challenge=base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser: a GET redirect to ``url``, or an auto-submitting POST of ``fields`` to it."""

    url: str
    method: str = "GET"
    fields: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # the launch token and state never reach logs
        return f"AuthorizationRequest(method={self.method!r}, endpoint={urlsplit(self.url).path!r})"


@dataclass(frozen=True)
class TokenResponse:
    """A token response; ``fields`` keeps every key (Epic adds ``appointment``, ``__epic.dstu2.patient``...)."""

    access_token: str
    id_token: str | None
    scope: str | None
    fields: Mapping[str, Any] = field(repr=False)

    def __repr__(self) -> str:  # tokens never reach logs
        return f"TokenResponse(scope={self.scope!r}, keys={sorted(self.fields)})"


_DiscoveryKey = tuple[str, tuple[tuple[str, str], ...]]  # the FHIR base URL and the vendor's client headers
_Discovered = tuple[float, SmartConfiguration]  # when it was fetched, and what


class SmartClient:
    def __init__(
        self,
        http: SafeHttp,
        keys: SigningKeys | None,
        *,
        discovery_ttl_seconds: float = DISCOVERY_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self._keys = keys
        self._ttl = discovery_ttl_seconds
        self._clock = clock
        self._discovery: dict[_DiscoveryKey, _Discovered] = {}
        self._asked: dict[tuple[str, str | None, Vendor | None], _Discovered] = {}
        self._lock = threading.Lock()
        # A fetch in flight when ``forget`` runs answers from before it: it must neither be kept nor be joined by a
        # later ask, so each flight is of its base's generation, which ``forget`` moves on.
        self._generation: dict[str, int] = {}
        self._discovering: SingleFlight[tuple[_DiscoveryKey, int], _Discovered] = SingleFlight()
        self._jwks = JwksCache(self._fetch_json_document)

    # --- step 1: discover ------------------------------------------------------------

    def discover(
        self, fhir_base_url: str, *, client_id: str | None = None, vendor: Vendor | None = None
    ) -> SmartConfiguration:
        """SMART configuration of a FHIR base URL, for ``client_id`` of a configuration of ``vendor``.

        The vendor decides only which headers name the client (``shared.ehr.vendors``); without one
        (or for any vendor but Epic) no vendor header is sent. Raises ``UnsafeUrl``, ``DiscoveryError``
        or ``UpstreamUnavailable``.
        """
        # Asked again with the very same arguments (every launch of a configuration): the answer it had, while
        # fresh, without checking and normalising the URL and building the vendor's headers again.
        asked = (fhir_base_url, client_id, vendor)
        with self._lock:
            cached = self._asked.get(asked)
            if cached is not None and self._clock() - cached[0] < self._ttl:
                return cached[1]
        base = check_url_syntax(fhir_base_url, self.http.policy, base_url=True).url
        headers = profile_for(vendor).client_headers(client_id) if vendor is not None else {}
        cache_key = (base, tuple(sorted(headers.items())))
        with self._lock:
            generation = self._generation.get(base, 0)
        entry = self._discovering.run(  # one fetch for the threads that find it missing meanwhile
            (cache_key, generation),
            lambda: self._discovered(base, headers, cache_key, generation),
            kept=lambda: self._remembered(cache_key),
        )
        with self._lock:
            if self._discovery.get(cache_key) is entry:  # not forgotten meanwhile (``forget``)
                self._asked[asked] = entry
        return entry[1]

    def _remembered(self, cache_key: _DiscoveryKey) -> _Discovered | None:
        with self._lock:
            cached = self._discovery.get(cache_key)
        return cached if cached is not None and self._clock() - cached[0] < self._ttl else None

    def _discovered(
        self, base: str, headers: Mapping[str, str], cache_key: _DiscoveryKey, generation: int
    ) -> _Discovered:
        found = self._from_well_known(base, headers) or self._from_metadata(base, headers)
        entry = (self._clock(), replace(found, client_headers=cache_key[1]))
        with self._lock:
            if self._generation.get(base, 0) == generation:  # else forgotten while it was being fetched
                self._discovery[cache_key] = entry
        return entry

    def forget(self, fhir_base_url: str) -> None:
        base = normalise_base_url(fhir_base_url)
        with self._lock:
            self._generation[base] = self._generation.get(base, 0) + 1
            for key in [k for k in self._discovery if k[0] == base]:
                del self._discovery[key]
            for asked in [k for k, (_, config) in self._asked.items() if config.fhir_base_url == base]:
                del self._asked[asked]

    def _from_well_known(self, base: str, headers: Mapping[str, str]) -> SmartConfiguration | None:
        url = f"{base}/.well-known/smart-configuration"
        result = self.http.get(url, headers={**headers, "Accept": "application/json"})
        if result.status in (404, 410, 406):
            return None
        _raise_if_transient(result, N_("The EHR's SMART configuration"))
        document = result.json()
        if result.status != 200 or not isinstance(document, dict):
            return None
        authorize, token = document.get("authorization_endpoint"), document.get("token_endpoint")
        if not isinstance(authorize, str) or not isinstance(token, str) or not authorize or not token:
            raise DiscoveryError(N_("its SMART configuration lacks an authorization or token endpoint"))
        methods = _strings(document.get("code_challenge_methods_supported"))
        if "S256" not in methods:
            raise DiscoveryError(N_("its SMART configuration does not offer PKCE with S256"))
        auth_methods = _strings(document.get("token_endpoint_auth_methods_supported"))
        if "token_endpoint_auth_methods_supported" in document and CLIENT_AUTH_METHOD not in auth_methods:
            # The connector authenticates only with a signed assertion (no client secret to leak):
            # an EHR that does not accept one would refuse every code we redeem.
            raise DiscoveryError(
                N_(
                    "its token endpoint does not accept %(method)s client authentication, the only one the "
                    "connector uses (token_endpoint_auth_methods_supported: %(offered)s)",
                    method=CLIENT_AUTH_METHOD,
                    offered=", ".join(auth_methods) or N_("none"),
                )
            )
        return self._configuration(
            base,
            authorize,
            token,
            issuer=document.get("issuer"),
            jwks_uri=document.get("jwks_uri"),
            methods=methods,
            auth_methods=auth_methods,
            capabilities=_strings(document.get("capabilities")),
            source="smart-configuration",
        )

    def fhir_version(self, fhir_base_url: str, *, headers: Mapping[str, str] | None = None) -> str:
        """``CapabilityStatement.fhirVersion`` of ``{base}/metadata`` (e.g. ``4.0.1``), read once, not cached.

        Raises ``DiscoveryError`` when the server publishes no CapabilityStatement with a version,
        ``UpstreamUnavailable`` / ``UpstreamThrottled`` when it cannot answer now.
        """
        base = check_url_syntax(fhir_base_url, self.http.policy, base_url=True).url
        result = self.http.get(f"{base}/metadata", headers={**(headers or {}), "Accept": "application/fhir+json"})
        _raise_if_transient(result, N_("The EHR's metadata"))
        document = result.json()
        if (
            result.status != 200
            or not isinstance(document, dict)
            or document.get("resourceType") != "CapabilityStatement"
        ):
            raise DiscoveryError(
                N_("its metadata (CapabilityStatement) could not be read, so its FHIR version is unknown")
            )
        version = document.get("fhirVersion")
        if not isinstance(version, str) or not version.strip():
            raise DiscoveryError(N_("its CapabilityStatement names no fhirVersion"))
        return version.strip()[:20]

    def _from_metadata(self, base: str, headers: Mapping[str, str]) -> SmartConfiguration:
        # SMART 1 servers publish the OAuth URIs on the CapabilityStatement only; PKCE is still
        # always sent, and the approver's EHR sign-in proves the server accepts it.
        result = self.http.get(f"{base}/metadata", headers={**headers, "Accept": "application/fhir+json"})
        _raise_if_transient(result, N_("The EHR's metadata"))
        document = result.json()
        is_capability = isinstance(document, dict) and document.get("resourceType") == "CapabilityStatement"
        if result.status != 200 or not is_capability:
            raise DiscoveryError(N_("no SMART configuration was found (.well-known/smart-configuration or metadata)"))
        uris: dict[str, str] = {}
        # The document is the server's to shape: every level may be the wrong JSON type.
        for rest in _dicts(document.get("rest")):
            security = rest.get("security")
            for extension in _dicts(security.get("extension") if isinstance(security, dict) else None):
                if extension.get("url") == OAUTH_URIS_EXTENSION:
                    for item in _dicts(extension.get("extension")):
                        if isinstance(item.get("url"), str) and isinstance(item.get("valueUri"), str):
                            uris[item["url"]] = item["valueUri"]
        if "authorize" not in uris or "token" not in uris:
            raise DiscoveryError(N_("its metadata names no OAuth authorize and token endpoints"))
        return self._configuration(base, uris["authorize"], uris["token"], source="metadata")

    def _configuration(
        self,
        base: str,
        authorize: str,
        token: str,
        *,
        issuer: Any = None,
        jwks_uri: Any = None,
        methods: tuple[str, ...] = (),
        auth_methods: tuple[str, ...] = (),
        capabilities: tuple[str, ...] = (),
        source: str,
    ) -> SmartConfiguration:
        for name, url in (("authorization", authorize), ("token", token)):
            try:
                check_url_syntax(url, self.http.policy)
            except UnsafeUrl as exc:
                raise DiscoveryError(
                    N_("its %(name)s endpoint is not acceptable: %(message)s", name=name, message=exc.message)
                ) from None
        return SmartConfiguration(
            fhir_base_url=base,
            authorization_endpoint=authorize,
            token_endpoint=token,
            issuer=issuer if isinstance(issuer, str) and issuer else None,
            jwks_uri=jwks_uri if isinstance(jwks_uri, str) and jwks_uri else None,
            code_challenge_methods=methods,
            token_endpoint_auth_methods=auth_methods,
            capabilities=capabilities,
            source=source,
        )

    # --- step 2: authorize --------------------------------------------------------------

    @staticmethod
    def authorize_url(
        config: SmartConfiguration,
        *,
        client_id: str,
        redirect_uri: str,
        scope: str,
        state: str,
        pkce: Pkce,
        launch: str | None = None,
        nonce: str | None = None,
    ) -> str:
        """The authorization request as a GET URL; ``aud`` is always the FHIR base URL."""
        params = _authorize_params(config.fhir_base_url, client_id, redirect_uri, scope, state, pkce, launch, nonce)
        return _with_query(config.authorization_endpoint, params)

    @staticmethod
    def authorization_request(
        config: SmartConfiguration,
        *,
        client_id: str,
        redirect_uri: str,
        scope: str,
        state: str,
        pkce: Pkce,
        launch: str,
        nonce: str,
        aud: str,
    ) -> AuthorizationRequest:
        """An EHR launch's authorization request. ``aud`` is the ``iss`` the EHR launched with (already
        matched to the configured FHIR URL); the launch token can be a long JWT, so the request is a POST
        form when the EHR advertises ``authorize-post`` and the GET URL would be long (Epic, Nov 2020+)."""
        params = _authorize_params(aud, client_id, redirect_uri, scope, state, pkce, launch, nonce)
        url = _with_query(config.authorization_endpoint, params)
        if len(url) > MAX_AUTHORIZE_GET_URL and AUTHORIZE_POST_CAPABILITY in config.capabilities:
            return AuthorizationRequest(url=config.authorization_endpoint, method="POST", fields=params)
        return AuthorizationRequest(url=url)

    # --- step 3: complete ---------------------------------------------------------------

    def exchange_code(
        self,
        config: SmartConfiguration,
        *,
        client_id: str,
        code: str,
        redirect_uri: str,
        code_verifier: str,
    ) -> TokenResponse:
        """Redeem ``code`` as a confidential client authenticated with ``private_key_jwt``."""
        if self._keys is None:
            raise RuntimeError("SmartClient needs signing keys to redeem codes")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": client_id,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self._keys.client_assertion(client_id, config.token_endpoint),
        }
        result = self.http.post_form(config.token_endpoint, form, headers={"Accept": "application/json"})
        body = result.json()
        if result.status >= 500 and not (isinstance(body, dict) and "error" in body):
            raise UpstreamUnavailable(N_("The EHR's token endpoint is unavailable right now."), system=SYSTEM)
        return _token_response(result.status, body)

    def backend_services_token(
        self, fhir_base_url: str, *, client_id: str, scope: str, vendor: Vendor | None = None
    ) -> TokenResponse:
        """SMART Backend Services: ``client_credentials`` with a ``private_key_jwt`` assertion, no user present.

        Retryable failures (5xx, 408, 429 with Retry-After, timeouts) raise ``UpstreamUnavailable`` /
        ``UpstreamThrottled``; an OAuth error answer raises ``OAuthError`` (permanent).
        """
        if self._keys is None:
            raise RuntimeError("SmartClient needs signing keys for Backend Services")
        config = self.discover(fhir_base_url, client_id=client_id, vendor=vendor)
        form = {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self._keys.client_assertion(client_id, config.token_endpoint),
        }
        headers = {"Accept": "application/json", **dict(config.client_headers)}
        result = self.http.post_form(config.token_endpoint, form, headers=headers)
        _raise_if_transient(result, N_("The EHR's token endpoint"))
        return _token_response(result.status, result.json())

    def validate_id_token(
        self, config: SmartConfiguration, id_token: str, *, client_id: str, nonce: str | None
    ) -> dict[str, Any]:
        """Claims of a valid EHR id_token (raises ``InvalidIdToken``)."""
        issuer, jwks_uri = self._issuer_and_jwks(config, id_token)
        return validate_id_token(
            id_token,
            keys_for=lambda kid, alg: self._jwks.keys_for(jwks_uri, kid, alg),
            issuer=issuer,
            audience=client_id,
            nonce=nonce,
        )

    # --- step 4: use the access token ------------------------------------------------------

    def read(self, config: SmartConfiguration, reference: str, *, access_token: str) -> dict[str, Any]:
        """``GET {FHIR base}/{Type}/{id}`` with the launch's token; 4xx → ``UpstreamRejected``, 5xx → unavailable.

        The headers that name our client are the ones ``config`` was discovered with (its vendor's)."""
        resource_type, _, resource_id = reference.partition("/")
        if not resource_type.isalpha() or not resource_id or not all(c.isalnum() or c in "-." for c in resource_id):
            raise UpstreamRejected(N_("The EHR named an invalid resource."), system=SYSTEM, code="invalid_reference")
        headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/fhir+json",
            **dict(config.client_headers),
        }
        result = self.http.get(f"{config.fhir_base_url}/{resource_type}/{resource_id}", headers=headers)
        if result.status >= 500 or result.status in (408, 429):
            raise UpstreamUnavailable(N_("The EHR's FHIR API is unavailable right now."), system=SYSTEM)
        document = result.json()
        if result.status != 200 or not isinstance(document, dict) or document.get("resourceType") != resource_type:
            raise UpstreamRejected(
                N_(
                    "The EHR did not return the %(resource_type)s (HTTP %(status)s).",
                    resource_type=resource_type,
                    status=result.status,
                ),
                system=SYSTEM,
                code=f"http_{result.status}",
            )
        return document

    def _issuer_and_jwks(self, config: SmartConfiguration, id_token: str) -> tuple[str, str]:
        if config.issuer and config.jwks_uri:
            return config.issuer, config.jwks_uri
        # Without both in the SMART configuration (Epic's keys live under {iss}/.well-known/
        # openid-configuration), trust the token's issuer only when it is served by the same
        # host as the token endpoint and its OpenID configuration names itself.
        claimed = unverified_claims(id_token).get("iss")
        issuer = config.issuer or (claimed if isinstance(claimed, str) else None)
        if not issuer:
            raise InvalidIdToken("it names no issuer")
        try:
            same_host = urlsplit(issuer).hostname == urlsplit(config.token_endpoint).hostname
        except ValueError:  # e.g. "https://[bad" from an unverified token
            raise InvalidIdToken("its issuer is not a valid URL") from None
        if not same_host:
            raise InvalidIdToken("it was issued by an unexpected issuer")
        if config.jwks_uri:
            return issuer, config.jwks_uri
        openid = self._fetch_json_document(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
        jwks_uri = openid.get("jwks_uri")
        if openid.get("issuer") != issuer or not isinstance(jwks_uri, str):
            raise InvalidIdToken("its issuer publishes no usable OpenID configuration")
        return issuer, jwks_uri

    def _fetch_json_document(self, url: str) -> dict[str, Any]:
        result = self.http.get(url, headers={"Accept": "application/json"})
        document = result.json()
        if result.status != 200 or not isinstance(document, dict):
            raise InvalidIdToken("the issuer's keys could not be fetched")
        return document


def _token_response(status: int, body: Any) -> TokenResponse:
    """A token endpoint's answer, once the caller has ruled out a transient failure; else ``OAuthError``."""
    if not isinstance(body, dict):
        raise OAuthError("invalid_response", "the token endpoint did not answer with JSON")
    if status != 200 or "error" in body:
        raise OAuthError(str(body.get("error") or "invalid_response"), _text(body.get("error_description")))
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise OAuthError("invalid_response", "the token response has no access_token")
    id_token = body.get("id_token")
    return TokenResponse(
        access_token=access_token,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
        scope=_text(body.get("scope")),
        fields=dict(body),
    )


def _raise_if_transient(result: HttpResult, what: str) -> None:
    """5xx and 408 are ``UpstreamUnavailable``, 429 is ``UpstreamThrottled`` (with Retry-After): worth a retry."""
    if result.status == 429:
        retry_after = retry_after_seconds(result.headers)
        raise UpstreamThrottled(
            N_("%(what)s is throttling requests.", what=what), system=SYSTEM, retry_after=retry_after
        )
    if result.status >= 500 or result.status == 408:
        raise UpstreamUnavailable(N_("%(what)s is unavailable right now.", what=what), system=SYSTEM)


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a list (anything else, or a non-list, yields nothing)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _authorize_params(
    aud: str,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    pkce: Pkce,
    launch: str | None,
    nonce: str | None,
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,
        "code_challenge": pkce.challenge,
        "code_challenge_method": pkce.method,
    }
    if launch is not None:
        params["launch"] = launch
    if nonce is not None:
        params["nonce"] = nonce
    return params


def _with_query(endpoint: str, params: Mapping[str, str]) -> str:
    separator = "&" if urlsplit(endpoint).query else "?"
    return f"{endpoint}{separator}{urlencode(params)}"


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- the client from settings (built once per process by the composition root, connector/services.py) ---


def smart_client_for(settings: Settings) -> SmartClient:
    """A client whose outbound rules and signing keys come from settings."""
    return SmartClient(
        SafeHttp(outbound_policy(settings), system=SYSTEM), signing_keys_from(settings.signing_keys.reveal())
    )
