"""Response headers and error pages: the validation handshake's echo is inert text, HTML gets HSTS on https,
and a failed approver EHR sign-in shows (escaped, cleaned, bounded) and logs what the EHR said."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import httpx
import pytest

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from shared.jose.keys import signing_keys_from
from tests.functions.portal_support import Tenant, call, configuration_form, new_tenant, text
from tests.security.edge_world import client, world  # noqa: F401 - fixture
from tests.support.fake_ehr import FakeEhr, running_fake_ehr
from tests.support.launch_world import LaunchWorld

pytestmark = pytest.mark.azurite

HOSTILE_TOKEN = "<html><script>alert(document.cookie)</script></html>"


@pytest.mark.parametrize("path", ["/api/graph/notifications", "/api/graph/lifecycle"])
def test_the_validation_handshake_echo_cannot_be_sniffed_or_run(world: LaunchWorld, path: str) -> None:  # noqa: F811
    with client(world) as http:
        response = http.post(path, params={"validationToken": HOSTILE_TOKEN}, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200 and response.text == HOSTILE_TOKEN  # Graph's rule: the token, unmodified
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'"


@pytest.fixture
def https_public(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://connector.contoso.example")
    reset_services()
    yield
    reset_services()


def test_html_pages_and_redirects_get_hsts_when_the_connector_is_served_over_https(https_public: None) -> None:
    page = call(portal.dashboard, "GET", "portal")
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    redirect = call(portal.configuration, "GET", "portal/configurations/x", route={"id": "x"})
    assert redirect.status_code == 303 and "Strict-Transport-Security" in redirect.headers


def test_no_hsts_over_plain_http(world: LaunchWorld) -> None:  # noqa: F811 - the world serves http://127.0.0.1
    with client(world) as http:
        assert "strict-transport-security" not in http.get("/api/portal").headers


# --- a failed approver EHR sign-in --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ehr(base_env: dict[str, str]) -> Iterator[FakeEhr]:
    with running_fake_ehr(signing_keys_from(base_env["SIGNING_KEYS"]).jwks) as server:
        yield server


@pytest.fixture
def tenant(env: dict[str, str]) -> Iterator[Tenant]:
    reset_services()
    yield new_tenant()
    reset_services()


def started_ehr_signin(tenant: Tenant, ehr: FakeEhr) -> tuple[str, str]:
    """(configuration id, state) of an approver's EHR sign-in that the EHR will answer with an error."""
    url = f"{ehr.base}/failure-{tenant.id[:8]}/api/FHIR/R4"
    form = {"csrf": tenant.admin.csrf_token, "rows": "1", "action": "save", **configuration_form(url, prefix="c0-")}
    assert (
        call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form).status_code
        == 303
    )
    config_id = services().configurations.list_for_tenant(tenant.id)[0].id
    started = call(
        portal.start_ehr_signin,
        "POST",
        "x",
        session=tenant.approver,
        form={"csrf": tenant.approver.csrf_token},
        route={"id": config_id},
    )
    assert started.status_code == 303, text(started)
    return config_id, dict(httpx.URL(started.headers["Location"]).params)["state"]


def test_a_failed_ehr_sign_in_shows_the_ehrs_description_cleaned_and_logs_the_correlation_id(
    tenant: Tenant, ehr: FakeEhr, caplog: pytest.LogCaptureFixture
) -> None:
    _, state = started_ehr_signin(tenant, ehr)
    description = "The user\x07 declined\r\n access <script>alert(1)</script>" + "x" * 1000
    query = {"state": state, "error": "access_denied", "error_description": description}
    with caplog.at_level(logging.INFO):
        page = call(portal.ehr_callback, "GET", "portal/ehr/callback", session=tenant.approver, params=query)
    body = text(page)
    assert page.status_code == 502
    assert "access_denied" in body  # the control character hides nothing
    assert "The user declined access &lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body and "\x07" not in body and "x" * 301 not in body
    correlation = page.headers["x-correlation-id"]
    assert correlation in body
    logged = [r.getMessage() for r in caplog.records if correlation in r.getMessage()]
    assert logged and "access_denied" in logged[0] and "The user declined" in logged[0]
    assert not any("\x07" in r.getMessage() or "\n" in r.getMessage() for r in caplog.records)


def test_an_error_code_with_control_characters_still_shows_its_code(tenant: Tenant, ehr: FakeEhr) -> None:
    _, state = started_ehr_signin(tenant, ehr)
    query = {"state": state, "error": "invalid_scope\x00\n", "error_description": "\x1b[31mred\x1b[0m"}
    body = text(call(portal.ehr_callback, "GET", "portal/ehr/callback", session=tenant.approver, params=query))
    assert re.search(r"OAuth2 error from the EHR: invalid_scope\b", body)
    assert "\x1b" not in body and "\x00" not in body
