"""What the sandbox Entra ID refuses, and how: AADSTS codes, status codes, error pages vs redirects."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import httpx
import msal
import pytest

from sandbox.entra import RunningEntra
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO, DIRECTORY
from sandbox.tls import TlsFiles
from tests.sandbox.conftest import REDIRECT_URI, SINGLE_TENANT_CLIENT_ID, SINGLE_TENANT_SECRET, Clock
from tests.sandbox.entra_browser import authorization_response, choose_account

ADMIN = DIRECTORY.user_by_upn("admin@contoso.example")
assert ADMIN


def _code(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> tuple[dict[str, object], dict[str, str]]:
    flow = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post")
    return flow, authorization_response(choose_account(form_browser, flow["auth_uri"], ADMIN.upn))


def _assert_entra_error(body: dict[str, object], error: str, code: int) -> None:
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert str(body["error_description"]).startswith(f"AADSTS{code}: ")
    assert "Trace ID: " in str(body["error_description"]) and "Correlation ID: " in str(body["error_description"])
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()


def _authorize_url(entra: RunningEntra, segment: str = "organizations", **params: str) -> str:
    defaults = {
        "client_id": CONNECTOR_CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "openid profile offline_access User.Read",
        "state": "the-state",
        "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    query = {k: v for k, v in {**defaults, **params}.items() if v != ""}
    return f"{entra.browser_host}/{segment}/oauth2/v2.0/authorize?{urlencode(query)}"


# --- the token endpoint ------------------------------------------------------------------------------


def test_wrong_client_secret_is_401_invalid_client(entra: RunningEntra, trusted: TlsFiles) -> None:
    app = msal.ConfidentialClientApplication(
        CONNECTOR_CLIENT_ID, client_credential="not-the-secret", authority=entra.authority(CONTOSO.id),
        instance_discovery=False,
    )  # fmt: skip
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    _assert_entra_error(result, "invalid_client", 7000215)
    app.http_client.close()
    raw = httpx.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CONNECTOR_CLIENT_ID, "client_secret": "nope",
              "scope": "https://graph.microsoft.com/.default"},
        headers={"client-request-id": "0f0f0f0f-0000-4000-8000-000000000000"},
    )  # fmt: skip
    assert raw.status_code == 401
    assert raw.json()["correlation_id"] == "0f0f0f0f-0000-4000-8000-000000000000"  # echoed, as Entra does
    assert raw.headers["cache-control"] == "no-store"


def test_missing_client_credentials_is_aadsts7000218(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CONNECTOR_CLIENT_ID,
              "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert response.status_code == 401
    _assert_entra_error(response.json(), "invalid_client", 7000218)


def test_client_secret_basic_is_accepted(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": "https://graph.microsoft.com/.default"},
        auth=(CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET),
    )
    assert response.status_code == 200, response.text


def test_reused_code_is_aadsts54005(connector: msal.ConfidentialClientApplication, form_browser: httpx.Client) -> None:
    flow, response = _code(connector, form_browser)
    assert "access_token" in connector.acquire_token_by_auth_code_flow(dict(flow), response)
    again = connector.acquire_token_by_auth_code_flow(dict(flow), response)
    _assert_entra_error(again, "invalid_grant", 54005)


def test_pkce_verifier_mismatch_is_aadsts50148(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    flow, response = _code(connector, form_browser)
    flow["code_verifier"] = secrets.token_urlsafe(43)
    _assert_entra_error(connector.acquire_token_by_auth_code_flow(flow, response), "invalid_grant", 50148)


def test_expired_code_is_aadsts70008(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, clock: Clock, entra: RunningEntra
) -> None:
    flow, response = _code(connector, form_browser)
    clock.offset = entra.config.code_lifetime + 1
    _assert_entra_error(connector.acquire_token_by_auth_code_flow(flow, response), "invalid_grant", 70008)


def test_redirect_uri_must_match_the_one_of_the_code(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client
) -> None:
    flow, response = _code(connector, form_browser)
    flow["redirect_uri"] = "http://localhost:7071/api/launch/signin/callback"  # registered, but not this code's
    _assert_entra_error(connector.acquire_token_by_auth_code_flow(flow, response), "invalid_grant", 500112)


def test_garbage_code_and_refresh_token_are_invalid_grant(api: httpx.Client, entra: RunningEntra) -> None:
    url = f"{entra.issuer_host}/organizations/oauth2/v2.0/token"
    auth = {"client_id": CONNECTOR_CLIENT_ID, "client_secret": CONNECTOR_CLIENT_SECRET}
    code = api.post(url, data={**auth, "grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT_URI})
    refresh = api.post(url, data={**auth, "grant_type": "refresh_token", "refresh_token": "x"})
    for response in (code, refresh):
        assert response.status_code == 400
        _assert_entra_error(response.json(), "invalid_grant", 9002313)


def test_unknown_tenant_at_the_token_endpoint(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.post(
        f"{entra.issuer_host}/nobody.example/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CONNECTOR_CLIENT_ID,
              "client_secret": CONNECTOR_CLIENT_SECRET, "scope": "https://graph.microsoft.com/.default"},
    )  # fmt: skip
    assert response.status_code == 400
    _assert_entra_error(response.json(), "invalid_tenant", 90002)


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type", 70003),
        ({"grant_type": ""}, "invalid_request", 900144),
        ({"grant_type": "client_credentials", "client_id": "66666666-6666-4666-8666-666666666666", "client_secret": "x",
          "scope": "https://graph.microsoft.com/.default"}, "unauthorized_client", 700016),
    ],
    ids=["unsupported-grant", "missing-grant-type", "unknown-client"],
)  # fmt: skip
def test_malformed_token_requests(
    api: httpx.Client, entra: RunningEntra, data: dict[str, str], error: str, code: int
) -> None:
    defaults = {"client_id": CONNECTOR_CLIENT_ID, "client_secret": CONNECTOR_CLIENT_SECRET}
    response = api.post(f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token", data={**defaults, **data})
    assert response.status_code == 400
    _assert_entra_error(response.json(), error, code)


def test_token_endpoint_refuses_get(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.get(f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token")
    assert response.status_code == 400
    _assert_entra_error(response.json(), "invalid_request", 900561)


# --- the authorize endpoint --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://localhost:7071/api/portal/elsewhere",
        "https://attacker.example/api/portal/signin/callback",
        "http://localhost.attacker.example:7071/api/portal/signin/callback",
    ],
)
def test_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(
    entra: RunningEntra, form_browser: httpx.Client, redirect_uri: str
) -> None:
    response = form_browser.get(_authorize_url(entra, redirect_uri=redirect_uri))
    assert response.status_code == 400
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "AADSTS50011" in response.text
    assert f'href="{redirect_uri}' not in response.text  # shown as text, never linked
    assert "<form" not in response.text


def test_loopback_redirect_uri_port_is_ignored_as_entra_documents(
    entra: RunningEntra, form_browser: httpx.Client
) -> None:
    page = form_browser.get(_authorize_url(entra, redirect_uri="http://localhost:51234/api/portal/signin/callback"))
    assert page.status_code == 200 and "Pick an account" in page.text


def test_unknown_tenant_and_unknown_client_get_error_pages(entra: RunningEntra, form_browser: httpx.Client) -> None:
    tenant = form_browser.get(_authorize_url(entra, segment="nobody.example"))
    assert tenant.status_code == 400 and "AADSTS90002" in tenant.text and "location" not in tenant.headers
    client = form_browser.get(_authorize_url(entra, client_id="66666666-6666-4666-8666-666666666666"))
    assert client.status_code == 400 and "AADSTS700016" in client.text and "location" not in client.headers


def test_single_tenant_app_at_organizations_is_aadsts50194(entra: RunningEntra, form_browser: httpx.Client) -> None:
    response = form_browser.get(_authorize_url(entra, client_id=SINGLE_TENANT_CLIENT_ID))
    assert response.status_code == 400 and "AADSTS50194" in response.text


@pytest.mark.parametrize(
    ("params", "error", "code"),
    [
        ({"code_challenge_method": "plain", "code_challenge": "v" * 43}, "invalid_request", 9002325),
        ({"code_challenge": "", "code_challenge_method": ""}, "invalid_request", 9002325),
        ({"code_challenge": "too-short"}, "invalid_request", 501491),
        ({"response_type": "token"}, "unsupported_response_type", 700051),
        ({"response_type": ""}, "invalid_request", 900144),
        ({"scope": ""}, "invalid_request", 900144),
        ({"scope": "openid api://unknown-api/read"}, "invalid_resource", 500011),
        ({"prompt": "sometimes"}, "invalid_request", 9002313),
    ],
    ids=["plain-pkce", "no-pkce", "short-challenge", "implicit", "no-response-type", "no-scope", "unknown-resource",
         "bad-prompt"],
)  # fmt: skip
def test_other_authorize_errors_go_back_to_the_client_with_state(
    entra: RunningEntra, form_browser: httpx.Client, params: dict[str, str], error: str, code: int
) -> None:
    response = form_browser.get(_authorize_url(entra, **params))
    assert response.status_code == 302
    assert response.headers["location"].startswith(REDIRECT_URI + "?")
    fields = authorization_response(response)
    assert fields["error"] == error
    assert fields["error_description"].startswith(f"AADSTS{code}: ")
    assert fields["state"] == "the-state"


def test_errors_use_the_requested_response_mode(entra: RunningEntra, form_browser: httpx.Client) -> None:
    response = form_browser.get(_authorize_url(entra, response_mode="form_post", response_type="token"))
    assert response.status_code == 200
    fields = authorization_response(response)
    assert fields["error"] == "unsupported_response_type" and fields["state"] == "the-state"


def test_plain_pkce_is_allowed_when_the_app_does_not_require_s256(
    entra: RunningEntra, form_browser: httpx.Client, api: httpx.Client
) -> None:
    verifier = secrets.token_urlsafe(43)
    url = _authorize_url(
        entra, segment=CONTOSO.id, client_id=SINGLE_TENANT_CLIENT_ID, code_challenge=verifier,
        code_challenge_method="plain",
    )  # fmt: skip
    fields = authorization_response(choose_account(form_browser, url, ADMIN.upn))
    token = api.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "authorization_code", "client_id": SINGLE_TENANT_CLIENT_ID,
              "client_secret": SINGLE_TENANT_SECRET, "code": fields["code"], "redirect_uri": REDIRECT_URI,
              "code_verifier": verifier},
    )  # fmt: skip
    assert token.status_code == 200, token.text
    assert "id_token" in token.json() and "refresh_token" in token.json()


def test_expired_refresh_token_is_aadsts700082(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, clock: Clock, entra: RunningEntra
) -> None:
    flow, response = _code(connector, form_browser)
    assert "refresh_token" in connector.acquire_token_by_auth_code_flow(flow, response)
    clock.offset = entra.config.refresh_token_lifetime + 1
    account = connector.get_accounts()[0]
    result = connector.acquire_token_silent_with_error(["User.Read"], account=account, force_refresh=True)
    assert result is not None
    _assert_entra_error(result, "invalid_grant", 700082)


def test_refresh_token_of_another_client_is_refused(
    connector: msal.ConfidentialClientApplication, form_browser: httpx.Client, api: httpx.Client, entra: RunningEntra
) -> None:
    flow, response = _code(connector, form_browser)
    refresh_token = connector.acquire_token_by_auth_code_flow(flow, response)["refresh_token"]
    stolen = api.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": SINGLE_TENANT_CLIENT_ID,
              "client_secret": SINGLE_TENANT_SECRET},
    )  # fmt: skip
    assert stolen.status_code == 400
    _assert_entra_error(stolen.json(), "invalid_grant", 70000)
