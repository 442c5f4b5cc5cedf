"""Every connector page state in all five languages, in headless Chromium, passes axe-core (WCAG 2.2 A/AA);
and through the real host, a patient's language follows the browser, the switch and the page's own re-checks.

The page states are rendered in-process by the real templates and error books (``tests/support/page_states``)
and served to Chromium with the headers the connector sends (its Content-Security-Policy included), so the
pages' scripts run as they do in production; axe is evaluated through ``tests/support/accessibility``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from connector import i18n
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_launch_browser import begin_virtual_visit
from tests.support.accessibility import assert_accessible
from tests.support.launch_world import LaunchWorld
from tests.support.page_states import PAGE_STATES

pytestmark = [pytest.mark.browser]

SITE = "https://connector.example.org"
LANGUAGES = list(i18n.LANGUAGES)


def serve(state: str, language: str) -> tuple[int, dict[str, str], str]:
    """The state's response as the connector would answer ``GET {SITE}/api/states/{state}?lang={language}``."""
    url = f"{SITE}/api/states/{state}?lang={language}"
    with i18n.speaking(i18n.language_for("GET", url, None)):
        response = PAGE_STATES[state]()
    headers = {**dict(response.headers), "Content-Type": f"{response.mimetype}; charset={response.charset}"}
    return response.status_code, headers, response.get_body().decode()


@pytest.fixture(scope="module")
def site(browser: Browser) -> Iterator[Page]:
    """One page whose requests to the connector's site are answered by the page states (nothing leaves the machine)."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)

    def answer(route: Route) -> None:
        path, _, query = route.request.url.removeprefix(SITE).partition("?")
        params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        state = path.removeprefix("/api/states/")
        if route.request.resource_type == "document" and state in PAGE_STATES:
            status, headers, body = serve(state, params.get("lang", "en"))
            route.fulfill(status=status, headers=headers, body=body)
        else:  # the pages' own polling: answered as an unreachable server would be
            route.fulfill(status=503, content_type="application/json", body="{}")

    context.route(f"{SITE}/**", answer)
    # Anywhere else (the EHR a sign-in form posts to, Teams): 204, so the browser stays on the page under test.
    context.route(
        "**/*", lambda route: route.fulfill(status=204) if not route.request.url.startswith(SITE) else route.fallback()
    )
    page = context.new_page()
    yield page
    context.close()


@pytest.mark.parametrize("state", list(PAGE_STATES))
def test_every_page_state_passes_axe_in_every_language(site: Page, state: str) -> None:
    for language in LANGUAGES:
        # "commit": a page may post itself on at once (authorize_post); the 204 elsewhere keeps it in place.
        site.goto(f"{SITE}/api/states/{state}?lang={language}", wait_until="commit")
        site.wait_for_function("document.readyState !== 'loading'")
        expect(site.locator("html")).to_have_attribute("lang", language)
        switch = site.get_by_role("navigation", name=i18n_label(language))
        expect(switch.get_by_role("link")).to_have_count(len(LANGUAGES))
        expect(switch.locator("a[aria-current]")).to_have_attribute("hreflang", language)
        assert_accessible(site)


def i18n_label(language: str) -> str:
    with i18n.speaking(i18n.Language(language)):
        return i18n.gettext("Language")


# --- through the real host -----------------------------------------------------------------------


@pytest.mark.azurite
def test_a_patient_reads_their_language_switches_and_keeps_it_across_re_checks(
    world: LaunchWorld, browser: Browser
) -> None:
    italian: BrowserContext = browser.new_context(locale="it-IT")  # Accept-Language: it-IT
    italian.set_default_timeout(TIMEOUT_MS)
    try:
        patient = begin_virtual_visit(italian, world, "mychart", "e-pat-novak", "Lab results")
        patient.wait_for_url(f"{world.url}/api/visits/**")
        expect(patient.locator("html")).to_have_attribute("lang", "it")
        expect(patient.locator("h1")).to_have_text("Il tuo medico avvierà la visita a breve")
        assert_accessible(patient)

        patient.get_by_role("navigation", name="Lingua").get_by_role("link", name="Deutsch").click()
        expect(patient.locator("html")).to_have_attribute("lang", "de")
        expect(patient.locator("h1")).to_have_text("Ihre Ärztin oder Ihr Arzt beginnt den Termin in Kürze")
        waiting = patient.url
        assert "lang=de" in waiting and "t=" in waiting
        assert "lang=de" in (patient.locator("#waiting").get_attribute("data-next") or "")
    finally:
        italian.close()

    # Without JavaScript the page re-checks by reloading itself: the reader's choice survives each reload.
    no_script = browser.new_context(locale="it-IT", java_script_enabled=False)
    no_script.set_default_timeout(TIMEOUT_MS)
    try:
        page = no_script.new_page()
        page.goto(waiting)
        reloads: list[str] = []
        page.on("framenavigated", lambda frame: reloads.append(frame.url) if frame == page.main_frame else None)
        page.wait_for_timeout(11_500)  # recheck_seconds: 10 in the first two minutes, and a margin
        assert reloads, "the waiting page did not re-check"
        assert all("lang=de" in url for url in reloads)
        expect(page.locator("html")).to_have_attribute("lang", "de")
        # The device test needs a script: without one its buttons stay hidden and the page says so, in German.
        expect(page.locator("#device-no-script")).to_contain_text("In diesem Browser ist JavaScript ausgeschaltet")
    finally:
        no_script.close()


@pytest.mark.azurite
def test_the_portal_follows_accept_language_and_the_switch_keeps_the_choice_on_its_links(
    world: LaunchWorld, browser: Browser
) -> None:
    french = browser.new_context(locale="fr-FR")
    french.set_default_timeout(TIMEOUT_MS)
    try:
        page = french.new_page()
        page.goto(f"{world.url}/api/portal")
        expect(page.locator("html")).to_have_attribute("lang", "fr")
        expect(page.get_by_role("heading", level=1)).to_have_text("Portail de configuration")
        page.get_by_role("link", name="Español").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Portal de configuración")
        sign_in = page.get_by_role("link", name="Iniciar sesión con Microsoft 365")
        expect(sign_in).to_have_attribute("href", "/api/portal/signin?lang=es")
        assert_accessible(page)
        # Microsoft's page, then its form_post back to us, which cannot carry ``?lang=``: the sign-in's state
        # brings the choice back, so the admin lands on the portal in Spanish, not in their browser's French.
        sign_in.click()
        page.wait_for_url(f"{world.stand_ins.entra.browser_host}/**")
        assert "lang=" not in page.url
        page.locator("button[data-upn='admin@contoso.example']").click()
        page.wait_for_url(f"{world.url}/api/portal?lang=es")
        expect(page.locator("html")).to_have_attribute("lang", "es")
        expect(page.get_by_role("button", name="Cerrar sesión")).to_be_visible()
    finally:
        french.close()
