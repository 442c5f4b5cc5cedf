"""The sandbox EHR's vendor flavours serve what each vendor documents (``sandbox/ehr/flavours.py``): where the FHIR
base and the authorization server live, what discovery names, and which vendor-only APIs exist. The token response
and id_token of each flavour are exercised end to end by ``tests/integration/test_launch_ehr.py``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sandbox.ehr.app import create_app
from sandbox.ehr.config import SCS_PATH, EhrConfig
from sandbox.ehr.flavours import FLAVOURS, ORACLE_TENANT
from sandbox.server import ServerThread, free_port

PORT = free_port()
ORIGIN = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def ehr(request: pytest.FixtureRequest) -> Iterator[tuple[EhrConfig, httpx.Client]]:
    """One flavour at a time, over real HTTP on the same origin (so the documents name it)."""
    config = EhrConfig(base_url=ORIGIN, flavour=request.param)
    server = ServerThread(create_app(config), port=PORT).start()
    try:
        with httpx.Client(base_url=ORIGIN) as http:
            yield config, http
    finally:
        server.stop()


def test_discovery_names_the_flavours_endpoints(ehr: tuple[EhrConfig, httpx.Client]) -> None:
    config, http = ehr
    document = http.get(config.fhir_base.removeprefix(ORIGIN) + "/.well-known/smart-configuration").json()
    assert (document["authorization_endpoint"], document["token_endpoint"], document["jwks_uri"]) == (
        config.authorize_url,
        config.token_url,
        config.jwks_url,
    )
    assert "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    if config.flavour == "oracle":  # the tenant in every path; Oracle's discovery names no issuer
        assert config.fhir_base == f"{ORIGIN}/r4/{ORACLE_TENANT}"
        assert document["authorization_endpoint"] == (
            f"{ORIGIN}/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/personas/provider/authorize"
        )
        assert document["token_endpoint"] == (
            f"{ORIGIN}/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/token"
        )
        assert document["jwks_uri"] == f"{ORIGIN}/jwk" and "issuer" not in document
        assert document["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
        assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    else:
        assert document["issuer"] == config.issuer


def test_every_flavour_serves_an_r4_capability_statement_and_its_keys(ehr: tuple[EhrConfig, httpx.Client]) -> None:
    config, http = ehr
    metadata = http.get(
        config.fhir_base.removeprefix(ORIGIN) + "/metadata", headers={"Accept": "application/fhir+json"}
    )
    assert metadata.json()["fhirVersion"] == "4.0.1"
    keys = http.get(config.jwks_url.removeprefix(ORIGIN)).json()["keys"]
    assert len(keys) == 1 and ("kid" in keys[0]) is (config.flavour != "smart")  # the plain server's key has no kid
    openid = http.get(config.issuer.removeprefix(ORIGIN) + "/.well-known/openid-configuration").json()
    assert openid["issuer"] == config.issuer


def test_only_epic_has_set_external_connection_status(ehr: tuple[EhrConfig, httpx.Client]) -> None:
    config, http = ehr
    # Epic: the service exists (and wants a backend token); elsewhere there is no such API.
    assert http.get(SCS_PATH).status_code == (401 if config.flavour == "epic" else 404)


def test_an_unknown_flavour_fails_at_once() -> None:
    with pytest.raises(ValueError, match="unknown EHR flavour"):
        EhrConfig(base_url=ORIGIN, flavour="meditech")
