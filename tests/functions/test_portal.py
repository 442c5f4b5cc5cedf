"""The configuration portal, called as the Functions host calls it, over Azurite and a small SMART server."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import azure.functions as func
import httpx
import pytest

from connector import portal, wellknown
from connector.services import reset as reset_services
from connector.services import services
from shared.configurations import model as cfg
from shared.configurations.model import Configuration, Status
from shared.kernel.settings import Geography
from shared.portal.service import to_input
from shared.portal.sessions import PortalSession
from tests.functions.portal_support import (
    Tenant,
    call,
    configuration_form,
    new_tenant,
    repository,
    text,
)
from tests.support.fake_ehr import FakeEhr

pytestmark = pytest.mark.azurite


@pytest.fixture
def tenant(env: dict[str, str]) -> Iterator[Tenant]:
    reset_services()
    yield new_tenant()
    reset_services()


def create(tenant: Tenant, *urls: str, **overrides: str) -> list[str]:
    form = {"csrf": tenant.admin.csrf_token, "rows": str(len(urls)), "action": "save"}
    for index, url in enumerate(urls):
        environment = "production" if "prod" in url else "test"
        form.update(configuration_form(url, prefix=f"c{index}-", environment=environment, **overrides))
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 303, text(response)
    stored = repository().list_for_tenant(tenant.id)
    return [next(c.id for c in stored if c.fhir_base_url == url.rstrip("/")) for url in urls]


def ehr_signin(tenant: Tenant, configuration_id: str, *, lang: str | None = None) -> httpx.Response:
    """Press "Sign in to EHR" (on a page in ``lang``, chosen with the switch), follow the browser to the EHR and
    back; return the EHR's redirect."""
    started = call(
        portal.start_ehr_signin,
        "POST",
        f"portal/configurations/{configuration_id}/ehr-signin" + (f"?lang={lang}" if lang else ""),
        session=tenant.approver,
        form={"csrf": tenant.approver.csrf_token},
        route={"id": configuration_id},
    )
    assert started.status_code == 303, text(started)
    return httpx.get(started.headers["Location"], follow_redirects=False)


def callback(tenant: Tenant, ehr_answer: httpx.Response) -> object:
    query = dict(httpx.URL(ehr_answer.headers["location"]).params)
    return call(portal.ehr_callback, "GET", "portal/ehr/callback", session=tenant.approver, params=query)


def approve(tenant: Tenant, configuration_id: str, *, as_admin: bool = False, csrf: str | None = None) -> object:
    session = tenant.admin if as_admin else tenant.approver
    return call(
        portal.approve,
        "POST",
        f"portal/configurations/{configuration_id}/approve",
        session=session,
        form={"csrf": session.csrf_token if csrf is None else csrf},
        route={"id": configuration_id},
    )


# --- sign-in and dashboard -----------------------------------------------------------------


def test_without_a_session_the_portal_offers_microsoft_sign_in(env: dict[str, str]) -> None:
    response = call(portal.dashboard, "GET", "portal")
    assert response.status_code == 200
    assert 'href="/api/portal/signin"' in text(response)


