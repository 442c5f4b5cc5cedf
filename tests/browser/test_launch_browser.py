"""Provider and patient launches in headless Chromium, from the Hyperspace and MyChart stand-ins to the Teams
meeting, through the real function app in the local host, Azurite, and the sandbox EHR, Entra ID and Graph.

The whole suite runs once per flavour of the sandbox EHR (``sandbox/ehr/flavours.py``): Epic; Oracle Health
(tenant id in the FHIR path, Millennium's discovery and token response, no appointment field: PowerChart and the
patient portal); and a plain SMART 2 server (kid-less id_tokens, relative ``fhirUser``, the Appointment in
``fhirContext``), each with a configuration of the matching vendor and the records its profile lists. Oracle's
patient portal launches through the tenant's patient-access FHIR base (``/myrecord/r4/{tenant}``), which the
Oracle configuration names as its patient-side FHIR URL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role
from shared.visits.model import compose, with_presence, with_roster_fact
from shared.visits.repository import VisitRepository
from shared.writeback.ledger import WritebackLedger
from tests.browser.conftest import TIMEOUT_MS
from tests.support.launch_world import (
    FLAVOUR_VENDORS,
    LEE,
    LEE_UPN,
    SMITH,
    SMITH_UPN,
    LaunchWorld,
    launch_world,
)
from tests.support.sealing import sealer_for

pytestmark = [pytest.mark.browser, pytest.mark.azurite]


@pytest.fixture(scope="module", params=sorted(FLAVOUR_VENDORS))
def world(
    request: pytest.FixtureRequest, azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LaunchWorld]:
    """One sandbox per EHR flavour: every test below runs against Epic, Oracle Health and a plain SMART server."""
    with launch_world(
        azurite_port_base, tmp_path_factory.mktemp(f"launch-{request.param}"), flavour=request.param
    ) as running:
        yield running


def begin_virtual_visit(context: BrowserContext, world: LaunchWorld, portal: str, user: str, row: str) -> Page:
    """Press Begin virtual visit in Hyperspace (portal='hyperspace') or MyChart: the app opens in a new window."""
    page = context.new_page()
    page.goto(f"{world.ehr_url}/{portal}/{user}")
    if portal == "hyperspace":  # several provider records: pick the approved test configuration's
        visit = page.locator("tr", has_text=row)
        button = visit.get_by_role("button", name=re.compile(r"Begin virtual visit.*\(provider\)"))
    else:  # one patient record
        button = page.locator("section", has_text=row).get_by_role("button", name="Begin virtual visit")
    with context.expect_page() as opened:
        button.click()
    launched = opened.value
    launched.wait_for_load_state()
    return launched


def sign_in_once(page: Page, world: LaunchWorld, upn: str) -> None:
    """The one-time Microsoft 365 sign-in: pick the account on the (sandbox) Entra ID page, then confirm the link
    on the connector's page that names the EHR user and the account (when the sign-in was not refused)."""
    choose_account(page, world, upn)
    if page.locator("#confirm-link").count():
        expect(page.locator("#microsoft-account")).to_have_text(upn)
        page.locator("#confirm-link").click()


def continue_to_microsoft(page: Page) -> None:
    """ "Continue" on the connector's page that explains the one-time sign-in (a clinician's first launch)."""
    expect(page.locator("h1")).to_have_text("Link your EHR account to Microsoft 365 once")
    page.locator("#continue-signin").click()


def choose_account(page: Page, world: LaunchWorld, upn: str) -> None:
    """Continue past the connector's explanation, pick the account on the (sandbox) Entra ID page and wait for
    the connector's answer."""
    if not page.url.startswith(world.stand_ins.entra.browser_host):
        continue_to_microsoft(page)
    page.wait_for_url(f"{world.stand_ins.entra.browser_host}/**")
    page.locator(f"button[data-upn='{upn}']").click()
    page.wait_for_url(f"{world.url}/api/launch/signin/**")
    page.wait_for_load_state()


def provider_page(page: Page, world: LaunchWorld) -> str:
    page.wait_for_url(f"{world.url}/api/visits/**")
    join = page.locator("#join")
    expect(join).to_be_visible()
    href = join.get_attribute("href")
    assert href and href.startswith(world.stand_ins.settings["GRAPH_BASE_URL"])
    return href


def test_provider_first_launch_signs_in_once_and_second_launch_goes_straight_in(
    world: LaunchWorld, context: BrowserContext
) -> None:
    visited: list[str] = []
    context.on("request", lambda request: visited.append(request.url))
    first = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    assert not any(url.startswith(world.stand_ins.entra.browser_host) for url in visited), "explained first"
    sign_in_once(first, world, SMITH_UPN)
    join_url = provider_page(first, world)
    expect(first.locator("#presence-patient")).to_have_attribute("data-state", "not_arrived")
    assert any(url.startswith(world.stand_ins.entra.browser_host) for url in visited)

    visited.clear()
    second = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    assert provider_page(second, world) == join_url
    assert not any(url.startswith(world.stand_ins.entra.browser_host) for url in visited), "no second sign-in"

    with context.expect_page() as teams:
        second.locator("#join").click()  # Teams opens in a new window
    meeting = teams.value
    meeting.wait_for_load_state()
    expect(meeting.locator("#join-user")).to_be_visible()
    assert world.stand_ins.graph.meeting_by_join_web_url(join_url) is not None


