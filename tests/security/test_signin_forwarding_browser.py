"""The forwarded callback link: a clinician's EHR callback (``/api/launch/callback?code=…&state=…``) opened in
another browser must not link that browser's Microsoft 365 user to the clinician's EHR user behind anybody's back.

Headless Chromium with separate browser contexts (separate cookie jars, i.e. separate browsers), through the real
function app in the local host, Azurite, and the sandbox EHR and Entra ID. The EHR leg stays bound to no browser
(Epic's embedded browsers drop cookies), so the link is a deliberate act: the sign-in browser is shown who is being
linked and must press the button; a POST from any other browser, without the page's token, or a GET links nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from connector.services import services
from sandbox.seed import DIRECTORY
from shared.kernel.sealing import Sealer
from shared.launch.user_map import UserMapping, UserMapRepository
from shared.storage.accounts import Storage
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_launch_browser import begin_virtual_visit, choose_account, provider_page
from tests.support.accessibility import assert_accessible, assert_checked
from tests.support.launch_world import LEE, LEE_UPN, SMITH, SMITH_UPN, LaunchWorld, launch_world

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

NURSE_KIM_UPN = "nurse.kim@contoso.example"
SMITH_VISIT = "Follow-up: hypertension"
LEE_VISIT = "Lab results"


@pytest.fixture(scope="module")
def world(azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchWorld]:
    with launch_world(azurite_port_base, Path(tmp_path_factory.mktemp("signin_forwarding"))) as running:
        yield running


def new_browser(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def clinician(browser: Browser) -> Iterator[BrowserContext]:
    context = new_browser(browser)
    yield context
    context.close()


@pytest.fixture
def other(browser: Browser) -> Iterator[BrowserContext]:
    context = new_browser(browser)
    yield context
    context.close()


def user_map(world: LaunchWorld) -> UserMapRepository:
    secret = world.settings.connector_secret.reveal()
    return UserMapRepository(Storage(world.settings), secret, Sealer.from_text(world.settings.sealing_keys.reveal()))


def mapping_of(world: LaunchWorld, ehr_user: str) -> UserMapping | None:
    return user_map(world).get(world.configuration.geography, world.configuration.id, f"Practitioner/{ehr_user}")


@pytest.fixture(autouse=True)
def unlinked(world: LaunchWorld) -> None:
    """Every test starts with Dr Smith and Dr Lee never linked (the table and the host's per-process memory)."""
    repository = user_map(world)
    config = world.configuration
    for ehr_user in (SMITH, LEE):
        key = repository.row_key(config.id, f"Practitioner/{ehr_user}")
        if mapping_of(world, ehr_user) is not None:
            repository.delete_key(config.geography, config.id, key)
        services().launch.forget_mapping(config.geography, config.id, key)


def forwarded_callback(world: LaunchWorld, clinician: BrowserContext, ehr_user: str, visit: str) -> str:
    """The EHR's redirect back to the connector, taken from the clinician's browser before it is opened there.

    Playwright routes only the first request of a redirect chain, so the Begin virtual visit form post is
    intercepted and its hops (EHR → connector launch → EHR authorize → back) are followed one by one with this
    browser's own cookies; the last hop, the callback link, is kept instead of being opened.
    """
    taken: list[str] = []
    launch = f"{world.ehr_url}/launch"

    def follow(route: Route) -> None:
        response = route.fetch(max_redirects=0)
        location = response.headers.get("location", "")
        while location and "/api/launch/callback?" not in location:
            response = clinician.request.get(location, max_redirects=0)
            location = response.headers.get("location", "")
        taken.append(location)
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>held</title>")

    clinician.route(launch, follow)
    try:
        begin_virtual_visit(clinician, world, "hyperspace", ehr_user, visit)
    finally:
        clinician.unroute(launch)
    assert taken and taken[0].startswith(f"{world.url}/api/launch/callback?"), taken
    return taken[0]


def confirmation_page(page: Page, world: LaunchWorld, upn: str) -> Page:
    choose_account(page, world, upn)
    expect(page.locator("h1")).to_have_text("Link your Microsoft 365 account")
    return page


def test_a_forwarded_callback_link_shows_its_opener_who_would_be_linked_and_links_nothing_by_itself(
    world: LaunchWorld, clinician: BrowserContext, other: BrowserContext
) -> None:
    link = forwarded_callback(world, clinician, SMITH, SMITH_VISIT)
    page = other.new_page()
    page.goto(link)  # Nurse Kim's browser opens Dr Smith's link and signs in as herself
    confirmation_page(page, world, NURSE_KIM_UPN)
    expect(page.locator("#ehr-user")).to_have_text("Dr. Jordan Smith")
    expect(page.locator("#microsoft-account")).to_have_text(NURSE_KIM_UPN)
    expect(page.locator("#names-differ")).to_be_visible()
    assert_accessible(page)
    assert mapping_of(world, SMITH) is None  # signing in stored nothing

    page.locator("#decline-link").click()
    expect(page.locator("h1")).to_have_text("Nothing was linked")
    assert_accessible(page)
    assert mapping_of(world, SMITH) is None


def test_the_confirmation_posted_from_another_browser_is_refused_and_links_nothing(
    world: LaunchWorld, clinician: BrowserContext, other: BrowserContext
) -> None:
    link = forwarded_callback(world, clinician, SMITH, SMITH_VISIT)
    victim = other.new_page()
    victim.goto(link)
    confirmation_page(victim, world, NURSE_KIM_UPN)
    state = victim.locator("input[name=state]").input_value()
    csrf = victim.locator("input[name=csrf]").input_value()

    # The forwarder, in their own browser with a sign-in of their own (their own binding cookie), submits the
    # victim's confirmation: the worst case, holding even the victim's page token.
    own = begin_virtual_visit(clinician, world, "hyperspace", LEE, LEE_VISIT)
    confirmation_page(own, world, LEE_UPN)
    own.evaluate(
        "([s, c]) => { document.querySelector('input[name=state]').value = s;"
        " document.querySelector('input[name=csrf]').value = c; }",
        [state, csrf],
    )
    own.locator("#confirm-link").click()
    expect(own.locator("h1")).to_have_text("Please confirm in your own browser")
    expect(own.locator("body")).to_contain_text("nothing was linked")
    assert_accessible(own)
    assert mapping_of(world, SMITH) is None and mapping_of(world, LEE) is None

    # The refusal used the confirmation up: it cannot be completed afterwards either.
    victim.locator("#confirm-link").click()
    expect(victim.locator("h1")).to_have_text("Please launch again from Epic")
    assert mapping_of(world, SMITH) is None


def test_a_confirmation_without_the_page_token_is_refused(world: LaunchWorld, clinician: BrowserContext) -> None:
    page = begin_virtual_visit(clinician, world, "hyperspace", SMITH, SMITH_VISIT)
    confirmation_page(page, world, SMITH_UPN)
    page.evaluate("() => document.querySelector('input[name=csrf]').remove()")
    page.locator("#confirm-link").click()
    expect(page.locator("h1")).to_have_text("Please confirm on the confirmation page")
    assert_accessible(page)
    assert mapping_of(world, SMITH) is None


def test_a_get_of_the_confirmation_url_links_nothing(world: LaunchWorld, clinician: BrowserContext) -> None:
    page = begin_virtual_visit(clinician, world, "hyperspace", SMITH, SMITH_VISIT)
    confirmation_page(page, world, SMITH_UPN)
    state = page.locator("input[name=state]").input_value()
    csrf = page.locator("input[name=csrf]").input_value()
    link = clinician.new_page()  # e.g. a link or an image pointing at the confirmation, in the same browser
    response = link.goto(f"{world.url}/api/launch/signin/confirm?state={state}&csrf={csrf}&action=link")
    assert response is not None and response.status == 405
    expect(link.locator("h1")).to_have_text("Please use the button on the confirmation page")
    assert_accessible(link)
    assert mapping_of(world, SMITH) is None

    page.locator("#confirm-link").click()  # the GET did not use the confirmation up
    provider_page(page, world)
    mapping = mapping_of(world, SMITH)
    assert mapping is not None


def test_the_clinician_sees_their_name_and_account_and_the_visit_starts_after_confirming(
    world: LaunchWorld, clinician: BrowserContext
) -> None:
    page = begin_virtual_visit(clinician, world, "hyperspace", LEE, LEE_VISIT)
    confirmation_page(page, world, LEE_UPN)
    expect(page.locator("#link-summary")).to_contain_text("EHR user Dr. Morgan Lee")
    expect(page.locator("#link-summary")).to_contain_text(f"your Microsoft 365 account {LEE_UPN}")
    expect(page.locator("#names-differ")).to_have_count(0)
    assert_accessible(page)
    assert mapping_of(world, LEE) is None

    page.locator("#confirm-link").click()
    provider_page(page, world)
    mapping = mapping_of(world, LEE)
    lee = DIRECTORY.user_by_upn(LEE_UPN)
    assert mapping is not None and lee is not None and mapping.object_id == lee.object_id

    again = begin_virtual_visit(clinician, world, "hyperspace", LEE, LEE_VISIT)  # linked: straight in
    provider_page(again, world)


def test_an_admin_sees_a_link_in_the_portal_and_removes_it(world: LaunchWorld, clinician: BrowserContext) -> None:
    """The way back from a wrong link: the configuration's admin finds it by the Microsoft 365 user and removes it."""
    config = world.configuration
    kim = DIRECTORY.user_by_upn(NURSE_KIM_UPN)
    assert kim is not None
    user_map(world).put(
        config.geography, config.id, f"Practitioner/{SMITH}", tenant_id=kim.tenant_id, object_id=kim.object_id,
        upn=NURSE_KIM_UPN,
    )  # fmt: skip
    page = clinician.new_page()
    page.goto(f"{world.url}/api/portal/signin")
    page.wait_for_url(f"{world.stand_ins.entra.browser_host}/**")
    page.locator("button[data-upn='admin@contoso.example']").click()
    page.wait_for_url(f"{world.url}/api/portal")
    page.goto(f"{world.url}/api/portal/configurations/{config.id}")
    page.locator("#clinician-links").click()
    expect(page.locator("h1")).to_have_text("Clinician links")
    row = page.locator("#links tbody tr", has_text=NURSE_KIM_UPN)
    expect(row).to_have_count(1)
    assert_checked(page)  # axe-core, and the links table reflows at 320/390 px and 200 % zoom

    row.get_by_role("button", name=re.compile(r"Remove the link of nurse\.kim@")).click()
    expect(page.locator(".notice")).to_contain_text("Link removed")
    expect(page.locator("#links tbody tr", has_text=NURSE_KIM_UPN)).to_have_count(0)
    assert_accessible(page)
    assert mapping_of(world, SMITH) is None
