"""The sandbox EHR's vendor flavours serve what each vendor documents (``sandbox/ehr/flavours.py``): where the FHIR
base and the authorization server live, what discovery names, and which vendor-only APIs exist. The token response
and id_token of each flavour are exercised end to end by ``tests/integration/test_launch_ehr.py``."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sandbox.ehr.app import create_app, sandbox_of
from sandbox.ehr.config import SCS_PATH, EhrConfig, RegisteredClient
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


def test_oracle_serves_patients_from_a_patient_access_root_of_the_same_tenant(
    ehr: tuple[EhrConfig, httpx.Client],
) -> None:
    config, http = ehr
    if config.flavour != "oracle":  # one FHIR base serves provider and patient launches alike
        assert config.patient_fhir_base == config.fhir_base and config.fhir_bases == (config.fhir_base,)
        return
    patient = config.patient_fhir_base
    assert patient == f"{ORIGIN}/myrecord/r4/{ORACLE_TENANT}" != config.fhir_base  # the same tenant id, last
    path = patient.removeprefix(ORIGIN)
    document = http.get(f"{path}/.well-known/smart-configuration").json()
    assert document["authorization_endpoint"] == (
        f"{ORIGIN}/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/personas/patient/authorize"
    )
    assert (
        document["token_endpoint"] == config.token_url
        and "private_key_jwt" in document["token_endpoint_auth_methods_supported"]
    )
    metadata = http.get(f"{path}/metadata", headers={"Accept": "application/fhir+json"}).json()
    assert metadata["fhirVersion"] == "4.0.1" and metadata["implementation"]["url"] == patient


def test_a_launchs_aud_must_be_the_root_it_was_issued_with() -> None:
    """A patient launch issued with the patient-access root as iss is refused when the app names the provider root
    as aud (and the other way round): the authorization server checks aud against the launch's own root."""
    client = RegisteredClient("patient-app", redirect_uris=("https://app.example/cb",), client_secret="s")
    port = free_port()
    config = EhrConfig(base_url=f"http://127.0.0.1:{port}", flavour="oracle", clients=(client,))
    app = create_app(config)
    ehr = sandbox_of(app)
    record = ehr.add_record(
        name="portal",
        kind="patient",
        launch_url="https://app.example/launch",
        context_tokens="",
        client_id="patient-app",
    )
    visit = next(v for v in ehr.clinic.visits if v.patient_id == "e-pat-patel")
    server = ServerThread(app, port=port).start()
    try:
        with httpx.Client(base_url=config.origin) as http:
            for aud, refused in ((config.fhir_base, True), (config.patient_fhir_base, False)):
                launch_url = ehr.create_launch(record.id, visit.appointment_id, "e-pat-patel")
                query = parse_qs(urlsplit(launch_url).query)
                assert query["iss"] == [config.patient_fhir_base]
                answer = http.get(
                    config.spec.patient_authorize_path,
                    params={
                        "response_type": "code",
                        "client_id": "patient-app",
                        "redirect_uri": "https://app.example/cb",
                        "scope": "launch openid fhirUser patient/Patient.read",
                        "state": "st",
                        "aud": aud,
                        "launch": query["launch"][0],
                        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                        "code_challenge_method": "S256",
                    },
                    follow_redirects=False,
                )
                back = parse_qs(urlsplit(answer.headers["location"]).query)
                assert ("error" in back) is refused and ("code" in back) is not refused, back
    finally:
        server.stop()
