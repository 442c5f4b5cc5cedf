"""Client credentials: app-only Graph tokens with the granted application permissions as roles."""

from __future__ import annotations

import httpx
import msal
import pytest

from sandbox.entra import RunningEntra
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO, FABRIKAM
from sandbox.tls import TlsFiles
from tests.sandbox.conftest import CERTIFICATE_CLIENT_ID, ClientCertificate, make_client_certificate

GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]


def _app(entra: RunningEntra, tenant: str, credential: object = CONNECTOR_CLIENT_SECRET,
         client_id: str = CONNECTOR_CLIENT_ID) -> msal.ConfidentialClientApplication:  # fmt: skip
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=entra.authority(tenant), instance_discovery=False
    )


@pytest.mark.parametrize("tenant_id", [CONTOSO.id, FABRIKAM.id], ids=["home", "other-consented-tenant"])
def test_graph_token_carries_roles_and_the_service_principal(
    entra: RunningEntra, trusted: TlsFiles, tenant_id: str
) -> None:
    app = _app(entra, tenant_id)
    result = app.acquire_token_for_client(GRAPH_DEFAULT)
    assert result["token_source"] == "identity_provider" and result["token_type"] == "Bearer"
    claims = entra.issuer.verify(
        result["access_token"], audience="https://graph.microsoft.com", issuer=f"https://sts.windows.net/{tenant_id}/"
    )
    assert claims["roles"] == ["OnlineMeetings.ReadWrite.All", "User.Read.All"]
    assert claims["tid"] == tenant_id
    assert claims["idtyp"] == "app"
    assert claims["appid"] == CONNECTOR_CLIENT_ID and claims["appidacr"] == "1"
    registration = entra.config.app(CONNECTOR_CLIENT_ID)
    assert registration is not None
    assert claims["oid"] == claims["sub"] == registration.service_principal_id(tenant_id)
    assert claims["ver"] == "1.0"
    assert app.acquire_token_for_client(GRAPH_DEFAULT)["token_source"] == "cache"
    app.http_client.close()


def test_certificate_client_assertion(
    entra: RunningEntra, trusted: TlsFiles, client_certificate: ClientCertificate
) -> None:
    credential = {
        "private_key": client_certificate.private_key_pem,
        "public_certificate": client_certificate.certificate_pem,
    }
    app = _app(entra, CONTOSO.id, credential, CERTIFICATE_CLIENT_ID)
    result = app.acquire_token_for_client(GRAPH_DEFAULT)
    assert "error" not in result, result
    claims = entra.issuer.verify(result["access_token"], audience="https://graph.microsoft.com")
    assert claims["appid"] == CERTIFICATE_CLIENT_ID and claims["appidacr"] == "2"
    assert claims["roles"] == ["OnlineMeetings.ReadWrite.All"]
    app.http_client.close()


def test_assertion_signed_by_an_unregistered_key_is_refused(
    entra: RunningEntra, trusted: TlsFiles, client_certificate: ClientCertificate
) -> None:
    other = make_client_certificate()
    assert other.certificate_pem != client_certificate.certificate_pem
    credential = {"private_key": other.private_key_pem, "public_certificate": other.certificate_pem}
    app = _app(entra, CONTOSO.id, credential, CERTIFICATE_CLIENT_ID)
    result = app.acquire_token_for_client(GRAPH_DEFAULT)
    assert result["error"] == "invalid_client" and result["error_codes"] == [700027]
    app.http_client.close()


def test_client_credentials_need_a_tenant(api: httpx.Client, entra: RunningEntra) -> None:
    response = api.post(
        f"{entra.issuer_host}/organizations/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CONNECTOR_CLIENT_ID,
              "client_secret": CONNECTOR_CLIENT_SECRET, "scope": GRAPH_DEFAULT[0]},
    )  # fmt: skip
    assert response.status_code == 400 and response.json()["error_codes"] == [50059]


@pytest.mark.parametrize(
    ("scope", "error", "code"),
    [
        ("https://graph.microsoft.com/User.Read.All", "invalid_scope", 1002012),
        ("https://unknown.example/.default", "invalid_resource", 500011),
    ],
)
def test_client_credentials_scope_must_be_a_known_resource_default(
    entra: RunningEntra, trusted: TlsFiles, scope: str, error: str, code: int
) -> None:
    app = _app(entra, CONTOSO.id)
    result = app.acquire_token_for_client([scope])
    assert result["error"] == error and result["error_codes"] == [code]
    app.http_client.close()
