"""The sandbox Teams meeting page, driven as a clinician does from the provider's panel."""

from __future__ import annotations

from playwright.sync_api import BrowserContext, Page


def join_from_panel(context: BrowserContext, panel: Page, object_id: str) -> Page:
    """Press the panel's Join, sign in to the meeting page as the Microsoft 365 user ``object_id`` and join;
    the meeting page (in the call, or in the lobby for anyone but the organizer)."""
    with context.expect_page() as opened:
        panel.locator("#join").click()
    teams = opened.value
    teams.select_option("#user-id", object_id)
    teams.click("#join-user")
    return teams