@pytest.mark.parametrize(
    ("handler", "method"),
    [
        (portal.new_configurations, "GET"), (portal.create_configurations, "POST"), (portal.configuration, "GET"),
        (portal.update_configuration, "POST"), (portal.confirm_delete, "GET"), (portal.delete_configuration, "POST"),
        (portal.share, "POST"), (portal.unshare, "POST"), (portal.start_ehr_signin, "POST"),
        (portal.ehr_callback, "GET"), (portal.approve, "POST"), (portal.records, "GET"), (portal.records_text, "GET"),
    ],
)  # fmt: skip
def test_pages_behind_sign_in_redirect_to_the_portal(tenant: Tenant, handler: Any, method: str) -> None:
    config = approved_in_storage(tenant)
    response = call(handler, method, "x", route={"id": config.id, "tenant": tenant.id}, form={"confirm": "yes"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/api/portal?notice=signin-required"
    assert repository().get(tenant.id, config.id) == config  # nothing changed


def test_signout_deletes_the_session_and_clears_the_cookie(tenant: Tenant) -> None:
    response = call(
        portal.signout, "POST", "portal/signout", session=tenant.member, form={"csrf": tenant.member.csrf_token}
    )
    assert response.status_code == 303
    assert "Max-Age=0" in response.headers["Set-Cookie"] and "HttpOnly" in response.headers["Set-Cookie"]
    after = call(portal.dashboard, "GET", "portal", session=tenant.member)
    assert 'href="/api/portal/signin"' in text(after)


# --- submission ----------------------------------------------------------------------------


def test_admin_adds_a_test_and_a_production_url_in_one_form(tenant: Tenant, ehr: FakeEhr) -> None:
    test_id, prod_id = create(tenant, f"{ehr.base}/test/api/FHIR/R4", f"{ehr.base}/prod/api/FHIR/R4/")
    stored = {c.id: c for c in repository().list_for_tenant(tenant.id)}
    assert stored[test_id].environment.value == "test" and stored[prod_id].environment.value == "production"
    assert all(c.status is Status.PENDING for c in stored.values())
    assert stored[prod_id].fhir_base_url == f"{ehr.base}/prod/api/FHIR/R4"
    page = text(call(portal.dashboard, "GET", "portal", session=tenant.admin))
    assert page.count("Pending approval") == 2


def test_the_add_form_grows_without_javascript(tenant: Tenant, ehr: FakeEhr) -> None:
    form = {
        "csrf": tenant.admin.csrf_token,
        "rows": "1",
        "action": "add-row",
        **configuration_form(f"{ehr.base}/a/api/FHIR/R4", prefix="c0-"),
    }
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 200
    page = text(response)
    assert 'name="c1-fhir_base_url"' in page and f'value="{ehr.base}/a/api/FHIR/R4"' in page
    assert repository().list_for_tenant(tenant.id) == []


def test_a_non_admin_cannot_submit(tenant: Tenant, ehr: FakeEhr) -> None:
    form = {
        "csrf": tenant.approver.csrf_token,
        "rows": "1",
        **configuration_form(f"{ehr.base}/x/api/FHIR/R4", prefix="c0-"),
    }
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.approver, form=form)
    assert response.status_code == 403
    assert "Global Administrator" in text(response)
    new_form = call(portal.new_configurations, "GET", "portal/configurations/new", session=tenant.approver)
    assert new_form.status_code == 403
    assert repository().list_for_tenant(tenant.id) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://169.254.169.254/latest/meta-data", "non-public address (169.254.169.254)"),
        ("https://10.0.0.5/api/FHIR/R4", "non-public address (10.0.0.5)"),
        ("https://127.0.0.2/api/FHIR/R4", "non-public address (127.0.0.2)"),
        ("http://127.0.0.2/api/FHIR/R4", "only https"),
        ("file:///etc/passwd", "only https"),
        ("https://user:secret@ehr.example.org/fhir", "user name or password"),
        ("ehr.example.org/api/FHIR/R4", "the scheme is missing: start the address with https://"),
    ],
)
def test_unsafe_fhir_urls_are_rejected_in_the_users_words(tenant: Tenant, url: str, reason: str) -> None:
    form = {"csrf": tenant.admin.csrf_token, "rows": "1", **configuration_form(url, prefix="c0-")}
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 400
    page = text(response)
    assert "FHIR URL isn&#39;t valid: " in page and reason in page
    assert repository().list_for_tenant(tenant.id) == []


def test_a_fhir_url_answering_with_a_redirect_is_rejected_never_followed(tenant: Tenant, ehr: FakeEhr) -> None:
    form = {"csrf": tenant.admin.csrf_token, "rows": "1", **configuration_form(f"{ehr.base}/redirecting", prefix="c0-")}
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 400
    assert "FHIR URL isn&#39;t valid: " in text(response) and "redirect" in text(response)


def test_a_url_that_is_not_a_smart_server_is_rejected(tenant: Tenant, ehr: FakeEhr) -> None:
    form = {"csrf": tenant.admin.csrf_token, "rows": "1", **configuration_form(f"{ehr.base}/nothing", prefix="c0-")}
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 400
    assert "FHIR URL isn&#39;t valid: no SMART configuration was found" in text(response)


def test_the_same_url_twice_in_a_tenant_is_refused_but_another_tenant_may_use_it(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/dup/api/FHIR/R4"
    create(tenant, url)
    form = {
        "csrf": tenant.admin.csrf_token,
        "rows": "1",
        **configuration_form(url.replace("http://", "HTTP://") + "/", prefix="c0-"),
    }
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 409
    assert "already configured in your organization" in text(response)
    assert len(repository().list_for_tenant(tenant.id)) == 1
    other = new_tenant()
    create(other, url)
    assert len(repository().list_for_tenant(other.id)) == 1


def test_script_in_the_organization_name_is_rendered_inert(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/xss/api/FHIR/R4", organization='<script>alert("x")</script>')
    for page in (
        text(call(portal.dashboard, "GET", "portal", session=tenant.admin)),
        text(call(portal.configuration, "GET", "p", session=tenant.admin, route={"id": config_id})),
    ):
        assert "<script>alert" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"a=" + b"x" * (70 * 1024), "application/x-www-form-urlencoded"),
        (b"\xff\xfe\xfd", "application/x-www-form-urlencoded"),
        (b"csrf=1&csrf=2", "application/x-www-form-urlencoded"),
        (b"&&&===", "application/x-www-form-urlencoded"),
        (b'{"rows": 1}', "application/json"),
    ],
)
def test_oversized_or_malformed_form_bodies_get_a_400_page(tenant: Tenant, body: bytes, content_type: str) -> None:
    response = call(
        portal.create_configurations,
        "POST",
        "portal/configurations",
        session=tenant.admin,
        body=body,
        headers={"content-type": content_type},
    )
    assert response.status_code == 400
    assert response.mimetype == "text/html" and "correlation id" in text(response)


