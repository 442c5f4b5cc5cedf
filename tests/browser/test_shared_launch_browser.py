"""A configuration shared with another Microsoft 365 tenant, in headless Chromium on the sandbox: an affiliate's
clinician (same Epic, Fabrikam account) launches, meets in Fabrikam's tenant, and the patient lands in that
meeting's lobby; once sharing stops, the same clinician is asked to sign in again and refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from connector.services import services
from sandbox.seed import FABRIKAM
from shared.configurations import model as cfg
from shared.configurations.repository import ConfigurationRepository
from shared.storage.accounts import Storage
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_launch_browser import begin_virtual_visit, provider_page, sign_in_once
from tests.support.launch_world import LaunchWorld

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

GARCIA = "e-prac-garcia"
GARCIA_UPN = "dr.garcia@fabrikam.example"
GARCIA_OID = "c0000000-0000-4000-8000-000000000002"
VISIT = "Affiliate clinic follow-up"


def configurations(world: LaunchWorld) -> ConfigurationRepository:
    return ConfigurationRepository(Storage(world.settings).app)


def set_shares(world: LaunchWorld, *tenants: str) -> None:
    """What the owning admin's Share / Stop sharing buttons store (the portal's own tests press them)."""
    repository = configurations(world)
    current = repository.get(world.configuration.tenant_id, world.configuration.id)
    updated = current
    for tenant in tenants:
        updated = cfg.shared(updated, tenant, allowed_tenants=world.settings.entra_allowed_tenant_ids)
    if not tenants:
        updated = replace(current, shared_with=())
    repository.update(current, updated, etag=str(current.etag))
    # The host (in this process) remembers an approved configuration for 30 s: forget it now, as that lapse would.
    services().launch.forget_configuration(world.configuration.id)


def test_the_affiliates_clinician_meets_in_their_tenant_until_sharing_stops(
    world: LaunchWorld, context: BrowserContext, browser: Browser
) -> None:
    set_shares(world, FABRIKAM.id)
    provider = begin_virtual_visit(context, world, "hyperspace", GARCIA, VISIT)
    sign_in_once(provider, world, GARCIA_UPN)
    join_url = provider_page(provider, world)
    meeting = world.stand_ins.graph.meeting_by_join_web_url(join_url)
    assert meeting is not None
    assert (meeting.tenant_id, meeting.organizer.object_id) == (FABRIKAM.id, GARCIA_OID)

    patient_context = browser.new_context()
    patient_context.set_default_timeout(TIMEOUT_MS)
    try:
        patient = begin_virtual_visit(patient_context, world, "mychart", "e-pat-okafor", VISIT)
        patient.wait_for_url(join_url)
        patient.fill("#display-name", "Jamie Okafor")
        patient.click("#join-guest")
        expect(patient.locator("#status")).to_have_attribute("data-status", "lobby")
    finally:
        patient_context.close()

    set_shares(world)  # the owning tenant stops sharing
    again = begin_virtual_visit(context, world, "hyperspace", GARCIA, VISIT)
    sign_in_once(again, world, GARCIA_UPN)  # the stored Fabrikam mapping no longer counts
    expect(again.locator("h1")).to_have_text("Wrong Microsoft 365 account")
    expect(again.locator("body")).to_contain_text("correlation id")


def test_without_a_share_the_affiliates_clinician_is_refused(world: LaunchWorld, context: BrowserContext) -> None:
    set_shares(world)
    page = begin_virtual_visit(context, world, "hyperspace", GARCIA, VISIT)
    sign_in_once(page, world, GARCIA_UPN)
    expect(page.locator("h1")).to_have_text("Wrong Microsoft 365 account")