def test_patient_launch_from_mychart_lands_in_the_same_meetings_lobby(
    world: LaunchWorld, context: BrowserContext, browser: Browser
) -> None:
    provider = begin_virtual_visit(context, world, "hyperspace", SMITH, "Medication review")
    if provider.locator("#continue-signin").count():
        sign_in_once(provider, world, SMITH_UPN)
    join_url = provider_page(provider, world)

    patient_context = browser.new_context()
    patient_context.set_default_timeout(TIMEOUT_MS)
    requested: list[str] = []
    patient_context.on("request", lambda r: requested.append(r.url))
    try:
        patient = begin_virtual_visit(patient_context, world, "mychart", "e-pat-patel", "Medication review")
        patient.wait_for_url(join_url)
        patient.fill("#display-name", "Sam Patel")
        patient.click("#join-guest")
        expect(patient.locator("#status")).to_have_attribute("data-status", "lobby")
    finally:
        patient_context.close()
    # Oracle: the patient portal sends the patient-access base as iss, and the connector authorizes against it
    # (its own discovery names the patient persona's authorize endpoint); other EHRs: the one FHIR base.
    config = world.ehr.config
    patient_base = config.patient_fhir_base
    assert (patient_base != config.fhir_base) is (world.configuration.patient_fhir_base_url != "")
    launch = next(u for u in requested if "/api/launch/" in u and "iss=" in u)
    assert parse_qs(urlsplit(launch).query)["iss"] == [patient_base]
    authorize = next(u for u in requested if u.startswith(config.authorize_url_for(patient_base)))
    assert parse_qs(urlsplit(authorize).query)["aud"] == [patient_base]


def test_a_provider_launch_naming_the_patient_side_fhir_url_is_refused_before_any_request(
    world: LaunchWorld, context: BrowserContext
) -> None:
    """The patient-side FHIR URL is on the allow-list of patient launches only."""
    config = world.ehr.config
    if config.patient_fhir_base == config.fhir_base:
        pytest.skip(f"the {config.spec.product} flavour has no patient-side FHIR base")
    launch_url = world.launch_url("provider", world.appointment_of(SMITH, "e-pat-rivera"), SMITH)
    forged = launch_url.replace(
        f"iss={quote(config.fhir_base, safe='')}", f"iss={quote(config.patient_fhir_base, safe='')}"
    )
    assert forged != launch_url
    before = world.ehr_requests()
    page = context.new_page()
    page.goto(forged)
    expect(page.locator("h1")).to_have_text("Tenant config not found")
    assert world.ehr_requests()[len(before) :] == []


def test_patient_before_the_provider_waits_then_joins_when_the_provider_starts(
    world: LaunchWorld, context: BrowserContext, browser: Browser
) -> None:
    patient_context = browser.new_context()
    patient_context.set_default_timeout(TIMEOUT_MS)
    try:
        patient = begin_virtual_visit(patient_context, world, "mychart", "e-pat-novak", "Lab results")
        patient.wait_for_url(f"{world.url}/api/visits/**")
        expect(patient.locator("h1")).to_contain_text("Your clinician will start the visit shortly")
        expect(patient.get_by_role("button", name="Test your camera and microphone")).to_be_visible()

        provider = begin_virtual_visit(context, world, "hyperspace", LEE, "Lab results")
        sign_in_once(provider, world, LEE_UPN)
        join_url = provider_page(provider, world)

        patient.wait_for_url(join_url, timeout=TIMEOUT_MS)  # the waiting page moved on by itself
    finally:
        patient_context.close()


def test_a_second_appointment_gets_a_different_meeting(world: LaunchWorld, context: BrowserContext) -> None:
    first = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    if first.locator("#continue-signin").count():
        sign_in_once(first, world, SMITH_UPN)
    second = begin_virtual_visit(context, world, "hyperspace", SMITH, "New patient video visit")
    assert provider_page(first, world) != provider_page(second, world)


@pytest.mark.parametrize(
    ("record", "text"),
    [
        ("pending provider", "Configuration pending approval"),
        ("unknown provider", "Tenant config not found"),
        ("production provider", "Tenant config not found"),
    ],
)
def test_launches_without_an_approved_matching_configuration_send_nothing_to_the_ehr(
    world: LaunchWorld, context: BrowserContext, record: str, text: str
) -> None:
    before = world.ehr_requests()
    page = context.new_page()
    page.goto(world.launch_url(record, world.appointment_of(SMITH, "e-pat-rivera"), SMITH))
    expect(page.locator("h1")).to_have_text(text)
    expect(page.locator("body")).to_contain_text("correlation id")
    assert world.ehr_requests()[len(before) :] == []


