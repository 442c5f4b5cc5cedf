"""Who reads each page, in headless Chromium through the real function app: patients get plain, kind words (never a
configuration word, PowerShell, "FDI" or "iss"), clinicians and admins the technical detail; the waiting room shows
the appointment and gives up (on a fake clock) without stranding anyone; the one-time sign-in is explained before
Microsoft's picker. Every page state here passes axe-core."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from connector.launch import PATIENT_LAUNCH_PAGES, PATIENT_VISIT_PAGES
from connector.web import error_response
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID
from sandbox.seed import DIRECTORY
from shared.kernel.clock import FakeClock, use_clock
from shared.kernel.errors import ConnectorError
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_launch_browser import begin_virtual_visit, choose_account, sign_in_once
from tests.support.accessibility import assert_accessible
from tests.support.audience import PATIENT_CASES, technical_words
from tests.support.launch_world import NOPOLICY, NOPOLICY_UPN, PATIENT_CONTEXT, SMITH, LaunchWorld

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

WHITFIELD = "e-pat-whitfield"
WELLNESS = "Annual wellness visit"  # Dr Nopolicy's: Teams has no access policy for them


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with use_clock(FakeClock()) as fake:
        assert isinstance(fake, FakeClock)
        yield fake


def new_context(browser: Browser, *, javascript: bool = True) -> BrowserContext:
    context = browser.new_context(java_script_enabled=javascript)
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def patient(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    yield context
    context.close()


def assert_for_a_patient(page: Page) -> None:
    text = page.locator("body").inner_text() + " " + page.title()
    assert not technical_words(text), f"a patient's page says {technical_words(text)}: {text}"
    assert_accessible(page)


def assert_accessible_without_javascript(context: BrowserContext, url: str) -> None:
    """axe-core needs JavaScript, so the page is checked as a browser without it shows it: its scripts and
    self-reload left out, its ``noscript`` content shown (axe runs through DevTools, not the page's scripts)."""

    def as_without_javascript(route: Route) -> None:
        html = route.fetch().text()
        html = re.sub(r"<script>.*?</script>", "", html, flags=re.DOTALL)
        html = re.sub(r'<meta http-equiv="refresh"[^>]*>', "", html)
        html = html.replace("<noscript>", "").replace("</noscript>", "")
        route.fulfill(status=200, content_type="text/html", body=html)

    page = context.new_page()
    page.route(url, as_without_javascript)
    page.goto(url)
    expect(page.locator("#device-no-script")).to_be_visible()
    expect(page.locator("#device-controls")).to_be_hidden()
    assert_for_a_patient(page)
    page.close()


@pytest.fixture
def unknown_patient_record(world: LaunchWorld) -> Iterator[str]:
    """A MyChart record whose launch URL names a configuration the connector does not have (for one test)."""
    name = "unknown patient"
    record = world.ehr.add_record(
        name=name,
        kind="patient",
        launch_url=f"{world.url}/api/launch/{uuid.uuid4()}/patient",
        context_tokens=PATIENT_CONTEXT,
        client_id=DEMO_PATIENT_CLIENT_ID,
    )
    world.records[name] = record
    yield name
    del world.records[name]
    world.ehr.state.delete_record(record.id)


# --- patients ------------------------------------------------------------------------------------


def test_a_patient_launch_that_matches_no_configuration_asks_them_to_call_their_clinic(
    world: LaunchWorld, patient: BrowserContext, unknown_patient_record: str
) -> None:
    page = patient.new_page()
    page.goto(world.launch_url(unknown_patient_record, world.appointment_of(SMITH, "e-pat-rivera"), "e-pat-rivera"))
    expect(page.locator("h1")).to_have_text("We can't start your video visit right now")
    expect(page.locator("body")).to_contain_text("Please call your clinic")
    expect(page.locator("#retry")).to_have_count(0)  # a launch link cannot be reloaded: no "Try again"
    assert "Tenant config not found" not in page.content()
    assert_for_a_patient(page)


def test_a_patients_used_launch_link_says_so_in_plain_words(world: LaunchWorld, patient: BrowserContext) -> None:
    callbacks: list[str] = []
    patient.on("request", lambda r: callbacks.append(r.url) if "/api/launch/callback" in r.url else None)
    page = patient.new_page()
    page.goto(world.launch_url("patient", world.appointment_of(SMITH, "e-pat-chen"), "e-pat-chen"))
    page.wait_for_load_state()
    assert callbacks
    replay = patient.new_page()
    replay.goto(callbacks[0])
    expect(replay.locator("h1")).to_have_text("This link has expired")
    assert_for_a_patient(replay)


def test_a_broken_visit_link_is_told_to_a_patient_in_plain_words(world: LaunchWorld, patient: BrowserContext) -> None:
    page = patient.new_page()
    page.goto(f"{world.url}/api/visits/{'a' * 43}?t=not-a-token")
    expect(page.locator("h1")).to_have_text("This link has expired")
    assert_for_a_patient(page)


def test_the_waiting_room_shows_the_appointment_works_without_javascript_and_gives_up_on_a_fake_clock(
    world: LaunchWorld, patient: BrowserContext, browser: Browser, context: BrowserContext, clock: FakeClock
) -> None:
    # The appointment is today at a fixed hour (UTC): before it, the page would wait for its start, not 15 minutes
    # after the patient's arrival. The connector's clock starts just after it (the suite once ran at 00:04 UTC).
    booked = next(v for v in world.ehr.clinic.visits if v.appointment_id == world.appointment_of(NOPOLICY, WHITFIELD))
    clock.advance(max(timedelta(0), booked.start + timedelta(minutes=1) - clock()))
    waiting = begin_virtual_visit(patient, world, "mychart", WHITFIELD, WELLNESS)
    waiting.wait_for_url(f"{world.url}/api/visits/**")
    expect(waiting.locator("h1")).to_have_text("Your clinician will start the visit shortly")
    expect(waiting.locator("header")).to_contain_text("Contoso Health")
    expect(waiting.locator("#organization")).to_have_text("Contoso Health")
    start = next(v for v in world.ehr.clinic.visits if v.appointment_id == world.appointment_of(NOPOLICY, WHITFIELD))
    shown = waiting.locator("#appointment-time").get_attribute("datetime") or ""
    assert datetime.fromisoformat(shown) == start.start  # in UTC; the page's script shows it in the browser's zone
    expect(waiting.locator("#device-test")).to_be_visible()  # the device test stays available
    expect(waiting.locator("#speaker-test")).to_be_visible()
    assert_for_a_patient(waiting)

    # Without JavaScript: the same page reloads itself, offers a plain link, and hides what needs a script.
    no_script = new_context(browser, javascript=False)
    try:
        plain = no_script.new_page()
        plain.goto(waiting.url)
        expect(plain.locator("h1")).to_have_text("Your clinician will start the visit shortly")
        expect(plain.locator("#device-controls")).to_be_hidden()
        expect(plain.locator("#device-no-script")).to_be_visible()
        refresh = plain.locator("meta[http-equiv=refresh]")
        assert refresh.count() == 1 and waiting.url.split("?")[0] in (refresh.get_attribute("content") or "")
        with plain.expect_navigation():
            plain.locator("#check-now").click()
        expect(plain.locator("h1")).to_have_text("Your clinician will start the visit shortly")
    finally:
        no_script.close()
    assert_accessible_without_javascript(patient, waiting.url)

    # Nobody comes: 15 minutes after the patient arrived (the appointment began earlier today), the page's own
    # re-check notices and the page tells the patient what to do, while it keeps checking.
    clock.advance(timedelta(minutes=15))
    expect(waiting.locator("#give-up")).to_contain_text("Please call Contoso Health", timeout=30_000)
    expect(waiting.locator("h1")).to_have_text("Your clinician hasn't started the visit yet")
    expect(waiting.locator("#device-test")).to_be_visible()
    assert_for_a_patient(waiting)

    # The clinician's launch fails for a reason only an administrator can fix: they see the technical page ...
    clinician = begin_virtual_visit(context, world, "hyperspace", NOPOLICY, WELLNESS)
    sign_in_once(clinician, world, NOPOLICY_UPN)
    expect(clinician.locator("h1")).to_have_text("Teams meeting could not be created")
    commands = clinician.locator("#commands").inner_text()
    organizer = DIRECTORY.user_by_upn(NOPOLICY_UPN)
    assert organizer is not None
    assert f'-AppIds "{world.settings.entra_client_id}"' in commands
    assert f'-Identity "{organizer.object_id}"' in commands
    assert "<" not in clinician.locator("section").inner_text().replace(commands, "")  # no placeholders
    expect(clinician.locator("#copy-commands")).to_be_visible()
    assert_accessible(clinician)

    # ... and the patient's next launch (the organizer is now known, Teams still refuses) waits, never the PowerShell.
    again = begin_virtual_visit(patient, world, "mychart", WHITFIELD, WELLNESS)
    again.wait_for_url(f"{world.url}/api/visits/**")
    expect(again.locator("h1")).to_have_text("Your clinician will start the visit shortly")
    assert "Grant-CsApplicationAccessPolicy" not in again.content()
    assert_for_a_patient(again)


@pytest.mark.parametrize(
    ("book", "error"),
    [(book, error) for book in ("visit", "launch") for error, _ in PATIENT_CASES],
    ids=[f"{book}-{i}" for book in ("visit", "launch") for i in range(len(PATIENT_CASES))],
)
def test_every_patient_error_page_is_plain_and_accessible(
    patient: BrowserContext, book: str, error: ConnectorError
) -> None:
    pages = PATIENT_VISIT_PAGES if book == "visit" else PATIENT_LAUNCH_PAGES
    response = error_response(error, "c0ffee00-0000-4000-8000-000000000000", html=True, pages=pages)
    page = patient.new_page()
    page.set_content(response.get_body().decode())
    expect(page.locator("#retry")).to_have_count(1 if book == "visit" and error.retryable else 0)
    assert_for_a_patient(page)


# --- clinicians ----------------------------------------------------------------------------------


def test_a_clinicians_first_launch_explains_the_one_time_sign_in_then_confirms_it_in_the_same_journey(
    world: LaunchWorld, context: BrowserContext
) -> None:
    visited: list[str] = []
    context.on("request", lambda request: visited.append(request.url))
    page = begin_virtual_visit(context, world, "hyperspace", SMITH, "Medication review")
    expect(page.locator("h1")).to_have_text("Link your EHR account to Microsoft 365 once")
    expect(page.locator("[aria-current=step]")).to_contain_text("Sign in to Microsoft 365")
    assert not any(url.startswith(world.stand_ins.entra.browser_host) for url in visited)
    assert_accessible(page)

    choose_account(page, world, "dr.smith@contoso.example")  # presses Continue, then picks the account
    expect(page.locator("[aria-current=step]")).to_contain_text("Check and confirm the link")
    expect(page.locator("h1")).to_have_text("Link your Microsoft 365 account")
    assert_accessible(page)
    page.locator("#confirm-link").click()
    page.wait_for_url(f"{world.url}/api/visits/**")


def test_a_clinicians_launch_errors_keep_their_technical_detail(world: LaunchWorld, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(world.launch_url("unknown provider", world.appointment_of(SMITH, "e-pat-rivera"), SMITH))
    expect(page.locator("h1")).to_have_text("Tenant config not found")
    expect(page.locator("body")).to_contain_text("FDI record")
    assert re.search(r"correlation id [0-9a-f-]{36}", page.locator("body").inner_text())
    assert_accessible(page)
