"""The whole approval journey in headless Chromium, against the real function app in the local Functions host.

Admin signs in with Microsoft 365 (sandbox Entra ID) and adds a test and a production FHIR URL (two sandbox
EHR instances) → the approver signs in, proves the test URL by signing in to the EHR (standalone SMART
launch; the EHR fetches our JWKS from the host to check private_key_jwt) and approves it → integration
records appear for that one only → the admin renames it → it stays approved and in use while the edit awaits
the approver, who sees what changed (old → new) and approves it without a new EHR sign-in.

Along the way every page state is checked with axe-core (WCAG 2.x A/AA) and for reflow: at 390 px and 320 px wide,
and at 200 % zoom of a 1280 px window (640 CSS px, as browser zoom lays it out; and CSS zoom 2 on the 1280 px page),
the page never scrolls sideways.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from sandbox.ehr import EhrConfig, RegisteredClient, create_app
from sandbox.entra import RunningEntra, start_entra
from sandbox.seed import CONTOSO, FABRIKAM
from sandbox.server import ServerThread, free_port
from sandbox.tls import TlsFiles, ensure_tls, trust_env
from tests.support.accessibility import assert_checked

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_CLIENT = "teams-connector-provider"
PATIENT_CLIENT = "teams-connector-patient"


@dataclass(frozen=True)
class World:
    public: str
    test_fhir: str
    prod_fhir: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def entra(tls: TlsFiles) -> Iterator[RunningEntra]:
    with start_entra(tls) as running:
        yield running


def _ehr(public: str, environment: str) -> tuple[ServerThread, str]:
    port = free_port()
    client = RegisteredClient(
        client_id=PROVIDER_CLIENT,
        redirect_uris=(f"{public}/api/portal/ehr/callback",),
        jwks_url=f"{public}/api/.well-known/jwks.json",
        name="Teams virtual visits (provider)",
    )
    config = EhrConfig(base_url=f"http://127.0.0.1:{port}", clients=(client,), environment=environment)
    return ServerThread(create_app(config), port=port), config.fhir_base


@pytest.fixture(scope="module")
def world(
    base_env: dict[str, str], entra: RunningEntra, tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    port = free_port()
    # localhost, while the Entra and EHR pages are on 127.0.0.1: a different site, as in the demo, so the
    # sign-in cookies must survive a cross-site form_post.
    public = f"http://localhost:{port}"
    test_ehr, test_fhir = _ehr(public, "test")
    prod_ehr, prod_fhir = _ehr(public, "production")
    folder = tmp_path_factory.mktemp("host")
    settings = {**base_env, "PUBLIC_BASE_URL": public, "ENTRA_AUTHORITY_HOST": entra.issuer_host,
                "WRITEBACK_QUEUE_NAME": f"writeback-{uuid.uuid4().hex[:12]}"}  # fmt: skip
    (folder / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": settings}))
    environ = {k: v for k, v in os.environ.items() if k not in settings} | trust_env(tls)
    with test_ehr, prod_ehr, (folder / "host.log").open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own module with fixed arguments
            [sys.executable, "-m", "sandbox.host", "--port", str(port),
             "--settings", str(folder / "local.settings.json"), "--keys", str(folder / "keys.json")],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (folder / "host.log").read_text()
                try:
                    if httpx.get(f"{public}/api/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the Functions host did not start"
                time.sleep(0.1)
            yield World(public=public, test_fhir=test_fhir, prod_fhir=prod_fhir)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)


def sign_in(browser: Browser, world: World, upn: str) -> Page:
    page = browser.new_context().new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{world.public}/api/portal")
    page.get_by_role("link", name="Sign in with Microsoft 365").click()
    page.locator(f'button[data-upn="{upn}"]').click()  # the sandbox Entra account picker
    expect(page.get_by_role("heading", name="Configurations")).to_be_visible()
    return page


def fill_configuration(page: Page, index: int, *, organization: str, url: str, environment: str) -> None:
    prefix = f"#c{index}-"
    page.fill(f"{prefix}organization", organization)
    page.fill(f"{prefix}fhir_base_url", url)
    page.select_option(f"{prefix}environment", environment)
    page.fill(f"{prefix}approver_upn", "analyst@contoso.example")
    page.select_option(f"{prefix}geography", "americas")
    page.select_option(f"{prefix}vendor", "epic")
    page.fill(f"{prefix}provider_client_id", PROVIDER_CLIENT)
    page.fill(f"{prefix}patient_client_id", PATIENT_CLIENT)
    page.select_option(f"{prefix}writeback_mode", "epic")


def test_admin_submits_approver_proves_and_approves_records_appear_edit_resets(browser: Browser, world: World) -> None:
    # The admin adds a test and a production URL in one form (the second row added without JavaScript's help).
    admin = sign_in(browser, world, "admin@contoso.example")
    expect(admin.get_by_text("administrator", exact=False).first).to_be_visible()
    assert_checked(admin)  # the empty dashboard
    admin.get_by_role("link", name="Add configurations").click()
    # Every field says what it wants; the client ids say what a SMART client id is and where Epic shows it.
    client_id = admin.locator("#c0-provider_client_id")
    expect(client_id).to_have_attribute("aria-describedby", "c0-provider_client_id-hint")
    expect(admin.locator("#c0-provider_client_id-hint")).to_contain_text("A SMART client id is")
    expect(admin.locator("#c0-provider_client_id-hint")).to_contain_text("fhir.epic.com")
    for name in ("organization", "fhir_base_url", "environment", "approver_upn", "geography", "vendor",
                 "patient_client_id", "writeback_mode"):  # fmt: skip
        expect(admin.locator(f"#c0-{name}-hint")).not_to_be_empty()
    expect(admin.get_by_role("option", name="Americas")).to_have_count(1)  # words, not codes
    assert_checked(admin)
    fill_configuration(admin, 0, organization="Contoso Health <b>Test</b>", url=world.test_fhir, environment="test")
    admin.get_by_role("button", name="Add another configuration").click()
    fill_configuration(admin, 1, organization="Contoso Health", url=world.prod_fhir + "/", environment="production")
    # A URL typed without its scheme: nothing is saved, focus moves to the summary, which says what is wrong.
    admin.fill("#c1-fhir_base_url", world.prod_fhir.split("://", 1)[1])
    admin.get_by_role("button", name="Save", exact=True).click()
    summary = admin.locator("#error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Configuration 2: FHIR URL isn't valid: the scheme is missing")
    expect(admin.locator("#c1-fhir_base_url")).to_have_attribute("aria-invalid", "true")
    assert_checked(admin)
    summary.get_by_role("link").click()  # the summary's link takes the user to the field
    expect(admin.locator("#c1-fhir_base_url")).to_be_focused()
    admin.fill("#c1-fhir_base_url", world.prod_fhir + "/")
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.get_by_role("status")).to_contain_text("pending approval")
    assert_checked(admin)
    rows = admin.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(admin.get_by_text("Pending approval", exact=True)).to_have_count(2)
    listed = admin.locator("table.reflow").first
    expect(listed.get_by_role("link", name="Contoso Health <b>Test</b>")).to_be_visible()  # escaped, not markup

    # The approver proves the test URL by signing in to the EHR, then approves it.
    approver = sign_in(browser, world, "analyst@contoso.example")
    expect(approver.get_by_role("link", name="Add configurations")).to_have_count(0)
    assert_checked(approver)
    approver.locator("table.reflow").first.get_by_role("link", name="Contoso Health <b>Test</b>").click()
    expect(approver.locator(".env-banner")).to_have_text("TEST environment")
    assert_checked(approver)
    expect(approver.get_by_role("button", name="Approve")).to_have_count(0)
    approver.get_by_role("button", name="Sign in to EHR").click()
    expect(approver.get_by_role("heading", name=re.compile("Sign in to continue"))).to_be_visible()  # the EHR's page
    approver.locator("fieldset").first.locator("button").first.click()
    expect(approver.get_by_role("status")).to_contain_text("EHR sign-in succeeded")
    expect(approver.get_by_text("Done by analyst@contoso.example")).to_be_visible()
    approver.get_by_role("button", name="Approve").click()
    expect(approver.get_by_role("status")).to_contain_text("Approved")
    configuration_id = approver.url.split("/configurations/")[1].split("?")[0]

    approver.get_by_role("link", name="Integration records").click()
    expect(approver.locator(".env-banner")).to_contain_text("TEST environment")
    assert_checked(approver)
    launch = f"{world.public}/api/launch/{configuration_id}/provider"
    expect(approver.locator("#provider-launch")).to_have_text(launch)
    expect(approver.locator("#patient-launch")).to_have_text(f"{world.public}/api/launch/{configuration_id}/patient")
    expect(approver.locator("#provider-tokens")).to_have_text("sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%")
    expect(approver.locator("#provider-redirect-1")).to_have_text(f"{world.public}/api/launch/callback")
    expect(approver.locator("#provider-redirect-2")).to_have_text(f"{world.public}/api/portal/ehr/callback")
    expect(approver.locator("#patient-redirect-1")).to_have_text(f"{world.public}/api/launch/callback")
    expect(approver.locator("#jwks")).to_have_text(f"{world.public}/api/.well-known/jwks.json")
    expect(approver.locator("button.copy").first).to_be_visible()  # shown only when script runs
    with approver.expect_download() as download:
        approver.get_by_role("link", name="Download as plain text").click()
    exported = Path(download.value.path()).read_text()
    assert f"Launch URL: {launch}" in exported and "Environment: TEST" in exported

    # The production one is not approved: no records.
    admin.goto(f"{world.public}/api/portal")
    expect(admin.get_by_text("Approved", exact=True)).to_have_count(1)
    admin.locator("table.reflow").first.get_by_role("link", name="Contoso Health", exact=True).click()
    expect(admin.locator(".env-banner")).to_have_text("PRODUCTION environment")
    expect(admin.get_by_role("link", name="Integration records")).to_have_count(0)
    production_id = admin.url.split("/configurations/")[1].split("?")[0]
    admin.goto(f"{world.public}/api/portal/configurations/{production_id}/records")
    expect(admin.get_by_text("Not approved")).to_be_visible()
    expect(admin.locator("#provider-launch")).to_have_count(0)

    # The admin shares the approved one with an affiliate's tenant; that tenant's admin sees it, read-only.
    admin.goto(f"{world.public}/api/portal/configurations/{configuration_id}")
    admin.fill("#tenant_id", CONTOSO.id)
    admin.get_by_role("button", name="Share", exact=True).click()
    expect(admin.locator("#share-error")).to_contain_text("That is your own tenant")
    admin.fill("#tenant_id", FABRIKAM.id)
    admin.get_by_role("button", name="Share", exact=True).click()
    expect(admin.get_by_role("status")).to_contain_text("Shared.")
    expect(admin.locator("ul.shares")).to_contain_text(FABRIKAM.id)
    affiliate = sign_in(browser, world, "admin@fabrikam.example")
    shared = affiliate.locator("section", has_text="Shared with your organization")
    shared.get_by_role("link", name="Contoso Health <b>Test</b>").click()
    expect(affiliate.get_by_role("button", name="Save changes")).to_have_count(0)
    affiliate.get_by_role("link", name="Integration records").click()
    expect(affiliate.locator("#provider-launch")).to_have_text(launch)
    affiliate.context.close()

    # The admin renames the approved one: it stays approved and in use; the edit awaits its approver.
    admin.goto(f"{world.public}/api/portal/configurations/{configuration_id}")
    expect(admin.locator("dl.facts")).to_contain_text("Americas")  # words, not codes
    expect(admin.locator("dl.facts")).to_contain_text("Epic (SetExternalConnectionStatus)")
    expect(admin.locator("dl.facts")).not_to_contain_text("americas")
    assert_checked(admin)
    admin.fill("#organization", "")
    admin.get_by_role("button", name="Save changes").click()  # a failed save: focus on the summary
    expect(admin.locator("#error-summary")).to_be_focused()
    expect(admin.locator("#error-summary")).to_contain_text("Enter the organization's name.")
    assert_checked(admin)
    admin.fill("#organization", "Contoso Health Test")
    admin.get_by_role("button", name="Save changes").click()
    expect(admin.get_by_role("status")).to_contain_text("launches keep using the approved version")
    expect(admin.locator("dl.facts")).to_contain_text("Approved")
    changes = admin.locator("#pending-changes")
    expect(changes.locator("tbody tr")).to_have_count(1)
    expect(changes).to_contain_text("Contoso Health <b>Test</b>")
    expect(changes).to_contain_text("Contoso Health Test")
    expect(admin.locator("#pending-edit")).to_contain_text("without signing in to the EHR again")
    expect(admin.get_by_role("button", name="Withdraw the edit")).to_be_visible()
    assert_checked(admin)
    admin.get_by_role("link", name="Integration records").click()
    expect(admin.locator("#provider-launch")).to_have_text(launch)  # the approved version's records, still
    expect(admin.get_by_role("status")).to_contain_text("An edit of this configuration awaits approval")
    assert_checked(admin)
    admin.goto(f"{world.public}/api/portal/configurations/{configuration_id}/delete")  # only looked at, not pressed
    expect(admin.locator("main")).to_contain_text("The edit awaiting approval")
    assert_checked(admin)

    # The approver sees what awaits them, old → new, and approves it without a new EHR sign-in.
    approver.goto(f"{world.public}/api/portal")
    awaiting = approver.locator("section", has=approver.locator("#awaiting-title"))
    expect(awaiting.locator("tbody tr")).to_have_count(1)
    expect(awaiting.locator("tbody tr")).to_contain_text("Organization name")
    expect(awaiting).to_contain_text("Contoso Health Test")
    expect(approver.get_by_text("Edit awaiting approval", exact=True).first).to_be_visible()
    assert_checked(approver)
    awaiting.get_by_role("link", name="Contoso Health Test").click()
    expect(approver.get_by_role("button", name="Sign in to EHR")).to_have_count(0)
    expect(approver.get_by_role("button", name="Reject the edit")).to_be_visible()
    assert_checked(approver)
    approver.get_by_role("button", name="Approve the edit").click()
    expect(approver.get_by_role("status")).to_contain_text("Approved")
    expect(approver.get_by_role("heading", level=1)).to_have_text("Contoso Health Test")
    expect(approver.locator("#pending-edit")).to_have_count(0)

    # Signing out ends the session.
    admin.get_by_role("button", name="Sign out").click()
    expect(admin.get_by_role("link", name="Sign in with Microsoft 365")).to_be_visible()
