"""Group visits, consults and several clinicians, launched as the host calls them, on Azurite with in-process fakes.

A group visit is one meeting per EHR-confirmed conference id; each participant launches with their own CSN and
keeps a visit (context, events, writeback) of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func
import jwt
import pytest

from connector.launch import launch_patient, launch_provider, visit_interpreter, visit_interpreter_link
from shared.kernel.clock import FakeClock, use_clock
from shared.kernel.settings import Geography, Settings
from shared.launch.interpreters import LINK_LIFETIME
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, user_hint
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event
from tests.functions.test_launch import (
    CSN_SYSTEM,
    DR_LEE,
    DR_SMITH,
    FHIR,
    World,
    html,
    installed_world,
    join_link,
    request,
)
from tests.support.launch_fakes import Login

pytestmark = pytest.mark.azurite

CONFERENCE_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.99"  # not published by Epic: any system is taken
PATIENTS = {"8001": "eP81", "8002": "eP82", "8003": "eP83"}


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    yield from installed_world(settings, storage)


def group_visit(world: World, csn: str, conference: str | None) -> None:
    """The EHR's Encounter (with its CSN) and Appointment (with its CSN and, in a group, the conference id)."""
    identifiers = [{"system": CSN_SYSTEM, "value": csn}]
    world.ehr.resources[f"Encounter/eE{csn}"] = {
        "resourceType": "Encounter",
        "id": f"eE{csn}",
        "identifier": list(identifiers),
        "appointment": [{"reference": f"Appointment/eA{csn}"}],
    }
    if conference:
        identifiers.append({"system": CONFERENCE_SYSTEM, "value": conference})
    world.ehr.resources[f"Appointment/eA{csn}"] = {
        "resourceType": "Appointment",
        "id": f"eA{csn}",
        "identifier": identifiers,
    }


def launch(world: World, kind: str, csn: str, conference: str | None) -> func.HttpResponse:
    query = f"iss={quote(FHIR, safe='')}&launch=opaque&sessionId={csn}"
    if conference:
        query += f"&conferenceId={conference}"
    cid = world.config.id
    req = request("GET", f"http://localhost/api/launch/{cid}/{kind}?{query}", route_params={"configurationId": cid})
    return (launch_provider if kind == "provider" else launch_patient)(req)


def provider(world: World, who: str, csn: str, conference: str | None, microsoft: Any = DR_SMITH) -> str:
    """A clinician's launch (their one-time sign-in included); the provider page's URL."""
    login = Login(claims={"sub": who, "fhirUser": f"{FHIR}/Practitioner/{who}"}, fields={"encounter": f"eE{csn}"})
    response = world.authorize_and_return(launch(world, "provider", csn, conference), login)
    if response.status_code == 303 and response.headers["Location"].startswith("https://login.example/"):
        response = world.confirm(world.microsoft_sign_in(response, microsoft))
    assert response.status_code == 303 and "/api/visits/" in response.headers["Location"], html(response)
    return response.headers["Location"]


def patient(world: World, csn: str, conference: str | None) -> func.HttpResponse:
    who = PATIENTS.get(csn, "eP1")
    login = Login(
        claims={"sub": who, "fhirUser": f"{FHIR}/Patient/{who}"}, fields={"patient": who, "encounter": f"eE{csn}"}
    )
    return world.authorize_and_return(launch(world, "patient", csn, conference), login)


def test_three_patients_with_their_own_csns_wait_in_one_meeting_of_the_conference(world: World) -> None:
    for csn in PATIENTS:
        group_visit(world, csn, "9100")
    url = provider(world, "eDoc1", "8001", "9100")
    provider_key = urlsplit(url).path.rsplit("/", 1)[-1]
    lobby = join_link(html(world.open(url)))
    keys: set[str] = set()
    numbers: set[str] = set()
    for csn, who in PATIENTS.items():
        response = patient(world, csn, "9100")
        assert group_join(response, world)[0] == lobby  # the same lobby for all, after the number to type
        numbers.add(group_join(response, world)[1])
        event = open_event(world.sealer, world.events[-1])
        # Each patient's event is their own: their CSN, their encounter, themselves (written for their own visit).
        assert (event.csn, event.encounter, event.participant) == (csn, f"eE{csn}", f"Patient/{who}")
        assert event.kind is EventKind.LOBBY and event.role is Role.PATIENT
        keys.add(event.visit_key)
    assert len(keys) == 3 and len(numbers) == 3  # a visit row and a visit number per participant...
    assert len(set(world.graph.store.values())) == 1  # ...and one meeting, created once
    visits = VisitRepository(world.storage, world.sealer)
    rows = [visits.get(Geography(world.config.geography), key) for key in keys]
    assert all(row is not None and row.in_group and row.context.csn for row in rows)
    assert {row.context.csn for row in rows if row} == set(PATIENTS)
    group = visits.get(Geography(world.config.geography), rows[0].group_key or "") if rows[0] else None
    assert group is not None and group.is_group and group.context.csn is None  # the group's row names nobody
    # Each patient's number names their own visit on the group's row; the clinician's account names theirs.
    assert sorted(group.members.values()) == sorted([*keys, provider_key])
    again = patient(world, "8001", "9100")
    assert group_join(again, world)[1] in numbers  # a relaunch shows the same number


