"""Editing an approved configuration does not take production down (issue 13, item 7), in headless Chromium on the
sandbox: while an edit of every launch-relevant field awaits approval, clinicians (also an affiliate's, through a
share) and patients launch exactly as before, against the approved version; a launch naming the edited FHIR URL is
refused before anything leaves the connector; rejecting the edit changes nothing for launches."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from sandbox.seed import FABRIKAM
from shared.configurations import model as cfg
from shared.configurations.model import Vendor, WritebackMode
from shared.kernel.clock import utcnow
from shared.kernel.settings import Geography
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_launch_browser import begin_virtual_visit, provider_page, sign_in_once
from tests.browser.test_shared_launch_browser import GARCIA, GARCIA_OID, GARCIA_UPN, configurations, set_shares
from tests.support.launch_world import SMITH, SMITH_UPN, LaunchWorld

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

EDITED_URL = "https://epic-moved.contoso.example/api/FHIR/R4"


def store_edit(world: LaunchWorld) -> cfg.Configuration:
    """What the admin's "Save changes" stores (the portal's own tests press it): every field a launch uses changed."""
    repository = configurations(world)
    current = repository.get(world.configuration.tenant_id, world.configuration.id)
    data = replace(
        current.input(),
        organization="Contoso Health (renamed)",
        fhir_base_url=EDITED_URL,
        geography=Geography.AMERICAS,
        vendor=Vendor.SMART,
        provider_client_id="not-registered-at-the-ehr",
        patient_client_id="not-registered-either",
        writeback_mode=WritebackMode.NONE,
    )
    repository.update(
        current, cfg.edited(current, data, by="admin@contoso.example", now=utcnow()), etag=str(current.etag)
    )
    stored = repository.get(world.configuration.tenant_id, world.configuration.id)
    assert stored.is_approved and stored.edit is not None and stored.fhir_base_url == world.configuration.fhir_base_url
    return stored


def discard_edit(world: LaunchWorld) -> None:
    """What the approver's "Reject the edit" stores."""
    repository = configurations(world)
    current = repository.get(world.configuration.tenant_id, world.configuration.id)
    if current.edit is not None:
        repository.update(current, cfg.edit_discarded(current), etag=str(current.etag))


def test_launches_keep_the_approved_version_while_an_edit_awaits_approval(
    world: LaunchWorld, context: BrowserContext, browser: Browser
) -> None:
    set_shares(world, FABRIKAM.id)
    store_edit(world)
    try:
        # The clinician: signs in once, lands on the meeting page of the approved configuration.
        provider = begin_virtual_visit(context, world, "hyperspace", SMITH, "Medication review")
        if "/api/visits/" not in provider.url:  # a first launch: the one-time sign-in
            sign_in_once(provider, world, SMITH_UPN)
        join_url = provider_page(provider, world)

        # The patient: the same meeting's lobby.
        patient_context = browser.new_context()
        patient_context.set_default_timeout(TIMEOUT_MS)
        try:
            patient = begin_virtual_visit(patient_context, world, "mychart", "e-pat-patel", "Medication review")
            patient.wait_for_url(join_url)
            patient.fill("#display-name", "Sam Patel")
            patient.click("#join-guest")
            expect(patient.locator("#status")).to_have_attribute("data-status", "lobby")
        finally:
            patient_context.close()

        # The affiliate's clinician, through the share: still meets in their own tenant.
        affiliate_context = browser.new_context()
        affiliate_context.set_default_timeout(TIMEOUT_MS)
        try:
            garcia = begin_virtual_visit(affiliate_context, world, "hyperspace", GARCIA, "Affiliate clinic follow-up")
            sign_in_once(garcia, world, GARCIA_UPN)
            meeting = world.stand_ins.graph.meeting_by_join_web_url(provider_page(garcia, world))
            assert meeting is not None and (meeting.tenant_id, meeting.organizer.object_id) == (FABRIKAM.id, GARCIA_OID)
        finally:
            affiliate_context.close()

        # The edited FHIR URL is not on the allow-list until approved: refused before any request leaves.
        before = world.ehr_requests()
        forged = context.new_page()
        forged.goto(
            f"{world.url}/api/launch/{world.configuration.id}/provider?iss={quote(EDITED_URL, safe='')}&launch=x"
        )
        expect(forged.locator("h1")).to_have_text("Tenant config not found")
        assert world.ehr_requests()[len(before) :] == []
    finally:
        discard_edit(world)
        set_shares(world)

    # Rejected: the approved version, as it was, goes on serving launches (the clinician goes straight in).
    stored = configurations(world).get(world.configuration.tenant_id, world.configuration.id)
    assert stored.edit is None and stored.organization == world.configuration.organization
    again = begin_virtual_visit(context, world, "hyperspace", SMITH, "Medication review")
    assert provider_page(again, world) == join_url