def test_replayed_and_forged_state_are_refused(world: LaunchWorld, context: BrowserContext) -> None:
    callbacks: list[str] = []
    context.on("request", lambda r: callbacks.append(r.url) if "/api/launch/callback" in r.url else None)
    page = context.new_page()
    page.goto(world.launch_url("patient", world.appointment_of(SMITH, "e-pat-chen"), "e-pat-chen"))
    page.wait_for_load_state()
    assert callbacks, "the EHR redirected back"
    replay = context.new_page()
    replay.goto(callbacks[0])
    expect(replay.locator("h1")).to_have_text("This link has expired")  # an unknown state names no audience
    forged = context.new_page()
    forged.goto(re.sub(r"state=[^&]+", "state=" + "A" * 43, callbacks[0]))
    expect(forged.locator("h1")).to_have_text("This link has expired")


def test_the_live_panel_follows_presence_and_each_launch_queues_its_event(
    world: LaunchWorld, context: BrowserContext
) -> None:
    page = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    if page.locator("#continue-signin").count():
        sign_in_once(page, world, SMITH_UPN)
    provider_page(page, world)
    visit_key = page.url.split("/api/visits/")[1].split("?")[0]
    storage = Storage(world.settings)
    visits = VisitRepository(storage, sealer_for(world.settings))
    visit = visits.get(world.configuration.geography, visit_key)
    assert visit is not None

    # What the writeback consumer records when Graph reports the patient in the lobby, then admitted.
    def roster(state: EventKind, at: datetime) -> Any:
        return compose(with_presence(Role.PATIENT, state, at), with_roster_fact(Role.PATIENT, state, at))

    visit = visits.update(visit, roster(EventKind.LOBBY, datetime.now(UTC)))
    panel_ms = 65_000  # the panel looks again at most 60 s after its last look (shared.visits.panel.MAX_POLL)
    expect(page.locator("#presence-patient")).to_have_attribute("data-state", "in_lobby", timeout=panel_ms)
    visits.update(visit, roster(EventKind.CONNECTED, datetime.now(UTC) + timedelta(seconds=1)))
    expect(page.locator("#presence-patient")).to_have_attribute("data-state", "in_meeting", timeout=panel_ms)

    # The launch queued its connected event; the writeback queue trigger consumed it: the provider's presence
    # comes from it. Epic takes connects from Teams' roster, not from launches: the event is skipped, so it needs
    # no claim in the ledger (a skipped event has no EHR effect to guard).
    deadline = time.monotonic() + 20
    current = visits.get(world.configuration.geography, visit_key)
    ledger = WritebackLedger(storage)
    while time.monotonic() < deadline and not (current and Role.PROVIDER in current.presence):
        time.sleep(0.2)
        current = visits.get(world.configuration.geography, visit_key)
    assert current is not None and current.presence[Role.PROVIDER].state is EventKind.CONNECTED
    assert ledger.entries(world.configuration.geography, visit_key) == []


def test_the_patients_email_or_sms_join_link_opens_the_same_lobby_without_an_account(
    world: LaunchWorld, context: BrowserContext, browser: Browser
) -> None:
    provider = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    if "/api/visits/" not in provider.url:  # a first launch: the one-time sign-in
        sign_in_once(provider, world, SMITH_UPN)
    join_url = provider_page(provider, world)
    link = provider.locator("#patient-join-link").input_value()
    assert link.startswith(f"{world.url}/api/visits/")

    phone = browser.new_context()  # the patient's phone, opening the link from an email or SMS: no account
    phone.set_default_timeout(TIMEOUT_MS)
    try:
        patient = phone.new_page()
        patient.goto(link)
        patient.wait_for_url(join_url)
        patient.fill("#display-name", "Alex Rivera")
        patient.click("#join-guest")
        expect(patient.locator("#status")).to_have_attribute("data-status", "lobby")
    finally:
        phone.close()


def test_the_panel_stops_polling_while_hidden_and_looks_at_once_when_shown_again(
    world: LaunchWorld, context: BrowserContext
) -> None:
    page = begin_virtual_visit(context, world, "hyperspace", SMITH, "Follow-up: hypertension")
    if "/api/visits/" not in page.url:  # a first launch: the one-time sign-in
        sign_in_once(page, world, SMITH_UPN)
    provider_page(page, world)
    expect(page.locator("#panel-live")).to_be_visible()  # the script runs and polls
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/presence" in r.url else None)

    page.evaluate(HIDE)  # another window or tab on top: the browser reports the page hidden
    page.wait_for_timeout(12_000)  # longer than the panel's next few polls would be
    assert polls == [], "the panel polled while hidden"

    with page.expect_request(lambda r: "/presence" in r.url, timeout=3_000):
        page.evaluate(SHOW)


HIDE = """() => {
  Object.defineProperty(document, "hidden", {configurable: true, get: () => true});
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => "hidden"});
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW = """() => {
  delete document.hidden;
  delete document.visibilityState;
  document.dispatchEvent(new Event("visibilitychange"));
}"""
