"""The approver's EHR sign-in against the sandbox EHR: discovery, its sign-in page, private_key_jwt, id_token."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from sandbox.ehr import EhrConfig, RegisteredClient, create_app
from sandbox.server import ServerThread, free_port
from shared.configurations.model import Status
from shared.configurations.repository import ConfigurationRepository
from shared.jose.keys import signing_keys_from
from tests.functions.portal_support import Tenant, call, configuration_form, new_tenant, text
from tests.sandbox.entra_browser import parse_forms

pytestmark = pytest.mark.azurite

CALLBACK = "http://localhost:7071/api/portal/ehr/callback"
PROVIDER_CLIENT = "teams-connector-provider"
PATIENT_CLIENT = "teams-connector-patient"


@pytest.fixture(scope="module")
def ehr(base_env: dict[str, str]) -> Iterator[str]:
    """A sandbox EHR that knows the connector's provider app by its public keys; yields the FHIR base URL."""
    port = free_port()
    jwks = signing_keys_from(base_env["SIGNING_KEYS"]).jwks()
    config = EhrConfig(
        base_url=f"http://127.0.0.1:{port}",
        clients=(
            RegisteredClient(client_id=PROVIDER_CLIENT, redirect_uris=(CALLBACK,), jwks=jwks, name="Teams (provider)"),
            RegisteredClient(client_id="secret-only", redirect_uris=(CALLBACK,), client_secret="s", name="Secret app"),
        ),
    )
    with ServerThread(create_app(config), port=port):
        yield config.fhir_base


@pytest.fixture
def tenant(env: dict[str, str]) -> Iterator[Tenant]:
    reset_services()
    yield new_tenant()
    reset_services()


def submit(tenant: Tenant, fhir_base: str, **overrides: str) -> str:
    form = {
        "csrf": tenant.admin.csrf_token,
        "rows": "1",
        **configuration_form(
            fhir_base,
            prefix="c0-",
            **{"provider_client_id": PROVIDER_CLIENT, "patient_client_id": PATIENT_CLIENT, **overrides},
        ),
    }
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 303, text(response)
    [config] = ConfigurationRepository(services().storage.app).list_for_tenant(tenant.id)
    return config.id


def ehr_sign_in(tenant: Tenant, config_id: str, *, choose: str = "user") -> object:
    """Press "Sign in to EHR", pick the first clinician on the EHR's page (or cancel), return our callback's answer."""
    started = call(
        portal.start_ehr_signin,
        "POST",
        "x",
        session=tenant.approver,
        form={"csrf": tenant.approver.csrf_token},
        route={"id": config_id},
    )
    assert started.status_code == 303, text(started)
    with httpx.Client() as browser:
        page = browser.get(started.headers["Location"])
        assert page.status_code == 200, page.text
        [form] = parse_forms(page.text)
        button = next(b for b in form.buttons if b.get("name") == choose)
        answer = browser.post(urljoin(str(page.url), form.action), data={**form.inputs, choose: button["value"]})
    assert answer.status_code in (302, 303, 307), answer.text
    params = dict(httpx.URL(answer.headers["location"]).params)
    return call(portal.ehr_callback, "GET", "portal/ehr/callback", session=tenant.approver, params=params)


def test_the_sandbox_ehr_url_passes_validation_and_the_approver_proves_and_approves_it(
    tenant: Tenant, ehr: str
) -> None:
    config_id = submit(tenant, ehr)
    done = ehr_sign_in(tenant, config_id)
    assert done.status_code == 303, text(done)  # type: ignore[attr-defined]
    approve = call(
        portal.approve,
        "POST",
        "x",
        session=tenant.approver,
        form={"csrf": tenant.approver.csrf_token},
        route={"id": config_id},
    )
    assert approve.status_code == 303, text(approve)
    config = ConfigurationRepository(services().storage.app).get(tenant.id, config_id)
    assert config.status is Status.APPROVED and config.ehr_signin is not None


def test_cancelling_at_the_ehr_shows_the_oauth_error(tenant: Tenant, ehr: str) -> None:
    config_id = submit(tenant, ehr)
    response = ehr_sign_in(tenant, config_id, choose="action")
    assert response.status_code == 502  # type: ignore[attr-defined]
    assert "OAuth2 error from the EHR: access_denied" in text(response)


def test_a_client_the_ehr_knows_only_by_secret_fails_client_authentication(tenant: Tenant, ehr: str) -> None:
    config_id = submit(tenant, ehr, provider_client_id="secret-only")
    response = ehr_sign_in(tenant, config_id)
    assert response.status_code == 502  # type: ignore[attr-defined]
    assert "OAuth2 error from the EHR: invalid_client" in text(response)
    assert ConfigurationRepository(services().storage.app).get(tenant.id, config_id).ehr_signin is None