def test_a_missing_or_forged_csrf_token_is_rejected(tenant: Tenant, ehr: FakeEhr) -> None:
    for csrf in ("", "forged", tenant.approver.csrf_token):
        form = {"csrf": csrf, "rows": "1", **configuration_form(f"{ehr.base}/c/api/FHIR/R4", prefix="c0-")}
        response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
        assert response.status_code == 403
    assert repository().list_for_tenant(tenant.id) == []


# --- approval ------------------------------------------------------------------------------


def test_the_approver_proves_the_url_by_ehr_signin_then_approves(tenant: Tenant, ehr: FakeEhr) -> None:
    test_id, prod_id = create(tenant, f"{ehr.base}/t1/api/FHIR/R4", f"{ehr.base}/prod1/api/FHIR/R4")
    answer = ehr_signin(tenant, test_id)
    authorize = ehr.codes[location_query_of(answer)["code"]]
    assert authorize["scope"] == "openid fhirUser" and authorize["aud"] == f"{ehr.base}/t1/api/FHIR/R4"
    assert authorize["client_id"] == "provider-client" and "launch" not in authorize
    done = callback(tenant, answer)
    assert done.status_code == 303 and "notice=ehr-signin" in done.headers["Location"]
    recorded = repository().get(tenant.id, test_id)
    assert recorded.ehr_signin is not None and recorded.ehr_signin.by_upn == "analyst@contoso.example"
    assert recorded.status is Status.PENDING
    assert "client_secret" not in ehr.token_requests[-1]

    response = approve(tenant, test_id)
    assert response.status_code == 303
    approved = repository().get(tenant.id, test_id)
    assert approved.status is Status.APPROVED and approved.approved_by == "analyst@contoso.example"
    assert repository().get(tenant.id, prod_id).status is Status.PENDING

    records = text(call(portal.records, "GET", "r", session=tenant.admin, route={"id": test_id}))
    assert f"http://localhost:7071/api/launch/{test_id}/provider" in records
    assert f"http://localhost:7071/api/launch/{test_id}/patient" in records
    assert "sessionId=%CSN%&amp;departmentId=%PERFDEPID;;; ; ;;NONE;%" in records
    assert "http://localhost:7071/api/launch/callback" in records
    assert "http://localhost:7071/api/portal/ehr/callback" in records  # the approver's EHR sign-in, provider app
    assert "http://localhost:7071/api/.well-known/jwks.json" in records
    assert "<code>private_key_jwt</code>, RS384" in records  # the demo key is RSA
    assert "TEST environment" in records and "launch openid fhirUser patient/*.read" in records

    not_yet = text(call(portal.records, "GET", "r", session=tenant.admin, route={"id": prod_id}))
    assert "Not approved" in not_yet and "/api/launch/" not in not_yet
    assert call(portal.records_text, "GET", "r", session=tenant.admin, route={"id": prod_id}).status_code == 404

    plain = call(portal.records_text, "GET", "r.txt", session=tenant.approver, route={"id": test_id})
    assert plain.status_code == 200 and plain.mimetype == "text/plain"
    assert f"Launch URL: http://localhost:7071/api/launch/{test_id}/provider" in text(plain)
    assert "Environment: TEST" in text(plain)


def location_query_of(response: httpx.Response) -> dict[str, str]:
    return dict(httpx.URL(response.headers["location"]).params)


def test_an_admin_who_is_also_the_approver_still_signs_in_to_the_ehr(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/self/api/FHIR/R4", approver_upn="admin@contoso.example")
    admin_approves = call(
        portal.approve,
        "POST",
        "x",
        session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token},
        route={"id": config_id},
    )
    assert admin_approves.status_code == 409  # no EHR sign-in yet
    started = call(
        portal.start_ehr_signin,
        "POST",
        "x",
        session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token},
        route={"id": config_id},
    )
    answer = httpx.get(started.headers["Location"], follow_redirects=False)
    done = call(portal.ehr_callback, "GET", "x", session=tenant.admin, params=location_query_of(answer))
    assert done.status_code == 303
    approved = call(
        portal.approve,
        "POST",
        "x",
        session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token},
        route={"id": config_id},
    )
    assert approved.status_code == 303
    assert repository().get(tenant.id, config_id).approved_by == "admin@contoso.example"


