"""Attacks on the launch context, over real HTTP: the function app in the local host, Azurite, and the sandbox EHR,
Entra ID and Graph. Each fails on a connector that lets the launch URL decide the visit.

The launch URL's context tokens (``sessionId=%CSN%``, ``departmentId``) travel through the user's browser: the
attacker edits them there (headless Chromium). The EHR's token response and the launch's Encounter, read with the
launch's own token, decide the visit; the sandbox EHR refuses writeback for a participant not on the visit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from connector.services import services
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.kernel.errors import UpstreamRejected
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import Visit, visit_key
from shared.visits.repository import VisitRepository
from shared.writeback.model import WritebackTarget, Written
from tests.support.audience import technical_words
from tests.support.launch_world import LEE, LEE_UPN, SMITH, SMITH_UPN, LaunchWorld, launch_world
from tests.support.sealing import sealer_for

pytestmark = [pytest.mark.browser, pytest.mark.azurite]

TIMEOUT_MS = 20_000
SMITH_OID = "b0000000-0000-4000-8000-000000000001"
MISMATCH = "This visit link does not match your appointment"
UNCONFIRMED = "The EHR did not confirm this visit"
# A patient's launch is refused in a patient's words; what to configure is the analyst's (the log, by correlation id).
PATIENT_REFUSED = "We can't start your video visit right now"


@pytest.fixture(scope="module")
def world(azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchWorld]:
    with launch_world(azurite_port_base, Path(tmp_path_factory.mktemp("launch_context_trust"))) as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


@pytest.fixture
def patient_client(world: LaunchWorld) -> Iterator[Callable[..., None]]:
    """Reconfigure what the EHR's token response carries for the patient app (the analyst's integration build)."""
    clients = world.ehr.state.clients
    original = clients[DEMO_PATIENT_CLIENT_ID]

    def configure(**changes: object) -> None:
        clients[DEMO_PATIENT_CLIENT_ID] = replace(original, **changes)  # type: ignore[arg-type]

    yield configure
    clients[DEMO_PATIENT_CLIENT_ID] = original


# --- helpers ------------------------------------------------------------------------------------------


def csn_of(appointment: str) -> str:
    return f"{1000000 + int(appointment.rsplit('-', 1)[1])}"


def with_param(url: str, name: str, value: str | None) -> str:
    """The launch URL with one context token edited (``None``: removed), as a user can in the address bar."""
    url = re.sub(rf"([?&]){name}=[^&]*&?", r"\1", url).replace("?&", "?")
    if value is None:
        return url
    base, _, query = url.partition("?")
    return f"{base}?{name}={value}&{query}"


def row(world: LaunchWorld, csn: str) -> Visit | None:
    key = visit_key(world.settings.connector_secret.reveal(), world.configuration.id, f"csn:{csn}")
    return VisitRepository(Storage(world.settings), sealer_for(world.settings)).get(world.configuration.geography, key)


def key_of(world: LaunchWorld, csn: str) -> str:
    return visit_key(world.settings.connector_secret.reveal(), world.configuration.id, f"csn:{csn}")


def follow(world: LaunchWorld, url: str) -> httpx.Response:
    """A browser without JavaScript: follow redirects through the connector and the EHR, stop anywhere else."""
    with httpx.Client(timeout=20) as client:
        response = client.get(url)
        while response.status_code in (302, 303) and response.headers["location"].startswith(
            (world.url, world.ehr_url, "/")
        ):
            response = client.get(urljoin(str(response.url), response.headers["location"]))
        return response


def visit_key_reached(response: httpx.Response) -> str:
    """The visit a patient launch ended on: its waiting page, or the meeting's join link (then ask Graph)."""
    match = re.search(r"/api/visits/([0-9a-f]+)", str(response.url))
    assert match, (response.status_code, str(response.url), response.text[:300])
    return match.group(1)


