"""Fixtures for the sandbox stand-ins: a private TLS CA, a trusted environment, the sandbox Entra ID."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import msal
import pytest

from sandbox.certificates import certificate_pem, private_key_pem, self_signed
from sandbox.entra import AppRegistration, RunningEntra, connector_app, start_entra
from sandbox.entra.config import GRAPH_RESOURCE
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO
from sandbox.tls import TlsFiles, ensure_tls, trust_env

REDIRECT_URI = "http://localhost:7071/api/portal/signin/callback"
SINGLE_TENANT_CLIENT_ID = "44444444-4444-4444-8444-444444444444"
SINGLE_TENANT_SECRET = "single-tenant-secret"
CERTIFICATE_CLIENT_ID = "55555555-5555-4555-8555-555555555555"


class Clock:
    """The Entra stand-in's clock: real time plus an offset a test may move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class ClientCertificate:
    private_key_pem: str
    certificate_pem: str


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """The process trusts the sandbox CA through the standard variables only, as the product would."""
    for key, value in trust_env(tls_files).items():
        monkeypatch.setenv(key, value)
    return tls_files


def make_client_certificate() -> ClientCertificate:
    """A self-signed certificate + key, as an app registration's certificate credential."""
    key, certificate = self_signed("sandbox client certificate", days=1)
    return ClientCertificate(private_key_pem(key), certificate_pem(certificate))


@pytest.fixture(scope="session")
def client_certificate() -> ClientCertificate:
    return make_client_certificate()


@pytest.fixture(scope="session")
def entra_clock() -> Clock:
    return Clock()


@pytest.fixture
def clock(entra_clock: Clock) -> Iterator[Clock]:
    """Move the stand-in's time within one test; it is put back afterwards."""
    yield entra_clock
    entra_clock.offset = 0.0


@pytest.fixture(scope="session")
def entra(tls_files: TlsFiles, entra_clock: Clock, client_certificate: ClientCertificate) -> Iterator[RunningEntra]:
    apps = (
        connector_app(),
        AppRegistration(
            client_id=SINGLE_TENANT_CLIENT_ID,
            display_name="Single-tenant app without the PKCE S256 policy",
            home_tenant_id=CONTOSO.id,
            secrets=(SINGLE_TENANT_SECRET,),
            redirect_uris=(REDIRECT_URI,),
            require_pkce_s256=False,
        ),
        AppRegistration(
            client_id=CERTIFICATE_CLIENT_ID,
            display_name="Certificate-authenticated daemon",
            home_tenant_id=CONTOSO.id,
            certificates=(client_certificate.certificate_pem,),
            application_permissions={GRAPH_RESOURCE: ("OnlineMeetings.ReadWrite.All",)},
        ),
    )
    with start_entra(tls_files, apps=apps, clock=entra_clock) as running:
        yield running


@pytest.fixture
def connector(entra: RunningEntra, trusted: TlsFiles) -> Iterator[msal.ConfidentialClientApplication]:
    """The construction the product uses, identical against real Entra: tenant-independent authority."""
    app = msal.ConfidentialClientApplication(
        CONNECTOR_CLIENT_ID,
        client_credential=CONNECTOR_CLIENT_SECRET,
        authority=entra.authority("organizations"),
        instance_discovery=False,
    )
    yield app
    app.http_client.close()


@pytest.fixture
def form_browser(entra: RunningEntra) -> Iterator[httpx.Client]:
    """A cookie-keeping client for the http browser host (it never follows redirects by itself)."""
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def api(trusted: TlsFiles) -> Iterator[httpx.Client]:
    """An httpx client for the https API; it verifies the sandbox certificate via SSL_CERT_FILE."""
    with httpx.Client(timeout=10) as client:
        yield client