def test_approval_without_the_ehr_signin_is_rejected(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/noproof/api/FHIR/R4")
    response = approve(tenant, config_id)
    assert response.status_code == 409 and "Sign in to the EHR" in text(response)
    assert repository().get(tenant.id, config_id).status is Status.PENDING


def test_approval_needs_the_same_account_oid_that_signed_in_to_the_ehr(tenant: Tenant, ehr: FakeEhr) -> None:
    """A second account with the approver's user name (say, recreated after the EHR sign-in) cannot approve."""
    import uuid

    from shared.microsoft.entra import PortalIdentity
    from shared.portal.sessions import SessionStore

    [config_id] = create(tenant, f"{ehr.base}/oid/api/FHIR/R4")
    callback(tenant, ehr_signin(tenant, config_id))
    proven = repository().get(tenant.id, config_id)
    assert proven.ehr_signin is not None and proven.ehr_signin.by_oid == tenant.approver.user.object_id
    namesake = SessionStore(services().storage.app).create(
        PortalIdentity(tenant_id=tenant.id, object_id=str(uuid.uuid4()), upn=tenant.approver.user.upn, name="Namesake")
    )
    response = call(
        portal.approve, "POST", "x", session=namesake, form={"csrf": namesake.csrf_token}, route={"id": config_id}
    )
    # The EHR sign-in bound the approver to their object id: the namesake does not even see the configuration.
    assert response.status_code == 404
    assert repository().get(tenant.id, config_id).status is Status.PENDING
    assert approve(tenant, config_id).status_code == 303


def test_approval_with_a_stale_or_forged_csrf_token_is_rejected(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/csrf/api/FHIR/R4")
    callback(tenant, ehr_signin(tenant, config_id))
    for csrf in ("", "forged", tenant.admin.csrf_token):
        assert approve(tenant, config_id, csrf=csrf).status_code == 403
    assert repository().get(tenant.id, config_id).status is Status.PENDING


def test_a_non_approver_cannot_sign_in_to_the_ehr_or_approve(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/nonapprover/api/FHIR/R4")
    callback(tenant, ehr_signin(tenant, config_id))
    assert approve(tenant, config_id, as_admin=True).status_code == 403
    started = call(
        portal.start_ehr_signin,
        "POST",
        "x",
        session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token},
        route={"id": config_id},
    )
    assert started.status_code == 403
    # A member who is neither admin nor approver does not even see it.
    member = call(
        portal.approve,
        "POST",
        "x",
        session=tenant.member,
        form={"csrf": tenant.member.csrf_token},
        route={"id": config_id},
    )
    assert member.status_code == 404
    assert repository().get(tenant.id, config_id).status is Status.PENDING


def test_another_tenant_cannot_see_records_or_configuration(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/iso/api/FHIR/R4")
    callback(tenant, ehr_signin(tenant, config_id))
    approve(tenant, config_id)
    other = new_tenant()
    for handler in (portal.records, portal.records_text, portal.configuration, portal.confirm_delete):
        response = call(handler, "GET", "x", session=other.admin, route={"id": config_id})
        assert response.status_code == 404, handler
        assert config_id not in text(response)
    edit = call(
        portal.update_configuration,
        "POST",
        "x",
        session=other.admin,
        route={"id": config_id},
        form={"csrf": other.admin.csrf_token, "etag": "W/x", **configuration_form(f"{ehr.base}/iso/api/FHIR/R4")},
    )
    assert edit.status_code == 404


def test_an_oauth_error_from_the_ehr_is_shown_with_what_to_check(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/oauth/api/FHIR/R4")
    ehr.authorize_error = "unauthorized_client"
    try:
        response = callback(tenant, ehr_signin(tenant, config_id))
    finally:
        ehr.authorize_error = None
    assert response.status_code == 502
    page = text(response)
    assert "OAuth2 error from the EHR: unauthorized_client" in page
    assert "JWKS URL" in page and "http://localhost:7071/api/portal/ehr/callback" in page
    assert repository().get(tenant.id, config_id).ehr_signin is None


def test_a_token_endpoint_error_is_shown_as_an_oauth_error(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/tokenerr/api/FHIR/R4")
    answer = ehr_signin(tenant, config_id)
    ehr.token_error = "invalid_client"
    try:
        response = callback(tenant, answer)
    finally:
        ehr.token_error = None
    assert response.status_code == 502 and "OAuth2 error from the EHR: invalid_client" in text(response)


def test_an_id_token_for_another_client_does_not_prove_the_url(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/aud/api/FHIR/R4")
    answer = ehr_signin(tenant, config_id)
    ehr.id_token_audience = "some-other-app"
    try:
        response = callback(tenant, answer)
    finally:
        ehr.id_token_audience = None
    assert response.status_code == 502 and "id_token is not valid" in text(response)
    assert repository().get(tenant.id, config_id).ehr_signin is None


def test_the_approvers_language_comes_back_from_the_ehr_sign_in(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/lang/api/FHIR/R4")
    answer = ehr_signin(tenant, config_id, lang="fr")
    assert "lang" not in ehr.codes[location_query_of(answer)["code"]]  # nothing of it is sent to the EHR
    done = callback(tenant, answer)
    assert done.status_code == 303 and location_query_of(done) == {"notice": "ehr-signin", "lang": "fr"}


def test_the_ehr_callback_state_is_single_use_and_bound_to_the_session(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/state/api/FHIR/R4")
    answer = ehr_signin(tenant, config_id)
    query = location_query_of(answer)
    stolen = call(portal.ehr_callback, "GET", "x", session=tenant.admin, params=query)
    assert stolen.status_code == 400  # another browser session: refused (and the state is now spent)
    assert callback(tenant, answer).status_code == 400
    assert repository().get(tenant.id, config_id).ehr_signin is None


# --- edit and delete -----------------------------------------------------------------------


def edit(tenant: Tenant, config_id: str, url: str, **overrides: str) -> func.HttpResponse:
    """Press "Save changes" on the configuration's page, against the version stored now."""
    current = repository().get(tenant.id, config_id)
    form = {"csrf": tenant.admin.csrf_token, "etag": str(current.etag), **configuration_form(url, **overrides)}
    return call(portal.update_configuration, "POST", "x", session=tenant.admin, route={"id": config_id}, form=form)


def page_of(tenant: Tenant, config_id: str, *, session: PortalSession | None = None) -> str:
    return text(call(portal.configuration, "GET", "x", session=session or tenant.admin, route={"id": config_id}))


def approved_one(tenant: Tenant, url: str) -> str:
    [config_id] = create(tenant, url)
    callback(tenant, ehr_signin(tenant, config_id))
    approve(tenant, config_id)
    assert repository().get(tenant.id, config_id).is_approved
    return config_id


def test_editing_an_approved_configuration_keeps_launches_on_the_approved_version(tenant: Tenant, ehr: FakeEhr) -> None:
    old_url, new_url = f"{ehr.base}/live/api/FHIR/R4", f"{ehr.base}/moved/api/FHIR/R4"
    config_id = approved_one(tenant, old_url)
    response = edit(tenant, config_id, new_url, organization="Contoso Health System", geography="americas")
    assert response.status_code == 303 and "notice=edit-saved" in response.headers["Location"]

    # Launches: the approved URL and values, as before; the edited URL is reserved but not allowed.
    live = repository().find_for_launch(config_id, old_url)
    assert live is not None and live.is_approved and live.organization == "Contoso Health"
    assert repository().find_for_launch(config_id, new_url) is None
    assert repository().find_approved(config_id) == replace(live, etag=ANY)  # writeback too
    duplicate = {"csrf": tenant.admin.csrf_token, "rows": "1", "action": "save"}
    duplicate |= configuration_form(new_url, prefix="c0-")
    taken = call(portal.create_configurations, "POST", "x", session=tenant.admin, form=duplicate)
    assert taken.status_code == 409  # nobody else may take the edited URL while the edit waits

    # The records stay those of the approved version; the page shows what awaits approval, old → new.
    records = text(call(portal.records, "GET", "r", session=tenant.admin, route={"id": config_id}))
    assert f"/api/launch/{config_id}/provider" in records and old_url in records
    for page in (page_of(tenant, config_id), page_of(tenant, config_id, session=tenant.approver)):
        assert "Edit awaiting approval" in page and "Contoso Health System" in page and new_url in page
        assert "signs in to the EHR again" in page
    dashboard = text(call(portal.dashboard, "GET", "portal", session=tenant.approver))
    assert "Awaiting approval" in dashboard and "Contoso Health System" in dashboard and new_url in dashboard

    # The approver proves the new URL and approves: from now on only the new URL launches.
    callback(tenant, ehr_signin(tenant, config_id))
    assert repository().find_for_launch(config_id, new_url) is None  # proven is not approved
    assert approve(tenant, config_id).status_code == 303  # type: ignore[attr-defined]
    moved = repository().find_for_launch(config_id, new_url)
    assert moved is not None and moved.is_approved and moved.edit is None
    assert moved.organization == "Contoso Health System" and moved.ehr_signin is not None
    assert repository().find_for_launch(config_id, old_url) is None
    create(tenant, old_url)  # the old URL is free again


def test_approving_an_edit_that_moves_the_geography_removes_the_links_kept_in_the_old_one(
    tenant: Tenant, ehr: FakeEhr
) -> None:
    url = f"{ehr.base}/geo/api/FHIR/R4"
    config_id = approved_one(tenant, url)
    user_map = services().user_map
    user_map.put(Geography.AMERICAS, config_id, "Practitioner/lee", tenant_id=tenant.id, object_id="oid-lee")
    edit(tenant, config_id, url, geography="emea")
    assert len(user_map.list_for_configuration(Geography.AMERICAS, config_id)) == 1  # still in use meanwhile
    approve(tenant, config_id)
    assert repository().get(tenant.id, config_id).geography is Geography.EMEA
    assert user_map.list_for_configuration(Geography.AMERICAS, config_id) == []


def test_an_edit_naming_another_approver_awaits_that_approver_only(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/handover/api/FHIR/R4"
    config_id = approved_one(tenant, url)
    edit(tenant, config_id, url, approver_upn="Dr.Smith@contoso.example")
    named = text(call(portal.dashboard, "GET", "portal", session=tenant.member))
    assert "Awaiting approval" in named and "dr.smith@contoso.example" in named
    assert "Sign in to EHR" in page_of(tenant, config_id, session=tenant.member)  # a new approver proves it anew
    previous = text(call(portal.dashboard, "GET", "portal", session=tenant.approver))
    assert f"/api/portal/configurations/{config_id}" in previous  # still the approver of the version in use...
    assert "Awaiting approval" not in previous  # ...but not the one to approve the edit
    refused = approve(tenant, config_id)
    assert refused.status_code == 403  # type: ignore[attr-defined]


def test_an_edit_of_the_display_name_is_approved_without_a_new_ehr_signin(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/rename/api/FHIR/R4"
    config_id = approved_one(tenant, url)
    assert edit(tenant, config_id, url, organization="Contoso Health System").status_code == 303
    stored = repository().get(tenant.id, config_id)
    assert stored.is_approved and stored.edit is not None and not stored.edit_needs_ehr_signin
    page = page_of(tenant, config_id, session=tenant.approver)
    assert "without signing in to the EHR again" in page and "Approve the edit" in page
    assert ">Sign in to EHR<" not in page
    assert approve(tenant, config_id).status_code == 303  # type: ignore[attr-defined]
    applied = repository().find_for_launch(config_id, url)
    assert applied is not None and applied.organization == "Contoso Health System" and applied.edit is None


def test_a_display_name_edit_of_a_configuration_approved_without_a_sign_in_on_record_offers_one(
    tenant: Tenant, ehr: FakeEhr
) -> None:
    config = approved_in_storage(tenant)  # e.g. approved before EHR sign-ins were kept: none on record
    renamed = replace(config.input(), organization="Renamed")  # the portal's save, minus discovery
    repository().update(config, cfg.edited(config, renamed, by="admin", now=datetime.now(UTC)), etag=str(config.etag))
    page = page_of(tenant, config.id, session=tenant.approver)
    assert "no EHR sign-in is on record" in page and ">Sign in to EHR<" in page


@pytest.mark.parametrize("who", ["approver", "admin"])
def test_rejecting_or_withdrawing_an_edit_keeps_the_approved_version(tenant: Tenant, ehr: FakeEhr, who: str) -> None:
    old_url, new_url = f"{ehr.base}/keep-{who}/api/FHIR/R4", f"{ehr.base}/drop-{who}/api/FHIR/R4"
    config_id = approved_one(tenant, old_url)
    before = repository().get(tenant.id, config_id)
    edit(tenant, config_id, new_url, patient_client_id="another-patient-client")
    session = tenant.approver if who == "approver" else tenant.admin
    label = "Reject the edit" if who == "approver" else "Withdraw the edit"
    assert label in page_of(tenant, config_id, session=session)
    etag = str(repository().get(tenant.id, config_id).etag)
    forged = call(
        portal.discard_edit, "POST", "x", session=session, route={"id": config_id}, form={"csrf": "x", "etag": etag}
    )
    assert forged.status_code == 403 and repository().get(tenant.id, config_id).edit is not None
    stale = call(
        portal.discard_edit, "POST", "x", session=session, route={"id": config_id}, form={"csrf": session.csrf_token}
    )
    assert stale.status_code == 400  # the form names the version it was shown
    etag = str(repository().get(tenant.id, config_id).etag)
    done = call(
        portal.discard_edit,
        "POST",
        "x",
        session=session,
        route={"id": config_id},
        form={"csrf": session.csrf_token, "etag": etag},
    )
    assert done.status_code == 303 and "notice=edit-discarded" in done.headers["Location"]
    after = repository().get(tenant.id, config_id)
    assert replace(after, etag=None) == replace(before, etag=None)
    assert repository().find_for_launch(config_id, old_url) is not None
    create(tenant, new_url)  # the edited URL is free again
    member = call(
        portal.discard_edit,
        "POST",
        "x",
        session=tenant.member,
        route={"id": config_id},
        form={"csrf": tenant.member.csrf_token, "etag": str(after.etag)},
    )
    assert member.status_code == 404


def test_deleting_a_configuration_with_an_edit_awaiting_approval_frees_both_urls(tenant: Tenant, ehr: FakeEhr) -> None:
    old_url, new_url = f"{ehr.base}/gone/api/FHIR/R4", f"{ehr.base}/gone-too/api/FHIR/R4"
    config_id = approved_one(tenant, old_url)
    edit(tenant, config_id, new_url)
    etag = str(repository().get(tenant.id, config_id).etag)
    done = call(
        portal.delete_configuration,
        "POST",
        "x",
        session=tenant.admin,
        route={"id": config_id},
        form={"csrf": tenant.admin.csrf_token, "confirm": "yes", "etag": etag},
    )
    assert done.status_code == 303
    assert repository().find_for_launch(config_id, old_url) is None
    create(tenant, old_url, new_url)  # both free again


def test_editing_back_to_the_approved_values_leaves_nothing_awaiting(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/back/api/FHIR/R4"
    config_id = approved_one(tenant, url)
    edit(tenant, config_id, url, organization="Renamed")
    response = edit(tenant, config_id, url)
    assert "notice=edit-unchanged" in response.headers["Location"]
    assert repository().get(tenant.id, config_id).edit is None


def test_a_concurrent_edit_gets_a_conflict_and_keeps_what_the_user_typed(tenant: Tenant, ehr: FakeEhr) -> None:
    [config_id] = create(tenant, f"{ehr.base}/race/api/FHIR/R4")
    etag = str(repository().get(tenant.id, config_id).etag)
    first = {
        "csrf": tenant.admin.csrf_token,
        "etag": etag,
        **configuration_form(f"{ehr.base}/race/api/FHIR/R4", organization="First edit"),
    }
    second = {
        "csrf": tenant.admin.csrf_token,
        "etag": etag,
        **configuration_form(f"{ehr.base}/race/api/FHIR/R4", organization="Second edit"),
    }
    assert (
        call(
            portal.update_configuration, "POST", "x", session=tenant.admin, route={"id": config_id}, form=first
        ).status_code
        == 303
    )
    response = call(
        portal.update_configuration, "POST", "x", session=tenant.admin, route={"id": config_id}, form=second
    )
    assert response.status_code == 409
    page = text(response)
    assert "Someone else changed" in page and 'value="Second edit"' in page
    assert repository().get(tenant.id, config_id).organization == "First edit"


def test_changing_the_url_moves_the_index_and_keeps_uniqueness(tenant: Tenant, ehr: FakeEhr) -> None:
    old_url, new_url = f"{ehr.base}/old/api/FHIR/R4", f"{ehr.base}/new/api/FHIR/R4"
    [config_id] = create(tenant, old_url)
    current = repository().get(tenant.id, config_id)
    form = {"csrf": tenant.admin.csrf_token, "etag": str(current.etag), **configuration_form(new_url)}
    assert (
        call(
            portal.update_configuration, "POST", "x", session=tenant.admin, route={"id": config_id}, form=form
        ).status_code
        == 303
    )
    assert repository().find_for_launch(config_id, new_url) is not None
    assert repository().find_for_launch(config_id, old_url) is None
    create(tenant, old_url)  # the old URL is free again


def test_delete_asks_for_confirmation_then_stops_launches_at_once(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/delete/api/FHIR/R4"
    [config_id] = create(tenant, url)
    assert repository().find_for_launch(config_id, url) is not None
    confirm = call(portal.confirm_delete, "GET", "x", session=tenant.admin, route={"id": config_id})
    assert confirm.status_code == 200 and 'name="confirm"' in text(confirm)
    unconfirmed = call(
        portal.delete_configuration,
        "POST",
        "x",
        session=tenant.admin,
        route={"id": config_id},
        form={"csrf": tenant.admin.csrf_token},
    )
    assert unconfirmed.status_code == 400
    without_etag = call(
        portal.delete_configuration,
        "POST",
        "x",
        session=tenant.admin,
        route={"id": config_id},
        form={"csrf": tenant.admin.csrf_token, "confirm": "yes"},
    )
    assert without_etag.status_code == 400  # a delete must name the version the admin saw, like an edit
    assert repository().find_for_launch(config_id, url) is not None
    etag = str(repository().get(tenant.id, config_id).etag)
    done = call(
        portal.delete_configuration,
        "POST",
        "x",
        session=tenant.admin,
        route={"id": config_id},
        form={"csrf": tenant.admin.csrf_token, "confirm": "yes", "etag": etag},
    )
    assert done.status_code == 303
    assert repository().find_for_launch(config_id, url) is None
    assert repository().list_for_tenant(tenant.id) == []


def test_the_approver_sees_only_configurations_naming_them(tenant: Tenant, ehr: FakeEhr) -> None:
    create(tenant, f"{ehr.base}/mine/api/FHIR/R4")
    create(tenant, f"{ehr.base}/theirs/api/FHIR/R4", approver_upn="someone.else@contoso.example")
    page = text(call(portal.dashboard, "GET", "portal", session=tenant.approver))
    assert "/mine/api/FHIR/R4" in page and "/theirs/api/FHIR/R4" not in page


# --- our public keys -----------------------------------------------------------------------


def test_the_jwks_is_public_and_holds_no_private_parts(env: dict[str, str]) -> None:
    response = call(wellknown.jwks, "GET", ".well-known/jwks.json")
    assert response.status_code == 200
    keys = json.loads(response.get_body())["keys"]
    assert keys and all("d" not in k and k["alg"] == "RS384" for k in keys)


def test_the_same_url_twice_in_one_form_is_refused(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/twice/api/FHIR/R4"
    form = {
        "csrf": tenant.admin.csrf_token,
        "rows": "2",
        "action": "save",
        **configuration_form(url, prefix="c0-"),
        **configuration_form(url + "/", prefix="c1-"),
    }
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 400 and text(response).count("appears twice in this form.</p>") == 2
    assert repository().list_for_tenant(tenant.id) == []


def test_a_delete_confirmed_against_a_stale_version_is_refused(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/stale-delete/api/FHIR/R4"
    [config_id] = create(tenant, url)
    stale = str(repository().get(tenant.id, config_id).etag)
    callback(tenant, ehr_signin(tenant, config_id))  # the approver changed it meanwhile
    response = call(
        portal.delete_configuration,
        "POST",
        "x",
        session=tenant.admin,
        route={"id": config_id},
        form={"csrf": tenant.admin.csrf_token, "confirm": "yes", "etag": stale},
    )
    assert response.status_code == 409 and "it was not deleted" in text(response)
    assert repository().find_for_launch(config_id, url) is not None


def test_launch_lookup_needs_the_configured_url_and_tolerates_forged_input(tenant: Tenant, ehr: FakeEhr) -> None:
    url = f"{ehr.base}/lookup/api/FHIR/R4"
    [config_id] = create(tenant, url)
    assert repository().find_for_launch(config_id, url + "/").id == config_id  # type: ignore[union-attr]
    assert repository().find_for_launch(config_id, f"{ehr.base}/other/api/FHIR/R4") is None
    assert repository().find_for_launch(config_id, "https://ehr.example:notaport/fhir") is None
    assert repository().find_for_launch("not-an-id", url) is None


def test_records_name_the_signing_algorithm_of_the_configured_key(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    config = approved_in_storage(tenant)
    pem = (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    monkeypatch.setenv("SIGNING_KEYS", pem)
    reset_services()
    page = text(call(portal.records, "GET", "r", session=tenant.admin, route={"id": config.id}))
    assert "<code>private_key_jwt</code>, ES384" in page and "RS384" not in page
    plain = text(call(portal.records_text, "GET", "r.txt", session=tenant.admin, route={"id": config.id}))
    assert "Method: private_key_jwt (ES384); no client secret" in plain


def approved_in_storage(tenant: Tenant) -> Configuration:
    """An approved configuration written straight to storage (for pages that only show one)."""
    now = datetime.now(UTC)
    values = configuration_form(f"https://ehr-{uuid.uuid4().hex[:8]}.contoso.example/api/FHIR/R4")
    config = cfg.new_configuration(tenant.id, to_input(values), by="admin@contoso.example", now=now)
    return repository().create(
        replace(config, status=Status.APPROVED, approved_by="analyst@contoso.example", approved_at=now)
    )


def test_the_copy_script_runs_under_a_csp_without_unsafe_inline(tenant: Tenant) -> None:
    config = approved_in_storage(tenant)
    response = call(portal.records, "GET", "r", session=tenant.admin, route={"id": config.id})
    policy = dict((d.strip().split(" ", 1) + [""])[:2] for d in response.headers["Content-Security-Policy"].split(";"))
    assert "'unsafe-inline'" not in policy["script-src"]
    scripts = re.findall(r"<script>(.*?)</script>", text(response), re.DOTALL)
    assert scripts  # the copy buttons' script is on the page...
    for script in scripts:  # ...and allowed by its hash, exactly as rendered
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy["script-src"].split()
