"""Live presence and EHR writeback in headless Chromium: the patient waits in the sandbox meeting's lobby, is
admitted, leaves; the provider's panel shows each state truthfully (a launch is not a join), with since-when, the
lobby wait and the meeting's end, passes axe-core in each, and stops polling once the meeting has ended, while the
sandbox EHR records connect and disconnect for both — through the real function app on the local host (launch,
Graph webhook, writeback queue trigger)."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from shared.kernel.settings import Geography
from shared.storage.accounts import Storage
from shared.visits.model import Visit
from shared.visits.repository import VisitRepository
from tests.support.accessibility import assert_accessible
from tests.support.launch_world import SMITH, SMITH_UPN, LaunchWorld
from tests.support.sealing import sealer_for
from tests.support.teams_page import join_from_panel

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

TIMEOUT_MS = 30_000
PANEL_MS = 65_000  # the panel looks again at most 60 s after its last look (shared.visits.panel.MAX_POLL)
PATIENT = "e-pat-patel"
ROW = "Medication review"
SMITH_OID = "b0000000-0000-4000-8000-000000000001"


def new_context(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    return context


def begin_virtual_visit(context: BrowserContext, world: LaunchWorld, portal: str, user: str) -> Page:
    page = context.new_page()
    page.goto(f"{world.ehr_url}/{portal}/{user}")
    if portal == "hyperspace":
        button = page.locator("tr", has_text=ROW).get_by_role(
            "button", name=re.compile(r"Begin virtual visit.*\(provider\)")
        )
    else:
        button = page.locator("section", has_text=ROW).get_by_role("button", name="Begin virtual visit")
    with context.expect_page() as opened:
        button.click()
    launched = opened.value
    launched.wait_for_load_state()
    return launched


def expect_panel(panel: Page, role: str, state: str) -> None:
    """The provider page's live panel (polling /presence) shows ``state`` for ``role``, and passes axe-core."""
    expect(panel.locator(f"#presence-{role}")).to_have_attribute("data-state", state, timeout=PANEL_MS)
    assert_accessible(panel)


def since_of(panel: Page, role: str) -> str:
    """The ISO time the panel shows ``role``'s state since."""
    since = panel.locator(f"tr:has(#presence-{role}) time").get_attribute("datetime")
    assert since is not None
    return since


def wait_for_subscription(world: LaunchWorld, visit_key: str) -> Visit:
    repository = VisitRepository(Storage(world.settings), sealer_for(world.settings))
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        visit = repository.get(Geography.EMEA, visit_key)
        if visit is not None and visit.subscription_id:
            return visit
        time.sleep(0.2)
    raise AssertionError("the provider's launch event did not subscribe to the meeting's call events")


