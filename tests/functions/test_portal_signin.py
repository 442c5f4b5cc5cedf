"""Microsoft 365 sign-in to the portal: msal's auth-code flow plus our own id_token checks.

msal talks to an in-process stand-in through its ``http_client`` hook (msal insists on https
URLs); the id_token's keys are served through an httpx MockTransport. End-to-end against the
sandbox Entra ID is covered by the browser test.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import msal
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from shared.kernel.settings import get_settings
from shared.microsoft import entra
from tests.functions.portal_support import call, location_query, text
from tests.support.outbound import local_http

pytestmark = pytest.mark.azurite

KEY = rsa.generate_private_key(65537, 2048)
ROGUE = rsa.generate_private_key(65537, 2048)
ALLOWED_TENANT = "11111111-1111-4111-8111-111111111111"


@dataclass
class _Response:
    status_code: int
    text: str
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(self.status_code)


@dataclass
class FakeEntra:
    """Serves what msal asks for: the authority's OpenID configuration and the token endpoint."""

    host: str
    client_id: str
    tenant: str = ALLOWED_TENANT
    wids: tuple[str, ...] = (entra.GLOBAL_ADMINISTRATOR,)
    nonce: str = ""
    signing_key: rsa.RSAPrivateKey = KEY
    posted: list[dict[str, Any]] = field(default_factory=list)

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> _Response:
        assert url == f"{self.host}/organizations/v2.0/.well-known/openid-configuration", url
        return _Response(
            200,
            json.dumps(
                {
                    "issuer": f"{self.host}/{{tenantid}}/v2.0",
                    "authorization_endpoint": f"{self.host}/organizations/oauth2/v2.0/authorize",
                    "token_endpoint": f"{self.host}/organizations/oauth2/v2.0/token",
                    "jwks_uri": f"{self.host}/organizations/discovery/v2.0/keys",
                }
            ),
        )

    def post(self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any) -> _Response:
        self.posted.append(dict(data or {}))
        now = int(time.time())
        claims = {
            "iss": f"{self.host}/{self.tenant}/v2.0",
            "aud": self.client_id,
            "tid": self.tenant,
            "oid": "a0000000-0000-4000-8000-000000000001",
            "sub": "pairwise-sub",
            "preferred_username": "Admin@Contoso.example",
            "name": "Avery Admin",
            "wids": list(self.wids),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "nonce": self.nonce,
            "ver": "2.0",
        }
        id_token = jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": "entra-1"})
        client_info = jwt.utils.base64url_encode(
            json.dumps({"uid": claims["oid"], "utid": self.tenant}).encode()
        ).decode()
        return _Response(
            200,
            json.dumps(
                {
                    "token_type": "Bearer",
                    "scope": "openid profile",
                    "expires_in": 3600,
                    "access_token": "at",
                    "id_token": id_token,
                    "client_info": client_info,
                }
            ),
        )


