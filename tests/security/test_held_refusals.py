"""The refusals the hostile review found holding, kept held: each tried once more through the real HTTP surface
of the local Functions host (the detailed cases live in tests/functions, tests/integration and tests/unit).

iss allow-list before any outbound request, SSRF checks on FHIR URLs, single-use state, CSRF on forms, HTML
escaping, visit tokens, webhook clientState and validationTokens.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from connector.services import services
from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Vendor, WritebackMode
from shared.kernel.settings import Geography
from shared.microsoft.notifications import ClientStates, SubscriptionTarget
from shared.visits.events import Role
from shared.visits.tokens import VisitTokens
from tests.functions.portal_support import configuration_form
from tests.security.edge_world import client, new_session, session_cookie, world  # noqa: F401 - fixture
from tests.support.launch_world import SMITH, LaunchWorld

pytestmark = pytest.mark.azurite


def test_a_launch_from_an_unapproved_iss_makes_no_outbound_request(
    world: LaunchWorld,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    real = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(str(host))
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    before = world.ehr_requests()
    with client(world) as http:
        response = http.get(
            f"/api/launch/{world.configuration.id}/provider",
            params={"iss": "https://attacker.example/api/FHIR/R4", "launch": "x" * 20},
        )
    assert 400 <= response.status_code < 500
    assert "attacker.example" not in asked and world.ehr_requests()[len(before) :] == []


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.7/api/FHIR/R4",
        "http://ehr.contoso.example/api/FHIR/R4",
        "https://user:pw@ehr.contoso.example/api/FHIR/R4",
    ],
)
def test_a_fhir_url_pointing_inside_is_refused_before_any_request(world: LaunchWorld, url: str) -> None:  # noqa: F811
    admin = new_session(upn="admin@contoso.example", admin=True)
    form = {"csrf": admin.csrf_token, "rows": "1", "action": "save", **configuration_form(url, prefix="c0-")}
    with client(world) as http:
        response = http.post("/api/portal/configurations", data=form, headers=session_cookie(admin))
    assert response.status_code == 400
    assert "FHIR URL isn&#39;t valid" in response.text
    assert services().configurations.list_for_tenant(admin.user.tenant_id) == []


def state_of(response: Any) -> str:
    """The ``state`` the connector sent to the EHR (a redirect, or an auto-submitting POST form)."""
    if response.status_code in (302, 303):
        return str(parse_qs(urlsplit(response.headers["location"]).query)["state"][0])
    found = re.search(r'name="state" value="([^"]+)"', response.text)
    assert found, response.text
    return found.group(1)


def test_the_launch_state_is_single_use(world: LaunchWorld, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    appointment = next(v for v in world.ehr.clinic.visits if v.practitioner_id == SMITH).appointment_id
    launch = world.launch_url("provider", appointment, SMITH)
    with client(world) as http, caplog.at_level(logging.INFO, logger="connector.web"):
        state = state_of(http.get(launch.replace(world.url, "")))
        first = http.get("/api/launch/callback", params={"state": state, "code": "not-a-real-code"})
        replay = http.get("/api/launch/callback", params={"state": state, "code": "not-a-real-code"})
    assert first.status_code != 200
    # A used state names no audience: words a patient may read; the log tells a reuse from an unknown state.
    assert replay.status_code == 400 and "This link has expired" in replay.text
    assert "StateError state_reused" in caplog.text


def test_portal_forms_need_the_sessions_csrf_token(world: LaunchWorld) -> None:  # noqa: F811
    admin = new_session(upn="admin@contoso.example", admin=True)
    other = new_session(upn="admin@fabrikam.example", admin=True)
    form = {
        "rows": "1",
        "action": "save",
        **configuration_form("https://ehr.contoso.example/api/FHIR/R4", prefix="c0-"),
    }
    with client(world) as http:
        for csrf in (None, "forged", other.csrf_token):
            data = form if csrf is None else {**form, "csrf": csrf}
            response = http.post("/api/portal/configurations", data=data, headers=session_cookie(admin))
            assert response.status_code == 403 and "did not come from this site" in response.text
        signout = http.post("/api/portal/signout", data={"csrf": "forged"}, headers=session_cookie(admin))
    assert signout.status_code == 403


def test_stored_text_is_escaped_in_pages(world: LaunchWorld) -> None:  # noqa: F811
    admin = new_session(upn="admin@contoso.example", admin=True)
    data = ConfigurationInput(
        organization='<script>alert("x")</script>',
        fhir_base_url=f"https://ehr-{uuid.uuid4().hex[:6]}.contoso.example/api/FHIR/R4",
        environment=Environment.TEST,
        approver_upn="analyst@contoso.example",
        geography=Geography.AMERICAS,
        vendor=Vendor.EPIC,
        provider_client_id="p",
        patient_client_id="q",
        writeback_mode=WritebackMode.EPIC,
    )
    services().configurations.create(cfg.new_configuration(admin.user.tenant_id, data, by="a", now=datetime.now(UTC)))
    with client(world) as http:
        page = http.get("/api/portal", headers=session_cookie(admin))
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert '<script>alert("x")' not in page.text


def test_visit_pages_need_a_valid_token_for_that_very_visit(world: LaunchWorld) -> None:  # noqa: F811
    key = uuid.uuid4().hex
    tokens = VisitTokens(world.settings.connector_secret.reveal())
    other_visit = tokens.issue(geography=Geography.AMERICAS, key="f" * 32, role=Role.PROVIDER, configuration_id="c")
    forged = VisitTokens("not-our-secret-" * 3).issue(
        geography=Geography.AMERICAS, key=key, role=Role.PROVIDER, configuration_id="c"
    )
    with client(world) as http:
        for token in ("", "garbage", other_visit, forged):
            assert http.get(f"/api/visits/{key}", params={"t": token}).status_code == 403
            assert http.get(f"/api/visits/{key}/presence", params={"t": token}).status_code == 403


def test_the_webhook_drops_foreign_client_states_and_refuses_forged_validation_tokens(
    world: LaunchWorld,  # noqa: F811
) -> None:
    tenant = world.configuration.tenant_id
    foreign = {"value": [{"subscriptionId": "s", "clientState": "guess", "tenantId": tenant, "changeType": "updated"}]}
    target = SubscriptionTarget(Geography.AMERICAS, "k" * 64, str(uuid.uuid4()), world.configuration.id)
    ours = ClientStates(world.settings.graph_client_state.reveal()).issue(target)
    item = {"subscriptionId": "s", "clientState": ours, "tenantId": tenant, "encryptedContent": {}}
    with client(world) as http:
        assert http.post("/api/graph/notifications", json=foreign).status_code == 202
        refused = http.post("/api/graph/notifications", json={"value": [item], "validationTokens": ["e30.e30.sig"]})
    assert refused.status_code == 401 and refused.json()["code"] == "invalid_validation_token"