def test_lobby_admit_leave_show_on_the_provider_panel_and_reach_the_ehr_once(
    world: LaunchWorld, browser: Browser
) -> None:
    clinic_visit = next(v for v in world.ehr.clinic.visits if v.practitioner_id == SMITH and v.patient_id == PATIENT)
    provider_context, patient_context = new_context(browser), new_context(browser)
    try:
        # The clinician begins the visit: one-time Microsoft sign-in, "Link my account", then the provider page.
        panel = begin_virtual_visit(provider_context, world, "hyperspace", SMITH)
        panel.locator("#continue-signin").click()  # the page explaining the one-time sign-in
        panel.wait_for_url(f"{world.stand_ins.entra.browser_host}/**")
        panel.locator(f"button[data-upn='{SMITH_UPN}']").click()
        panel.locator("#confirm-link").click()
        panel.wait_for_url(f"{world.url}/api/visits/**")
        visit_key = urlsplit(panel.url).path.rsplit("/", 1)[-1]
        expect_panel(panel, "patient", "not_arrived")
        expect(panel.locator("#presence-patient")).to_contain_text("Not here yet")
        expect(panel.locator("#panel-reload")).to_have_attribute("href", panel.url)
        # The launch is a launch, not a join: the clinician is not in Teams yet.
        expect_panel(panel, "provider", "launched")
        wait_for_subscription(world, visit_key)

        # The clinician joins the Teams meeting as themselves.
        teams = join_from_panel(provider_context, panel, SMITH_OID)
        expect(teams.locator("#status")).to_have_attribute("data-status", "inCall", timeout=TIMEOUT_MS)
        expect_panel(panel, "provider", "in_meeting")
        expect(panel.locator("#presence-provider")).to_contain_text("In the meeting")

        # The patient launches from MyChart, lands in the meeting and waits in the lobby.
        patient = begin_virtual_visit(patient_context, world, "mychart", PATIENT)
        patient.wait_for_url(f"{world.stand_ins.settings['GRAPH_BASE_URL']}/**")
        patient.fill("#display-name", "Sam Patel")
        patient.click("#join-guest")
        expect(patient.locator("#status")).to_have_attribute("data-status", "lobby", timeout=TIMEOUT_MS)
        expect_panel(panel, "patient", "in_lobby")
        in_lobby_since = since_of(panel, "patient")
        with panel.expect_response(lambda r: "/presence" in r.url and r.status == 304, timeout=PANEL_MS):
            pass  # nothing changes until the admission: the next poll is answered 304, without a body
        expect(panel.locator("#presence-patient")).to_contain_text("In the lobby")

        # Admitted by the clinician, the patient is connected, with the lobby wait; then the patient leaves.
        teams.locator("button.admit").click()
        expect(patient.locator("#status")).to_have_attribute("data-status", "inCall", timeout=TIMEOUT_MS)
        expect_panel(panel, "patient", "in_meeting")
        expect(panel.locator("#lobby-wait-patient")).to_contain_text("in the lobby")
        assert since_of(panel, "patient") >= in_lobby_since
        patient.click("#leave")
        expect_panel(panel, "patient", "left")
        expect(panel.locator("#meeting-ended")).to_have_count(0)

        # The clinician leaves: the meeting has ended, and the panel says so and stops asking.
        presence_requests: list[str] = []
        panel.on("request", lambda r: presence_requests.append(r.url) if "/presence" in r.url else None)
        teams.click("#leave")
        expect_panel(panel, "provider", "left")
        expect(panel.locator("#meeting-ended")).to_contain_text("The meeting has ended")
        expect(panel.locator("#panel-live")).to_be_hidden()
        asked = len(presence_requests)
        panel.wait_for_timeout(7_000)  # longer than the shortest poll delay
        assert len(presence_requests) == asked, "the panel kept polling after the meeting ended"

        # Without JavaScript, the page still tells the truth, and its reload link is the way to update it.
        no_script = browser.new_context(java_script_enabled=False)
        try:
            static = no_script.new_page()
            static.goto(panel.url)
            expect(static.locator("#presence-patient")).to_have_attribute("data-state", "left")
            expect(static.locator("#meeting-ended")).to_be_visible()
            expect(
                static.locator("#panel-reload")
            ).to_be_visible()  # (axe needs JavaScript: it ran on this state above)
        finally:
            no_script.close()
    finally:
        patient_context.close()
        provider_context.close()

    ehr = world.ehr
    deadline = time.monotonic() + 10
    expected = {
        (clinic_visit.practitioner_id, "1"): 1,
        (clinic_visit.practitioner_id, "2"): 1,
        (clinic_visit.patient_id, "1"): 1,
        (clinic_visit.patient_id, "2"): 1,
    }

    def recorded() -> dict[tuple[str, str], int]:
        return {
            (external_id, status): ehr.count_status_changes(clinic_visit.csn, external_id, status)
            for external_id, status in expected
        }

    while recorded() != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded() == expected  # connect and disconnect for both, each exactly once
    changes = ehr.connection_status_changes(conference_id=clinic_visit.csn)
    assert [c.external_id_type for c in changes if c.external_id == clinic_visit.patient_id] == ["2", "2"]