def group_join(response: func.HttpResponse, world: World | None = None) -> tuple[str, str]:
    """A group patient's page: (the Teams lobby it links to, the visit number it asks them to type).

    A launch is sent to the patient's own visit page (``world`` opens it); the visit page shows it.
    """
    if world is not None:
        assert response.status_code == 303 and "/api/visits/" in response.headers["Location"]
        response = world.open(response.headers["Location"])
    assert response.status_code == 200, response.status_code
    page = html(response)
    number = re.search(r'id="visit-number">(\d{4})<', page)
    link = re.search(r'id="join-group-visit" href="([^"]+)"', page)
    assert number and link
    return link.group(1).replace("&amp;", "&"), number.group(1)


def test_a_second_group_visit_gets_another_meeting(world: World) -> None:
    group_visit(world, "8001", "9100")
    group_visit(world, "8002", "9200")
    provider(world, "eDoc1", "8001", "9100")
    provider(world, "eDoc1", "8002", "9200")
    one, two = (patient(world, csn, conference) for csn, conference in (("8001", "9100"), ("8002", "9200")))
    assert group_join(one, world)[0] != group_join(two, world)[0]
    assert len(set(world.graph.store.values())) == 2


def test_a_patient_who_comes_first_is_sent_in_once_a_clinician_opens_the_groups_meeting(world: World) -> None:
    for csn in ("8001", "8002"):
        group_visit(world, csn, "9100")
    waiting = patient(world, "8002", "9100")
    assert waiting.status_code == 303 and "/api/visits/" in waiting.headers["Location"]
    assert world.graph.calls == []
    lobby = join_link(html(world.open(provider(world, "eDoc1", "8001", "9100"))))  # another patient's CSN
    page = world.open(waiting.headers["Location"])
    assert group_join(page)[0] == lobby  # the waiting page sends them in, with their number


def test_an_edited_conference_id_puts_nobody_in_another_groups_meeting(world: World) -> None:
    group_visit(world, "8001", "9100")
    response = patient(world, "8001", "9999")
    assert response.status_code == 403 and world.graph.calls == [] and world.events == []
    group_visit(world, "8002", None)  # an appointment of no group: its conference id cannot be confirmed
    assert patient(world, "8002", "9100").status_code == 403


def test_two_clinicians_in_a_consult_without_a_patient_share_one_meeting(world: World) -> None:
    group_visit(world, "8500", None)
    first = join_link(html(world.open(provider(world, "eDoc1", "8500", None))))
    second = join_link(html(world.open(provider(world, "eDoc2", "8500", None, microsoft=DR_LEE))))
    assert first == second and len(world.graph.store) == 1
    consultant = open_event(world.sealer, world.events[-1])
    assert (
        consultant.participant == "Practitioner/eDoc2" and consultant.csn == "8500" and consultant.role is Role.PROVIDER
    )


def test_each_clinician_who_launches_is_remembered_by_their_account_and_a_booked_interpreter_as_one(
    world: World, settings: Settings
) -> None:
    group_visit(world, "8001", "9100")
    world.ehr.resources["Appointment/eA8001"]["participant"] = [
        {"type": [{"coding": [{"code": "PPRF"}]}], "actor": {"reference": "Practitioner/eDoc1"}},
        {
            "type": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/participant-type", "code": "translator"}]}
            ],
            "actor": {"reference": "Practitioner/eDoc2"},
        },
    ]
    url = provider(world, "eDoc1", "8001", "9100")
    assert not open_event(world.sealer, world.events[-1]).interpreter
    provider(world, "eDoc2", "8001", "9100", microsoft=DR_LEE)
    interpreter = open_event(world.sealer, world.events[-1])
    assert interpreter.interpreter and interpreter.participant == "Practitioner/eDoc2"  # written as translator
    visits = VisitRepository(world.storage, world.sealer)
    geography = Geography(world.config.geography)
    secret = settings.connector_secret.reveal()
    visit = visits.get(geography, urlsplit(url).path.rsplit("/", 1)[-1])
    assert visit is not None
    assert [(c.hint, c.reference, c.interpreter) for c in visit.context.colleagues] == [
        (user_hint(secret, DR_SMITH.object_id), "Practitioner/eDoc1", False),
        (user_hint(secret, DR_LEE.object_id), "Practitioner/eDoc2", True),
    ]
    group = visits.get(geography, visit.group_key or "")
    assert group is not None and sorted(group.members.values()) == [visit.key, visit.key]  # both tied to their CSN
    provider(world, "eDoc2", "8001", "9100", microsoft=DR_LEE)  # a relaunch: known already
    assert open_event(world.sealer, world.events[-1]).interpreter
    again = visits.get(geography, visit.key)
    assert again is not None and again.context.colleagues == visit.context.colleagues


