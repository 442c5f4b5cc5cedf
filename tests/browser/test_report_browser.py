"""The usage report in headless Chromium against the real function app: axe-clean, charts as SVG with their
tables, CSV download round-trip, who may open it (sandbox Entra users: admin, Connector.Reports, a clinician)."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Browser, expect

from connector.services import services
from sandbox.seed import CONTOSO
from shared.configurations import model as cfg
from shared.configurations.model import Configuration, Status
from shared.configurations.repository import ConfigurationRepository
from shared.portal.service import to_input
from tests.browser import test_portal_journey as journey
from tests.browser.test_portal_journey import World, sign_in
from tests.functions.test_portal import configuration_form
from tests.support.accessibility import assert_accessible
from tests.support.report_events import visit_messages

pytestmark = [pytest.mark.browser, pytest.mark.azurite]
tls, entra, world = journey.tls, journey.entra, journey.world  # the journey's fixtures: Entra, the local host


@pytest.fixture(autouse=True)
def removed_afterwards(world: World, env: dict[str, str]) -> Iterator[None]:
    """Delete what a test stored: the portal journey, sharing this Azurite, starts from an empty dashboard."""
    yield
    repository = ConfigurationRepository(services().storage.app)
    for config in repository.list_for_tenant(CONTOSO.id):
        if config.fhir_base_url.startswith("https://ehr-") and ".contoso.example/" in config.fhir_base_url:
            repository.delete(config)


def contoso_configuration_with_visits(env: dict[str, str]) -> Configuration:
    now = datetime.now(UTC)
    values = configuration_form(f"https://ehr-{uuid.uuid4().hex[:8]}.contoso.example/api/FHIR/R4")
    config = cfg.new_configuration(CONTOSO.id, to_input(values), by="admin@contoso.example", now=now)
    config = ConfigurationRepository(services().storage.app).create(
        replace(config, status=Status.APPROVED, approved_by="analyst@contoso.example", approved_at=now)
    )
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=1, hours=2)
    for n, outcome in enumerate(("completed", "completed", "no_show", "abandoned", "completed")):
        for body in visit_messages(
            services().sealer, configuration_id=config.id, geography=config.geography.value,
            visit_key=uuid.uuid4().hex, start=start + timedelta(minutes=25 * n), outcome=outcome,
            wait_minutes=1 + n, patients=2 if n == 4 else 1,
        ):  # fmt: skip
            services().report_recorder.record(body)
    # The days' summaries as the upkeep timer computes them after these facts. The journey host runs that timer
    # too: had it computed a day while the facts above were being recorded, the page would show that partial
    # summary while it is fresh (up to 20 minutes; an open day's late facts mark nothing).
    day = start.date()
    while day <= now.date():
        services().report_days.compute(config.geography, config.id, day, now=datetime.now(UTC))
        day += timedelta(days=1)
    return config


def test_the_report_page_is_accessible_and_its_csv_round_trips(
    browser: Browser, world: World, env: dict[str, str]
) -> None:
    config = contoso_configuration_with_visits(env)
    page = sign_in(browser, world, "admin@contoso.example")
    page.goto(f"{world.public}/api/portal/configurations/{config.id}/report?days=7")
    expect(page.get_by_role("heading", name=f"Usage report: {config.organization}")).to_be_visible()
    expect(page.locator("#total-visits")).to_have_text("5")
    expect(page.locator("#total-completed")).to_have_text("3")
    for chart in ("chart-per-day", "chart-waits", "chart-hours"):
        svg = page.locator(f"svg#{chart}")
        expect(svg).to_have_attribute("role", "img")
        assert svg.locator("rect.bar").count() > 0
    page.get_by_text("Visits per day as a table").click()
    expect(page.locator("#per-day-table")).to_be_visible()
    # Nothing to run for the report: charts are drawn by the server (the one script is the base page's time script).
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    if os.environ.get("REPORT_SCREENSHOT"):
        page.screenshot(path=os.environ["REPORT_SCREENSHOT"], full_page=True)
    assert_accessible(page)

    page.select_option("#days", "30")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#total-visits")).to_have_text("5")
    page.fill("#day", (datetime.now(UTC) - timedelta(days=1, hours=2)).date().isoformat())
    page.get_by_role("button", name="Show the day").click()
    assert page.locator("#appointments tbody tr").count() >= 1
    assert_accessible(page)

    with page.expect_download() as download:
        page.locator("#export-csv").click()
    body = download.value.path().read_bytes()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert sorted(r["status"] for r in rows) == ["abandoned", "completed", "completed", "completed", "no_show"]
    group = [r for r in rows if r["patients"] == "2"]
    assert len(group) == 1 and len(group[0]["lobby_waits"].split()) == 2
    for row in rows:
        for column in ("first_launch", "start", "end"):
            if row[column]:
                assert row[column].endswith("Z")
                datetime.fromisoformat(row[column].replace("Z", "+00:00"))
    settings = page.locator("#report-settings")
    expect(settings).to_be_visible()


def test_a_report_reader_sees_it_a_clinician_does_not(browser: Browser, world: World, env: dict[str, str]) -> None:
    config = contoso_configuration_with_visits(env)
    reader = sign_in(browser, world, "reports@contoso.example")
    reader.goto(f"{world.public}/api/portal/reports")
    # Other tests' configurations (in this shared Azurite) may bear the same organization's name: this one's link.
    reader.locator(f'a[href="/api/portal/configurations/{config.id}/report"]').click()
    expect(reader.locator("#total-visits")).to_have_text("5")
    expect(reader.locator("#report-settings")).to_have_count(0)  # reading is not administering
    assert_accessible(reader)

    clinician = sign_in(browser, world, "dr.smith@contoso.example")
    response = clinician.goto(f"{world.public}/api/portal/configurations/{config.id}/report")
    assert response is not None and response.status == 404
    assert_accessible(clinician)
