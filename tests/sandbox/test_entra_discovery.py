"""Sandbox Entra ID discovery: OpenID configuration, keys, instance discovery, and which msal constructions work."""

from __future__ import annotations

import httpx
import jwt
import msal
import pytest

from sandbox.entra import RunningEntra, graph_validation_token
from sandbox.entra.config import GRAPH_CHANGE_NOTIFICATION_PUBLISHER
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO, FABRIKAM
from sandbox.tls import TlsFiles


def _configuration(api: httpx.Client, entra: RunningEntra, segment: str) -> dict[str, object]:
    response = api.get(f"{entra.issuer_host}/{segment}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_tenant_configuration_points_the_browser_at_http_and_the_api_at_https(
    api: httpx.Client, entra: RunningEntra
) -> None:
    config = _configuration(api, entra, CONTOSO.id)
    assert entra.browser_host.startswith("http://") and entra.issuer_host.startswith("https://")
    assert config["issuer"] == f"{entra.issuer_host}/{CONTOSO.id}/v2.0"
    assert config["authorization_endpoint"] == f"{entra.browser_host}/{CONTOSO.id}/oauth2/v2.0/authorize"
    assert config["token_endpoint"] == f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token"
    assert config["jwks_uri"] == f"{entra.issuer_host}/{CONTOSO.id}/discovery/v2.0/keys"
    assert "form_post" in config["response_modes_supported"]  # type: ignore[operator]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    # A verified domain names the same tenant, and the document then speaks of the tenant id.
    assert _configuration(api, entra, CONTOSO.domain)["issuer"] == config["issuer"]


@pytest.mark.parametrize("segment", ["organizations", "common"])
def test_multi_tenant_configuration_has_the_tenantid_placeholder(
    api: httpx.Client, entra: RunningEntra, segment: str
) -> None:
    config = _configuration(api, entra, segment)
    assert config["issuer"] == f"{entra.issuer_host}/{{tenantid}}/v2.0"
    assert config["token_endpoint"] == f"{entra.issuer_host}/{segment}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{entra.browser_host}/{segment}/oauth2/v2.0/authorize"


def test_unknown_tenant_is_aadsts90002(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.get(f"{entra.issuer_host}/nobody.example/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]
    assert body["error_description"].startswith("AADSTS90002: Tenant 'nobody.example' not found.")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= body.keys()


def test_msal_refuses_an_unknown_tenant(entra: RunningEntra, trusted: TlsFiles) -> None:
    with pytest.raises(ValueError, match="double check your tenant"):
        msal.ConfidentialClientApplication(
            CONNECTOR_CLIENT_ID,
            client_credential=CONNECTOR_CLIENT_SECRET,
            authority=entra.authority("99999999-9999-4999-8999-999999999999"),
            instance_discovery=False,
        )


def test_api_answers_on_https_only(entra: RunningEntra) -> None:
    on_browser_port = httpx.get(f"{entra.browser_host}/{CONTOSO.id}/v2.0/.well-known/openid-configuration")
    assert on_browser_port.status_code == 404
    token = httpx.post(f"{entra.browser_host}/{CONTOSO.id}/oauth2/v2.0/token", data={"grant_type": "x"})
    assert token.status_code == 404


def test_keys_are_the_same_for_common_and_every_tenant(api: httpx.Client, entra: RunningEntra) -> None:
    common = api.get(f"{entra.issuer_host}/common/discovery/v2.0/keys").json()
    tenant = api.get(f"{entra.issuer_host}/{FABRIKAM.id}/discovery/v2.0/keys").json()
    assert common == tenant
    (key,) = common["keys"]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["kid"] == key["x5t"] and key["x5c"]


@pytest.mark.parametrize(
    "construction",
    [
        {"authority": "{host}/{tenant}", "instance_discovery": False},
        {"authority": "{host}/{tenant}", "validate_authority": False},
        {"oidc_authority": "{host}/{tenant}/v2.0"},
    ],
    ids=["authority+instance_discovery=False", "authority+validate_authority=False", "oidc_authority"],
)
@pytest.mark.parametrize("tenant", [CONTOSO.id, "organizations"])
def test_msal_constructions_that_work_offline(
    entra: RunningEntra, trusted: TlsFiles, construction: dict[str, object], tenant: str
) -> None:
    """These constructions never call login.microsoftonline.com's instance discovery for our host."""
    options = {
        key: value.format(host=entra.issuer_host, tenant=tenant) if isinstance(value, str) else value
        for key, value in construction.items()
    }
    app = msal.ConfidentialClientApplication(CONNECTOR_CLIENT_ID, client_credential=CONNECTOR_CLIENT_SECRET, **options)
    flow = app.initiate_auth_code_flow(
        ["User.Read"], redirect_uri="http://localhost:7071/api/portal/signin/callback", response_mode="form_post"
    )
    assert flow["auth_uri"].startswith(f"{entra.browser_host}/{tenant}/oauth2/v2.0/authorize?")


def test_instance_discovery_document_for_msal(api: httpx.Client, entra: RunningEntra) -> None:
    authorize = f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/authorize"
    body = api.get(
        f"{entra.issuer_host}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": authorize},
    ).json()
    assert (
        body["tenant_discovery_endpoint"] == f"{entra.issuer_host}/{CONTOSO.id}/v2.0/.well-known/openid-configuration"
    )
    assert body["metadata"][0]["aliases"] == ["127.0.0.1"]
    foreign = api.get(
        f"{entra.issuer_host}/common/discovery/instance",
        params={"api-version": "1.1", "authorization_endpoint": "https://elsewhere.example/x/oauth2/v2.0/authorize"},
    )
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_instance"


def test_graph_validation_tokens_verify_against_the_common_keys(api: httpx.Client, entra: RunningEntra) -> None:
    token = graph_validation_token(entra.issuer, tenant_id=CONTOSO.id, app_id=CONNECTOR_CLIENT_ID)
    jwks = jwt.PyJWKClient(f"{entra.issuer_host}/common/discovery/v2.0/keys")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=CONNECTOR_CLIENT_ID,
        issuer=f"https://sts.windows.net/{CONTOSO.id}/",
    )
    assert claims["appid"] == GRAPH_CHANGE_NOTIFICATION_PUBLISHER
    assert claims["tid"] == CONTOSO.id
    assert claims["exp"] - claims["iat"] == 3600