# --- interpreters: a guest link from the clinician's page ------------------------------------------------


FORM = {"content-type": "application/x-www-form-urlencoded"}


def create_link(provider_url: str, form_token: str | None) -> func.HttpResponse:
    """The provider page's "Create an interpreter link" form, as the browser posts it (its form token, or none)."""
    parts = urlsplit(provider_url)
    key = parts.path.split("/")[3]
    url = f"http://localhost/api/visits/{key}/interpreter-link?{parts.query}"
    body = f"csrf={form_token}".encode() if form_token is not None else b""
    return visit_interpreter_link(request("POST", url, body=body, headers=FORM, route_params={"visitKey": key}))


def form_token(world: World, provider_url: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html(world.open(provider_url)))
    assert found
    return found.group(1)


def interpreter_link(world: World, provider_url: str) -> str:
    page = create_link(provider_url, form_token(world, provider_url))
    assert page.status_code == 200, html(page)
    [link] = re.findall(r'id="interpreter-link" type="text" readonly value="([^"]+)"', html(page))
    return link.replace("&amp;", "&")


def open_interpreter_link(link: str) -> func.HttpResponse:
    key = urlsplit(link).path.split("/")[3]
    return visit_interpreter(request("GET", link, route_params={"visitKey": key}))


def test_an_interpreter_link_opens_the_lobby_once_then_is_refused(world: World) -> None:
    group_visit(world, "8001", "9100")
    provider_url = provider(world, "eDoc1", "8001", "9100")
    lobby = join_link(html(world.open(provider_url)))
    link = interpreter_link(world, provider_url)
    # It names nobody: no claim is a CSN or a FHIR reference (the path and the claims hold HMAC keys, random ids
    # and times, whose hex may contain any digits by chance).
    claims = jwt.decode(parse_qs(urlsplit(link).query)["t"][0], options={"verify_signature": False})
    references = re.compile(r"(Patient|Practitioner|Encounter|Appointment)/")
    assert not any(str(value) in ("8001", "9100") or references.search(str(value)) for value in claims.values())
    assert "Patient" not in link and "Practitioner" not in link
    first = open_interpreter_link(link)
    assert first.status_code == 200 and lobby.replace("&", "&amp;") in html(first)
    assert 'id="interpreter-name">Interpreter<' in html(first)
    again = open_interpreter_link(link)
    assert again.status_code == 403 and "This interpreter link cannot be used" in html(again)
    assert lobby not in html(again) and lobby.replace("&", "&amp;") not in html(again)


def test_an_interpreter_link_is_refused_after_its_expiry_and_when_forged(world: World) -> None:
    group_visit(world, "8001", "9100")
    provider_url = provider(world, "eDoc1", "8001", "9100")
    clock = FakeClock()
    with use_clock(clock):
        link = interpreter_link(world, provider_url)
        clock.advance(LINK_LIFETIME + timedelta(seconds=1))
        late = open_interpreter_link(link)
    assert late.status_code == 403 and "This interpreter link cannot be used" in html(late)
    fresh = interpreter_link(world, provider_url)
    token = parse_qs(urlsplit(fresh).query)["t"][0]
    forged = fresh.replace(quote(token, safe=""), quote(token[:-4] + "AAAA", safe=""))
    assert open_interpreter_link(forged).status_code == 403
    other = fresh.replace(urlsplit(fresh).path.split("/")[3], "0" * 64)  # another visit's route
    assert open_interpreter_link(other).status_code == 403
    assert open_interpreter_link(fresh).status_code == 200  # neither refusal used the real link up


def test_only_a_clinicians_page_creates_interpreter_links(world: World) -> None:
    group_visit(world, "8001", "9100")
    provider(world, "eDoc1", "8001", "9100")
    lobby, _ = group_join(patient(world, "8001", "9100"), world)  # the patient's lobby link: not a visit page
    assert "/api/visits/" not in lobby
    group_visit(world, "8002", "9300")
    patient_page = patient(world, "8002", "9300").headers["Location"]  # no meeting yet: the waiting page's token
    parts = urlsplit(patient_page)
    key = parts.path.split("/")[3]
    url = f"http://localhost/api/visits/{key}/interpreter-link?{parts.query}"
    refused = visit_interpreter_link(request("POST", url, body=b"csrf=x", headers=FORM, route_params={"visitKey": key}))
    assert refused.status_code == 403


def test_an_interpreter_link_is_made_only_from_the_visit_pages_own_form(world: World) -> None:
    group_visit(world, "8001", "9100")
    url = provider(world, "eDoc1", "8001", "9100")
    for forged in (None, "", "0" * 32):  # another site's form knows no form token
        assert create_link(url, forged).status_code == 403
    group_visit(world, "8002", "9200")
    other = provider(world, "eDoc1", "8002", "9200")  # another visit's page: its own form token
    assert create_link(url, form_token(world, other)).status_code == 403
    assert create_link(url, form_token(world, url)).status_code == 200
