"""The sandbox EHR's vendor flavours serve what each vendor documents (``sandbox/ehr/flavours.py``): where the FHIR
base and the authorization server live, what discovery names, and which vendor-only APIs exist. The token response
and id_token of each flavour are exercised end to end by ``tests/integration/test_launch_ehr.py``."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from sandbox.ehr.app import create_app
from sandbox.ehr.config import SCS_PATH, EhrConfig
from sandbox.ehr.flavours import FLAVOURS, ORACLE_TENANT

ORIGIN = "http://testserver"


def client(flavour: str) -> TestClient:
    return TestClient(create_app(EhrConfig(base_url=ORIGIN, flavour=flavour)))


def test_oracle_puts_the_tenant_in_the_fhir_base_and_the_authorization_server() -> None:
    config = EhrConfig(base_url=ORIGIN, flavour="oracle")
    assert config.fhir_base == f"{ORIGIN}/r4/{ORACLE_TENANT}"
    document = client("oracle").get(f"/r4/{ORACLE_TENANT}/.well-known/smart-configuration").json()
    assert "issuer" not in document  # Oracle's discovery names no issuer
    assert document["authorization_endpoint"] == (
        f"{ORIGIN}/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/personas/provider/authorize"
    )
    assert document["token_endpoint"] == f"{ORIGIN}/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/token"
    assert document["jwks_uri"] == f"{ORIGIN}/jwk"
    assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_every_flavour_serves_an_r4_capability_statement_and_its_keys(flavour: str) -> None:
    config = EhrConfig(base_url=ORIGIN, flavour=flavour)
    http = client(flavour)
    metadata = http.get(
        config.fhir_base.removeprefix(ORIGIN) + "/metadata", headers={"Accept": "application/fhir+json"}
    )
    assert metadata.json()["fhirVersion"] == "4.0.1"
    keys = http.get(config.jwks_url.removeprefix(ORIGIN)).json()["keys"]
    assert len(keys) == 1 and ("kid" in keys[0]) is (flavour != "smart")  # the plain server's one key has no kid
    openid = http.get(config.issuer.removeprefix(ORIGIN) + "/.well-known/openid-configuration").json()
    assert openid["issuer"] == config.issuer


@pytest.mark.parametrize(("flavour", "status"), [("epic", 401), ("oracle", 404), ("smart", 404)])
def test_only_epic_has_set_external_connection_status(flavour: str, status: int) -> None:
    assert client(flavour).get(SCS_PATH).status_code == status


def test_an_unknown_flavour_fails_at_once() -> None:
    with pytest.raises(ValueError, match="unknown EHR flavour"):
        EhrConfig(base_url=ORIGIN, flavour="meditech")
