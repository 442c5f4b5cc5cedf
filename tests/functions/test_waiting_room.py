"""The patient's waiting room: what it shows (read from the EHR at launch), how it re-checks, and that it gives
up (on a fake clock) and tells the patient what to do, while still letting them in if the clinician comes."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from connector.i18n import format_clock
from connector.services import reset as reset_services
from connector.services import services
from shared.kernel.clock import FakeClock, use_clock
from shared.kernel.settings import Settings, reset_settings_cache
from shared.storage.accounts import Storage
from shared.visits.repository import TABLE, VisitRepository
from tests.functions.test_launch import DR_LEE, World, html, installed_world
from tests.support.audience import assert_patient_words
from tests.support.launch_fakes import access_policy_error

pytestmark = pytest.mark.azurite

START = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    fake = FakeClock(datetime.now(UTC).replace(microsecond=0))
    with use_clock(fake):
        yield fake


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage, clock: FakeClock) -> Iterator[World]:
    yield from installed_world(settings, storage)


def appointment(world: World, appointment_id: str, start: datetime | str | None) -> None:
    resource: dict[str, object] = {"resourceType": "Appointment", "id": appointment_id, "status": "booked"}
    if start is not None:
        resource["start"] = start if isinstance(start, str) else start.isoformat().replace("+00:00", "Z")
    world.ehr.resources[f"Appointment/{appointment_id}"] = resource


def waiting_page(world: World, csn: str, **fields: str) -> tuple[str, str]:
    response = world.patient(csn=csn, fields=fields or None)
    assert response.status_code == 303 and "/api/visits/" in response.headers["Location"]
    url = response.headers["Location"]
    return url, html(world.open(url))


def status(world: World, page: str) -> dict[str, bool]:
    found = re.search(r'data-status="([^"]+)"', page)
    assert found
    body: dict[str, bool] = json.loads(world.open(found.group(1).replace("&amp;", "&")).get_body())
    return body


def test_the_waiting_room_shows_the_organization_and_the_appointments_time_from_the_ehr(
    world: World, clock: FakeClock
) -> None:
    appointment(world, "eA801", clock() + timedelta(minutes=10))
    _, page = waiting_page(world, "8001", appointment="eA801")
    assert '<strong id="organization">Contoso Health</strong>' in page
    start = clock() + timedelta(minutes=10)
    # In UTC to the second; the server writes the time the reader's way, the page's script in the browser's zone.
    shown = f'<time datetime="{start:%Y-%m-%dT%H:%M:%S}Z" data-local="time" id="appointment-time">'
    assert shown + f"{format_clock(start)}</time>" in page and format_clock(start).endswith(" UTC")
    assert "Your clinician will start the visit shortly" in page
    assert_patient_words(page)


def test_an_appointment_named_only_by_the_encounter_is_read_through_it(world: World, clock: FakeClock) -> None:
    appointment(world, "eA802", "2026-12-05T09:30:00-05:00")
    world.ehr.resources["Encounter/eE8002"] = {
        "resourceType": "Encounter",
        "appointment": [{"reference": "Appointment/eA802"}],
    }
    _, page = waiting_page(world, "8002")
    # Without the reader's zone (``?tz=``), the server shows the time in the offset the EHR gave it.
    assert 'datetime="2026-12-05T14:30:00Z"' in page and "9:30\u202fAM UTC-05:00</time>" in page


@pytest.mark.parametrize("start", [None, "not a time", "2026-12-05T09:30:00"], ids=["no start", "garbage", "no zone"])
def test_without_a_readable_appointment_time_the_page_says_nothing_about_time(world: World, start: str | None) -> None:
    appointment(world, "eA803", start)
    _, page = waiting_page(world, "8003", appointment="eA803")
    assert "<time" not in page and "Contoso Health" in page


def test_the_waiting_room_gives_up_past_the_appointments_start_and_keeps_checking(
    world: World, clock: FakeClock
) -> None:
    appointment(world, "eA804", clock() + timedelta(minutes=5))
    url, page = waiting_page(world, "8004", appointment="eA804")
    assert status(world, page) == {"meeting": False, "overdue": False}
    assert 'content="10;url=' in page  # without JavaScript: a reload, often at first

    clock.advance(timedelta(minutes=19))  # 14 minutes past the start: still waiting
    assert status(world, page) == {"meeting": False, "overdue": False}
    later = html(world.open(url))
    assert 'id="give-up"' not in later and 'content="30;url=' in later  # checks less often as time passes

    clock.advance(timedelta(minutes=1))  # 15 minutes past the start
    assert status(world, page) == {"meeting": False, "overdue": True}
    overdue = html(world.open(url))
    assert "started the visit yet" in overdue
    assert "Please call Contoso Health" in overdue and 'content="60;url=' in overdue
    assert_patient_words(overdue)

    world.provider(csn="8004", fields={"appointment": "eA804"}, microsoft=DR_LEE)  # the clinician comes after all
    moved = world.open(url)
    assert moved.status_code == 303 and moved.headers["Location"].startswith("https://teams.example/")


def test_a_late_patient_gets_the_full_wait_from_their_arrival(world: World, clock: FakeClock) -> None:
    appointment(world, "eA805", clock() - timedelta(minutes=40))  # the patient comes 40 minutes late
    url, page = waiting_page(world, "8005", appointment="eA805")
    assert status(world, page)["overdue"] is False
    clock.advance(timedelta(minutes=14, seconds=59))
    assert status(world, page)["overdue"] is False
    clock.advance(timedelta(seconds=1))
    assert status(world, page)["overdue"] is True


def test_without_an_appointment_time_the_wait_counts_from_the_arrival(world: World, clock: FakeClock) -> None:
    url, page = waiting_page(world, "8006")
    clock.advance(timedelta(minutes=15))
    assert "Please call Contoso Health" in html(world.open(url))


def test_the_give_up_follows_the_setting(world: World, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAITING_ROOM_GIVE_UP_MINUTES", "3")
    reset_settings_cache()
    reset_services()
    try:
        assert services().launch._give_up == timedelta(minutes=3)  # composed from the setting
    finally:
        reset_settings_cache()
        reset_services()
    service = world.service()
    service._give_up = timedelta(minutes=3)
    services().launch = service
    _, page = waiting_page(world, "8007")
    clock.advance(timedelta(minutes=2, seconds=59))
    assert status(world, page)["overdue"] is False
    clock.advance(timedelta(seconds=1))
    assert status(world, page)["overdue"] is True


def test_a_patient_whose_clinicians_meeting_cannot_be_created_waits_and_never_sees_the_powershell(
    world: World, clock: FakeClock
) -> None:
    world.provider("eDocLee", csn="8100", microsoft=DR_LEE)  # Dr Lee signed in once, some day
    world.ehr.resources["Appointment/eA81"] = {
        "resourceType": "Appointment",
        "start": clock().isoformat(),
        "participant": [{"type": [{"coding": [{"code": "PPRF"}]}], "actor": {"reference": "Practitioner/eDocLee"}}],
    }
    world.graph.fail_with = access_policy_error()
    for _ in range(2):  # and on their next launch too
        url, page = waiting_page(world, "8101", appointment="eA81")
        assert "Your clinician will start the visit shortly" in page and "Grant-Cs" not in page
        assert_patient_words(page)
    clock.advance(timedelta(minutes=16))
    assert "Please call Contoso Health" in html(world.open(url))
    clinician = world.provider("eDocLee", csn="8101", fields={"appointment": "eA81"}, microsoft=DR_LEE)
    assert clinician.status_code == 502 and "Grant-CsApplicationAccessPolicy" in html(clinician)


def test_the_waiting_rooms_facts_are_sealed_at_rest_and_released_when_the_meeting_exists(
    world: World, clock: FakeClock
) -> None:
    appointment(world, "eA809", clock())
    url, _ = waiting_page(world, "8009", appointment="eA809")
    key = urlsplit(url).path.split("/")[3]
    table = world.storage.for_geography(world.config.geography).table(TABLE)
    row = table.get_entity(world.config.geography.value, key)
    assert row["WaitingRoom"] and "Contoso" not in row["WaitingRoom"] and str(clock().year) not in row["WaitingRoom"]
    visits = VisitRepository(world.storage, world.sealer)
    visit = visits.get(world.config.geography, key)
    assert visit is not None and visit.waiting_room is not None
    assert visit.waiting_room.organization == "Contoso Health"

    world.provider(csn="8009", fields={"appointment": "eA809"}, microsoft=DR_LEE)
    row = table.get_entity(world.config.geography.value, key)
    assert "WaitingRoom" not in row
