"""The auth-code flow with PKCE, driven by the real msal over HTTPS, through the http sign-in page."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import msal
import pytest

from sandbox.entra import RunningEntra
from sandbox.seed import (
    CONNECTOR_CLIENT_ID,
    CONNECTOR_CLIENT_SECRET,
    CONTOSO,
    DIRECTORY,
    FABRIKAM,
    GLOBAL_ADMINISTRATOR,
)
from sandbox.tls import TlsFiles
from tests.sandbox.conftest import REDIRECT_URI
from tests.sandbox.entra_browser import authorization_response, choose_account, parse_forms

ADMIN = DIRECTORY.user_by_upn("admin@contoso.example")
APPROVER = DIRECTORY.user_by_upn("analyst@contoso.example")
APP_ROLE_USER = DIRECTORY.user_by_upn("appadmin@contoso.example")
OTHER_TENANT_ADMIN = DIRECTORY.user_by_upn("admin@fabrikam.example")
assert ADMIN and APPROVER and APP_ROLE_USER and OTHER_TENANT_ADMIN


def _verified_id_token(api: httpx.Client, entra: RunningEntra, token: str, tenant_id: str) -> dict[str, object]:
    """Validate as the product must (msal >= 1.38 no longer does): signature via the JWKS, iss, aud, exp."""
    configuration = api.get(f"{entra.issuer_host}/{tenant_id}/v2.0/.well-known/openid-configuration").json()
    keys = api.get(configuration["jwks_uri"]).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys["keys"] if k["kid"] == kid))
    claims: dict[str, object] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=CONNECTOR_CLIENT_ID,
        issuer=configuration["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
    )
    return claims


def _sign_in(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, upn: str, **flow_options: object
) -> tuple[dict[str, object], dict[str, str]]:
    flow = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, **flow_options)
    return flow, authorization_response(choose_account(form_browser, flow["auth_uri"], upn))


def test_form_post_sign_in_yields_verified_id_token_and_account(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, api: httpx.Client, entra: RunningEntra
) -> None:
    flow, response = _sign_in(connector, form_browser, ADMIN.upn, response_mode="form_post")
    assert set(response) == {"code", "client_info", "state", "session_state"}
    assert response["state"] == flow["state"]

    result = connector.acquire_token_by_auth_code_flow(flow, response)

    assert "error" not in result, result
    assert {"access_token", "refresh_token", "id_token", "client_info"} <= result.keys()
    assert result["token_type"] == "Bearer" and result["expires_in"] > 0
    claims = _verified_id_token(api, entra, result["id_token"], ADMIN.tenant_id)
    assert claims["iss"] == f"{entra.issuer_host}/{CONTOSO.id}/v2.0"
    assert claims["tid"] == CONTOSO.id
    assert claims["oid"] == ADMIN.object_id
    assert claims["preferred_username"] == ADMIN.upn and claims["name"] == ADMIN.name
    assert claims["wids"] == [GLOBAL_ADMINISTRATOR]
    assert claims["ver"] == "2.0"
    assert claims["nonce"] == hashlib.sha256(str(flow["nonce"]).encode()).hexdigest()  # msal sends the hash
    assert "roles" not in claims
    assert jwt.get_unverified_header(result["id_token"])["alg"] == "RS256"
    (account,) = connector.get_accounts()
    assert account["username"] == ADMIN.upn
    assert account["home_account_id"] == f"{ADMIN.object_id}.{ADMIN.tenant_id}"


@pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")
def test_query_mode_and_tenant_authority_with_app_roles(
    entra: RunningEntra, trusted: TlsFiles, form_browser: httpx.Client, api: httpx.Client
) -> None:
    app = msal.ConfidentialClientApplication(
        CONNECTOR_CLIENT_ID,
        client_credential=CONNECTOR_CLIENT_SECRET,
        authority=entra.authority(CONTOSO.id),
        instance_discovery=False,
    )
    flow, response = _sign_in(app, form_browser, APP_ROLE_USER.upn, response_mode="query")
    result = app.acquire_token_by_auth_code_flow(flow, response)
    claims = _verified_id_token(api, entra, result["id_token"], CONTOSO.id)
    assert claims["roles"] == ["Connector.Admin"]
    assert "wids" not in claims
    app.http_client.close()


def test_oidc_authority_construction_signs_in_another_tenant(
    entra: RunningEntra, trusted: TlsFiles, form_browser: httpx.Client, api: httpx.Client
) -> None:
    app = msal.ConfidentialClientApplication(
        CONNECTOR_CLIENT_ID,
        client_credential=CONNECTOR_CLIENT_SECRET,
        oidc_authority=f"{entra.issuer_host}/organizations/v2.0",
    )
    flow, response = _sign_in(app, form_browser, OTHER_TENANT_ADMIN.upn, response_mode="form_post")
    result = app.acquire_token_by_auth_code_flow(flow, response)
    claims = _verified_id_token(api, entra, result["id_token"], FABRIKAM.id)
    assert claims["tid"] == FABRIKAM.id
    assert claims["iss"] == f"{entra.issuer_host}/{FABRIKAM.id}/v2.0"
    app.http_client.close()


def test_refresh_through_acquire_token_silent(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    flow, response = _sign_in(connector, form_browser, APPROVER.upn, response_mode="form_post")
    first = connector.acquire_token_by_auth_code_flow(flow, response)
    account = connector.get_accounts()[0]

    cached = connector.acquire_token_silent(["User.Read"], account=account)
    assert cached is not None and cached["token_source"] == "cache"
    refreshed = connector.acquire_token_silent(["User.Read"], account=account, force_refresh=True)

    assert refreshed is not None and "error" not in refreshed, refreshed
    assert refreshed["token_source"] == "identity_provider"
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["refresh_token"] != first["refresh_token"]  # rotated
    assert refreshed["id_token_claims"]["oid"] == APPROVER.object_id


def test_access_token_is_a_graph_v1_user_token(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, entra: RunningEntra
) -> None:
    flow, response = _sign_in(connector, form_browser, ADMIN.upn, response_mode="form_post")
    token = connector.acquire_token_by_auth_code_flow(flow, response)["access_token"]
    claims = entra.issuer.verify(token, audience="https://graph.microsoft.com")
    assert claims["iss"] == f"https://sts.windows.net/{CONTOSO.id}/"
    assert claims["idtyp"] == "user" and claims["appid"] == CONNECTOR_CLIENT_ID and claims["appidacr"] == "1"
    assert claims["oid"] == ADMIN.object_id and claims["upn"] == ADMIN.upn
    assert "User.Read" in str(claims["scp"]).split()


def test_sign_in_page_is_an_accessible_account_picker(connector: msal.ConfidentialClientApplication) -> None:
    flow = connector.initiate_auth_code_flow(
        ["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post", login_hint=APPROVER.upn
    )
    page = httpx.get(flow["auth_uri"])
    assert page.status_code == 200
    assert '<html lang="en">' in page.text and "<h1>Pick an account</h1>" in page.text
    buttons = [b for form in parse_forms(page.text) for b in form.buttons]
    upns = [b["data-upn"] for b in buttons]
    assert {"admin@contoso.example", "analyst@contoso.example", "dr.smith@contoso.example"} <= set(upns)
    assert "admin@fabrikam.example" in upns  # another tenant's user, for the multi-tenant app
    assert upns[0] == APPROVER.upn and "autofocus" in buttons[0]  # login_hint first and focused
    assert "Global Administrator" in page.text and "Epic analyst (approver)" in page.text


def test_sign_in_page_context_is_single_use(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    flow = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post")
    page = form_browser.get(flow["auth_uri"])
    form = parse_forms(page.text)[0]
    data = {**form.inputs, "user": ADMIN.object_id}
    action = f"{urlsplit(flow['auth_uri']).scheme}://{urlsplit(flow['auth_uri']).netloc}{form.action}"
    assert form_browser.post(action, data=data).status_code == 200
    replay = form_browser.post(action, data=data)
    assert replay.status_code == 400 and "AADSTS9002313" in replay.text


def test_browser_page_and_https_api_cooperate(
    entra: RunningEntra, connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    """msal discovers over https, sends the browser to http, and redeems over https."""
    flow = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post")
    assert flow["auth_uri"].startswith(f"{entra.browser_host}/organizations/oauth2/v2.0/authorize?")
    query = parse_qs(urlsplit(flow["auth_uri"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["response_mode"] == ["form_post"]
    response = authorization_response(choose_account(form_browser, flow["auth_uri"], ADMIN.upn))
    assert "access_token" in connector.acquire_token_by_auth_code_flow(flow, response)


@pytest.mark.filterwarnings("ignore:response_mode=.form_post. is recommended")
def test_session_cookie_enables_prompt_none(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    silent = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, prompt="none")
    refused = authorization_response(form_browser.get(silent["auth_uri"]))
    assert refused["error"] == "login_required" and refused["error_description"].startswith("AADSTS50058")
    assert refused["state"] == silent["state"]

    _sign_in(connector, form_browser, ADMIN.upn, response_mode="form_post")  # sets the sandbox session cookie
    silent = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, prompt="none")
    response = authorization_response(form_browser.get(silent["auth_uri"]))
    result = connector.acquire_token_by_auth_code_flow(silent, response)
    assert result["id_token_claims"]["oid"] == ADMIN.object_id


@pytest.mark.parametrize("segment", ["organizations", CONTOSO.id])
def test_user_of_another_tenant_at_a_tenant_authority_is_refused(
    entra: RunningEntra, trusted: TlsFiles, form_browser: httpx.Client, segment: str
) -> None:
    app = msal.ConfidentialClientApplication(
        CONNECTOR_CLIENT_ID,
        client_credential=CONNECTOR_CLIENT_SECRET,
        authority=entra.authority(segment),
        instance_discovery=False,
    )
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post")
    response = choose_account(form_browser, flow["auth_uri"], OTHER_TENANT_ADMIN.upn)
    if segment == "organizations":
        assert "code" in authorization_response(response)
    else:
        assert response.status_code == 400 and "AADSTS50020" in response.text
        assert "location" not in response.headers
    app.http_client.close()