def open_in_browser(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    page.wait_for_load_state()
    return page


def provider_launch(context: BrowserContext, world: LaunchWorld, appointment: str, user: str, upn: str) -> Page:
    """A clinician's launch, with the one-time Microsoft 365 sign-in and its "Link my account" when they come."""
    page = open_in_browser(context, world.launch_url("provider", appointment, user))
    if page.locator("#continue-signin").count():  # the page explaining the one-time sign-in
        page.locator("#continue-signin").click()
        page.wait_for_url(f"{world.stand_ins.entra.browser_host}/**")
        page.locator(f"button[data-upn='{upn}']").click()
        page.locator("#confirm-link").click()
    page.wait_for_url(f"{world.url}/api/visits/**")
    expect(page.locator("#join")).to_be_visible()
    return page


# --- the attacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "appointment", "user", "other_appointment"),
    [
        ("patient", "e-appt-001", "e-pat-rivera", "e-appt-002"),  # Alex Rivera tries Sam Patel's visit
        ("provider", "e-appt-001", SMITH, "e-appt-008"),  # Dr Smith tries Dr Nopolicy's visit
    ],
)
def test_editing_session_id_to_another_appointments_csn_is_refused(
    world: LaunchWorld,
    context: BrowserContext,
    caplog: pytest.LogCaptureFixture,
    record: str,
    appointment: str,
    user: str,
    other_appointment: str,
) -> None:
    victim_csn = csn_of(other_appointment)
    launch = world.launch_url(record, appointment, user)
    assert f"sessionId={csn_of(appointment)}" in launch
    with caplog.at_level(logging.INFO):
        page = open_in_browser(context, with_param(launch, "sessionId", victim_csn))
        expect(page.locator("h1")).to_have_text(PATIENT_REFUSED if record == "patient" else MISMATCH)
    body = page.locator("body").inner_text()
    if record == "patient":
        assert not technical_words(body) and "sessionId" not in body  # plain words, a reference to quote
    else:
        assert "sessionId" in body and "correlation id" in body  # the analyst's detail
    assert victim_csn not in body
    assert row(world, victim_csn) is None  # no visit, no meeting, no writeback context for the victim's CSN
    refusals = [r.getMessage() for r in caplog.records if "launch_context_mismatch" in r.getMessage()]
    assert refusals, "the refusal is logged"
    assert all(victim_csn not in line and user not in line for line in refusals)  # hashed ids only


def test_editing_department_id_is_refused(world: LaunchWorld, context: BrowserContext) -> None:
    launch = world.launch_url("provider", "e-appt-003", SMITH)
    assert "departmentId=10501101" in launch  # Contoso Virtual Care, the visit's department
    page = open_in_browser(context, with_param(launch, "departmentId", "10501102"))
    expect(page.locator("h1")).to_have_text(MISMATCH)
    expect(page.locator("body")).to_contain_text("departmentId")
    assert row(world, csn_of("e-appt-003")) is None


@pytest.mark.parametrize("value", ["%25CSN%25", "", "NONE"], ids=["unsubstituted", "empty", "NONE"])
def test_unsubstituted_or_empty_session_ids_do_not_collapse_two_appointments(world: LaunchWorld, value: str) -> None:
    # Chen and Novak, two appointments with Nurse Kim: an FDI record whose token Epic left unsubstituted.
    reached = []
    for appointment, patient in (("e-appt-010", "e-pat-chen"), ("e-appt-011", "e-pat-novak")):
        launch = with_param(world.launch_url("patient", appointment, patient), "sessionId", value)
        reached.append(visit_key_reached(follow(world, launch)))
    assert reached == [key_of(world, "1000010"), key_of(world, "1000011")]  # each its own visit, by its real CSN


@pytest.mark.parametrize("value", ["%25CSN%25", "", "NONE"], ids=["unsubstituted", "empty", "NONE"])
def test_unsubstituted_or_empty_token_fields_do_not_collapse_two_appointments(
    world: LaunchWorld, patient_client: Callable[..., None], value: str
) -> None:
    # The integration returns an extra csn field that Epic could not fill, and the record carries no sessionId.
    patient_client(token_fields=f"csn={value}")
    reached = []
    for appointment, patient in (("e-appt-010", "e-pat-chen"), ("e-appt-011", "e-pat-novak")):
        launch = with_param(world.launch_url("patient", appointment, patient), "sessionId", None)
        reached.append(visit_key_reached(follow(world, launch)))
    assert reached == [key_of(world, "1000010"), key_of(world, "1000011")]


def test_a_first_launch_with_an_edited_link_cannot_poison_the_visit(
    world: LaunchWorld, context: BrowserContext
) -> None:
    # Jamie Okafor edits their link to Riley Novak's CSN and launches before anyone else on that visit.
    attacker = with_param(world.launch_url("patient", "e-appt-004", "e-pat-okafor"), "sessionId", "1000005")
    page = open_in_browser(context, attacker)
    expect(page.locator("h1")).to_have_text(PATIENT_REFUSED)
    assert row(world, "1000005") is None
    # Riley Novak's own launch then sets the visit's writeback context from what the EHR confirmed.
    visit_key_reached(follow(world, world.launch_url("patient", "e-appt-005", "e-pat-novak")))
    visit = row(world, "1000005")
    assert visit is not None
    assert visit.context.patient == "Patient/e-pat-novak" and visit.context.encounter == "e-enc-005"
    assert visit.context.csn == "1000005" and visit.context.confirmed