def keys_transport(host: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/v2.0/.well-known/openid-configuration"):
            tenant = path.split("/")[1]
            return httpx.Response(
                200,
                json={
                    "issuer": f"{host}/{tenant}/v2.0",
                    "jwks_uri": f"{host}/{tenant}/discovery/v2.0/keys",
                },
            )
        if path.endswith("/discovery/v2.0/keys"):
            jwk = RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
            return httpx.Response(200, json={"keys": [{**jwk, "kid": "entra-1", "use": "sig"}]})
        return httpx.Response(404)

    return httpx.MockTransport(handle)


@pytest.fixture
def fake_entra(env: dict[str, str]) -> Iterator[FakeEntra]:
    reset_services()
    settings = get_settings()
    fake = FakeEntra(host=settings.entra_authority_host, client_id=settings.entra_client_id)
    install_fake_entra(fake)
    yield fake
    reset_services()


def install_fake_entra(fake: FakeEntra) -> None:
    """The process's msal app and id_token validator, talking to the fake Entra instead of the network."""
    settings = get_settings()
    services().msal_app = msal.ConfidentialClientApplication(
        settings.entra_client_id,
        client_credential=settings.entra_client_secret.reveal(),
        authority=f"{settings.entra_authority_host}/organizations",
        instance_discovery=False,
        http_client=fake,
        token_cache=entra._NoUserTokens(),
    )
    services().entra_validator = entra.EntraIdTokenValidator(
        settings.entra_authority_host,
        settings.entra_client_id,
        settings.entra_allowed_tenant_ids,
        http=local_http(transport=keys_transport(settings.entra_authority_host)),
    )


def cookies_set(response: Any) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name (whole header values)."""
    return {value.split("=", 1)[0]: value for value in response.headers.get_all("Set-Cookie")}


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


def start(fake: FakeEntra, *, cookie: str | None = None, lang: str | None = None) -> dict[str, str]:
    """Begin a sign-in (from a page in ``lang``, chosen with the switch); the returned query carries the browser's
    binding cookie as ``_binding``."""
    path = f"portal/signin?lang={lang}" if lang else "portal/signin"
    response = call(portal.signin, "GET", path, headers={"cookie": cookie} if cookie else None)
    assert response.status_code == 302
    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    fake.nonce = query["nonce"]  # Entra echoes the (hashed) nonce it was sent
    name = portal.signin_cookie_name(get_settings())
    query["_binding"] = f"{name}={cookie_value(cookies_set(response)[name])}"
    return query


def finish(query: dict[str, str], *, binding: str | None = "from-query", **extra: str) -> Any:
    form = {"code": "entra-code", "state": query["state"], "session_state": str(uuid.uuid4()), **extra}
    cookie = query["_binding"] if binding == "from-query" else binding
    return call(
        portal.signin_callback,
        "POST",
        "portal/signin/callback",
        form=form,
        headers={"cookie": cookie} if cookie else None,
    )


def test_sign_in_uses_pkce_form_post_and_creates_a_server_side_session(fake_entra: FakeEntra) -> None:
    query = start(fake_entra)
    assert query["response_mode"] == "form_post" and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == "http://localhost:7071/api/portal/signin/callback"
    response = finish(query)
    assert response.status_code == 303, text(response)
    cookie = cookies_set(response)["portal_session"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/api/portal" in cookie
    assert "code_verifier" in fake_entra.posted[-1]
    session_id = cookie.split(";", 1)[0].split("=", 1)[1]
    dashboard = call(portal.dashboard, "GET", "portal", headers={"cookie": f"portal_session={session_id}"})
    page = text(dashboard)
    assert "Avery Admin" in page and "administrator" in page and "Add configurations" in page


def test_the_state_is_single_use(fake_entra: FakeEntra) -> None:
    query = start(fake_entra)
    assert finish(query).status_code == 303
    replay = finish(query)
    assert replay.status_code == 400 and "already used" in text(replay)


def test_a_tenant_not_on_the_allowed_list_is_refused(fake_entra: FakeEntra) -> None:
    fake_entra.tenant = "99999999-9999-4999-8999-999999999999"
    response = finish(start(fake_entra))
    assert response.status_code == 403 and "not enabled" in text(response)
    assert "portal_session" not in cookies_set(response)


def test_an_id_token_with_a_forged_signature_is_refused(fake_entra: FakeEntra) -> None:
    fake_entra.signing_key = ROGUE
    response = finish(start(fake_entra))
    assert response.status_code == 401 and "could not be verified" in text(response)
    assert "portal_session" not in cookies_set(response)


def test_a_wrong_nonce_is_refused(fake_entra: FakeEntra) -> None:
    query = start(fake_entra)
    fake_entra.nonce = "another-sign-in"
    response = finish(query)
    assert response.status_code == 401
    assert "portal_session" not in cookies_set(response)


def test_a_language_chosen_before_the_sign_in_is_kept_after_it(fake_entra: FakeEntra) -> None:
    """Microsoft's form_post back to us cannot carry ``?lang=``; the sign-in's state does, so the portal the admin
    comes back to speaks the language they chose, not their browser's."""
    query = start(fake_entra, lang="it")
    assert "lang" not in query  # Microsoft's URL is not ours: nothing of the choice is sent there
    response = finish(query)
    assert response.status_code == 303, text(response)
    assert location_query(response) == {"lang": "it"}
    failed = finish(start(fake_entra, lang="de"), binding=None)  # refused after the state was used up
    assert failed.status_code in (400, 403) and failed.headers["Content-Language"] == "de"
    assert 'lang="de"' in text(failed)


def test_without_a_choice_the_sign_in_keeps_to_the_browsers_language(fake_entra: FakeEntra) -> None:
    response = finish(start(fake_entra))
    assert response.status_code == 303 and "lang" not in location_query(response)


def test_an_error_from_entra_is_shown_plainly(fake_entra: FakeEntra) -> None:
    query = start(fake_entra)
    form = {"error": "access_denied", "error_description": "<b>user cancelled</b>", "state": query["state"]}
    response = call(
        portal.signin_callback, "POST", "portal/signin/callback", form=form, headers={"cookie": query["_binding"]}
    )
    assert response.status_code == 502 and "Microsoft sign-in failed: access_denied" in text(response)
    assert "<b>" not in text(response)


def test_a_user_without_admin_roles_is_not_an_admin(fake_entra: FakeEntra) -> None:
    fake_entra.wids = ()
    response = finish(start(fake_entra))
    session_id = cookie_value(cookies_set(response)["portal_session"])
    page = text(call(portal.dashboard, "GET", "portal", headers={"cookie": f"portal_session={session_id}"}))
    assert "Add configurations" not in page and "approver" in page


def test_outside_localhost_the_session_cookie_is_secure(fake_entra: FakeEntra, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://connector.contoso.example")
    reset_services()
    install_fake_entra(fake_entra)
    query = start(fake_entra)
    assert query["redirect_uri"] == "https://connector.contoso.example/api/portal/signin/callback"
    assert query["_binding"].startswith("__Secure-portal_signin=")
    cookie = cookies_set(finish(query))["__Secure-portal_session"]
    assert "; Secure" in cookie and "HttpOnly" in cookie


# --- the sign-in is bound to the browser that started it (login CSRF) ---------------------------


def test_the_signin_binding_cookie_is_httponly_secure_cross_site_path_limited_and_short_lived(
    fake_entra: FakeEntra,
) -> None:
    response = call(portal.signin, "GET", "portal/signin")
    cookie = cookies_set(response)["portal_signin"]
    # SameSite=None: Entra's form_post back is a cross-site POST. Secure: browsers refuse SameSite=None without
    # it (Chromium sets and sends Secure cookies on http://localhost and 127.0.0.1, which the browser test uses).
    for attribute in ("HttpOnly", "Secure", "SameSite=None", "Path=/api/portal/signin", "Max-Age=600"):
        assert attribute in cookie.split("; "), (attribute, cookie)
    assert len(cookie_value(cookie)) >= 43  # 256 random bits


def test_a_valid_code_and_state_without_the_browser_cookie_are_rejected(fake_entra: FakeEntra) -> None:
    """Login CSRF: an attacker's own code+state replayed into a victim's browser (which lacks the cookie)."""
    query = start(fake_entra)
    response = finish(query, binding=None)
    assert response.status_code == 400 and "not started in this browser" in text(response)
    assert "portal_session" not in cookies_set(response)
    assert fake_entra.posted == []  # the code was never redeemed


def test_another_browsers_binding_cookie_does_not_count(fake_entra: FakeEntra) -> None:
    attacker = start(fake_entra)
    victim = start(fake_entra)
    response = finish(attacker, binding=victim["_binding"])
    assert response.status_code == 400 and "portal_session" not in cookies_set(response)


def test_the_callback_clears_the_binding_cookie(fake_entra: FakeEntra) -> None:
    ok = finish(start(fake_entra))
    assert ok.status_code == 303 and "Max-Age=0" in cookies_set(ok)["portal_signin"]
    failed = finish(start(fake_entra), binding="portal_signin=forged-value-forged-value-forged-value-x")
    assert failed.status_code == 400 and "Max-Age=0" in cookies_set(failed)["portal_signin"]


def test_signing_in_again_deletes_the_previous_session(fake_entra: FakeEntra) -> None:
    first = cookie_value(cookies_set(finish(start(fake_entra)))["portal_session"])
    old_cookie = {"cookie": f"portal_session={first}"}
    assert "Avery Admin" in text(call(portal.dashboard, "GET", "portal", headers=old_cookie))
    query = start(fake_entra, cookie=f"portal_session={first}")
    # Starting a sign-in changes nothing (any site can make a browser do it): the old session lives on...
    assert "Avery Admin" in text(call(portal.dashboard, "GET", "portal", headers=old_cookie))
    # ...until the new sign-in succeeds, even though Entra's cross-site POST back carries no session cookie.
    second = cookie_value(cookies_set(finish(query))["portal_session"])
    assert second != first
    assert 'href="/api/portal/signin"' in text(call(portal.dashboard, "GET", "portal", headers=old_cookie))
    new_cookie = {"cookie": f"portal_session={second}"}
    assert "Avery Admin" in text(call(portal.dashboard, "GET", "portal", headers=new_cookie))
