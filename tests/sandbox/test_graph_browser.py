"""The Teams meeting page in headless Chromium: organizer joins, a patient waits in the lobby, is admitted, leaves."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.sandbox.graph_support import (  # noqa: F401 - fixture
    SMITH,
    RunningGraph,
    create_meeting,
    graph_fixture,
    http,
)

pytestmark = pytest.mark.browser


def _status(page: Page, status: str) -> None:
    expect(page.locator("#status")).to_have_attribute("data-status", status, timeout=10_000)


def _meeting_with_organizer_only_bypass(graph: RunningGraph) -> dict[str, Any]:
    meeting = create_meeting(graph)
    response = http.patch(
        f"{graph.url}/v1.0/users/{SMITH}/onlineMeetings/{meeting['id']}",
        headers=graph.headers(),
        json={"lobbyBypassSettings": {"scope": "organizer", "isDialInBypassEnabled": False}},
    )
    assert response.status_code == 200
    return meeting


def test_lobby_admit_and_leave_in_the_browser(graph: RunningGraph, browser: Browser) -> None:
    meeting = _meeting_with_organizer_only_bypass(graph)
    organizer_context, patient_context = browser.new_context(), browser.new_context()
    try:
        organizer = organizer_context.new_page()
        organizer.goto(meeting["joinWebUrl"])
        expect(organizer.locator("#user-id")).to_have_value(SMITH)
        organizer.click("#join-user")
        _status(organizer, "inCall")
        expect(organizer.locator("#end")).to_be_visible()

        patient = patient_context.new_page()
        patient.goto(meeting["joinWebUrl"])
        patient.fill("#display-name", "Pat <b>Patient</b>")
        patient.click("#join-guest")
        _status(patient, "lobby")
        expect(patient.locator("#status")).to_contain_text("let you in soon")

        admit = organizer.locator("#lobby li", has_text="Pat <b>Patient</b>").locator("button.admit")
        admit.click()
        _status(patient, "inCall")
        expect(patient.locator("#in-call")).to_contain_text("Dr. Jordan Smith")
        expect(organizer.locator("#in-call")).to_contain_text("Pat <b>Patient</b>")  # escaped, shown as text
        expect(patient.locator("#end")).to_have_count(0)  # only the organizer can end the meeting

        patient.click("#leave")
        _status(patient, "left")
        expect(organizer.locator("#in-call li")).to_have_count(1, timeout=10_000)

        organizer.click("#end")
        _status(organizer, "ended")
    finally:
        organizer_context.close()
        patient_context.close()
    snapshot = http.get(f"{graph.url}/_sandbox/meetings/{meeting['id']}").json()
    assert snapshot["callState"] == "ended"


def test_join_form_needs_its_csrf_cookie_and_a_name(graph: RunningGraph, browser: Browser) -> None:
    meeting = create_meeting(graph)
    forged = http.post(meeting["joinWebUrl"], data={"mode": "guest", "display_name": "X", "csrf": "guess"})
    assert forged.status_code == 403
    unknown = http.get(meeting["joinWebUrl"].replace("19%3ameeting_", "19%3ameeting_x"))
    assert unknown.status_code == 404 and "not valid" in unknown.text
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(meeting["joinWebUrl"])
        page.evaluate("document.getElementById('display-name').removeAttribute('required')")
        page.fill("#display-name", "   ")
        page.click("#join-guest")
        expect(page.locator("#error")).to_contain_text("display name")
    finally:
        context.close()