@pytest.mark.parametrize("order", ["patient first", "provider first"])
def test_the_visit_context_is_what_the_ehr_confirmed_in_either_order(
    world: LaunchWorld, context: BrowserContext, order: str
) -> None:
    appointment, patient = ("e-appt-002", "e-pat-patel") if order == "patient first" else ("e-appt-003", "e-pat-chen")
    patient_launch = world.launch_url("patient", appointment, patient)
    if order == "patient first":
        follow(world, patient_launch)
        provider_launch(context, world, appointment, SMITH, SMITH_UPN)
    else:
        provider_launch(context, world, appointment, SMITH, SMITH_UPN)
        follow(world, patient_launch)
    visit = row(world, csn_of(appointment))
    assert visit is not None and visit.context.confirmed
    assert visit.context.provider == f"Practitioner/{SMITH}"  # filled by the clinician's launch, whenever it came
    assert visit.context.patient == f"Patient/{patient}"
    assert visit.context.encounter == appointment.replace("appt", "enc")


def test_only_a_url_csn_is_refused_unless_the_token_response_carries_it(
    world: LaunchWorld, context: BrowserContext, patient_client: Callable[..., None]
) -> None:
    launch = lambda: world.launch_url("patient", "e-appt-008", "e-pat-whitfield")  # noqa: E731
    # The EHR returns no encounter or appointment: only the browser says which visit this is.
    patient_client(launch_context=("location",))
    page = open_in_browser(context, launch())
    expect(page.locator("h1")).to_have_text(PATIENT_REFUSED)  # what the analyst configures is not for the patient
    expect(page.locator("body")).not_to_contain_text("%CSN%")
    assert row(world, "1000008") is None
    # The same integration returning the CSN itself: the token response decides, the URL must agree with it.
    patient_client(launch_context=("location",), token_fields="csn=%CSN%")
    edited = open_in_browser(context, with_param(launch(), "sessionId", "1000009"))
    expect(edited.locator("h1")).to_have_text(PATIENT_REFUSED)
    assert visit_key_reached(follow(world, launch())) == key_of(world, "1000008")


def test_the_provider_app_reads_the_appointment_so_its_primary_performer_organizes(
    world: LaunchWorld, context: BrowserContext
) -> None:
    provider_launch(context, world, "e-appt-003", SMITH, SMITH_UPN)  # Dr Smith has signed in once
    # Dr Lee covers Dr Smith's 9:00 visit: the meeting is still Dr Smith's (PPRF on the Appointment).
    provider_launch(context, world, "e-appt-001", LEE, LEE_UPN)
    visit = row(world, "1000001")
    assert visit is not None and visit.organizer_object_id == SMITH_OID
    assert visit.context.provider == f"Practitioner/{LEE}"


def test_the_ehr_refuses_writeback_for_a_participant_not_on_the_visit(world: LaunchWorld) -> None:
    """Epic links the conference id to its participants; a connector led astray cannot write for a stranger."""
    target = WritebackTarget(
        mode=world.configuration.writeback_mode,
        fhir_base_url=world.configuration.fhir_base_url,
        client_id=world.configuration.provider_client_id,
    )
    adapter: EpicConnectionStatus = services().worker._adapters[target.mode]  # type: ignore[attr-defined]

    def connected(participant: str) -> VisitEvent:
        return VisitEvent(
            configuration_id=world.configuration.id,
            geography=world.configuration.geography.value,
            visit_key=key_of(world, "1000012"),
            kind=EventKind.CONNECTED,
            role=Role.PATIENT,
            occurred_at=datetime.now(UTC),
            source=Source.GRAPH,
            participant=participant,
            csn="1000012",  # Dr Garcia's visit with Jamie Okafor
        )

    with pytest.raises(UpstreamRejected):
        adapter.write(connected("Patient/e-pat-rivera"), target)
    assert world.ehr.count_status_changes(conference_id="1000012") == 0
    assert adapter.write(connected("Patient/e-pat-okafor"), target) is Written.WRITTEN
    assert world.ehr.count_status_changes("1000012", "e-pat-okafor", "1") == 1
