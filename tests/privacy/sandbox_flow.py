"""One full visit on the sandbox, as a hospital would run it, for the privacy scans.

The real function app in the local Functions host (in this process), Azurite and the wired sandbox
stand-ins (``tests.support.launch_world``): the provider's launch with the one-time Microsoft 365
sign-in, the provider page and its presence JSON, the patient's launch into the lobby, then the
meeting's roster in sandbox Teams (provider joins, patient waits, is admitted, both leave) delivered
as Graph change notifications to the webhook, queued, and written back into the sandbox EHR.

``seeded_identifiers`` lists what must never be readable outside the EHR and Entra ID: every
seeded name, user name, MRN, NPI, birth date, FHIR id, CSN and appointment/encounter id, taken
from ``sandbox/seed.py`` and ``sandbox/ehr/clinic.py`` (never copied by hand).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from benchmarks.launch import Launcher
from sandbox.ehr.clinic import PATIENTS, PRACTITIONERS
from sandbox.seed import DIRECTORY
from shared.configurations.model import WritebackMode
from shared.storage.accounts import Storage
from shared.visits.model import Visit
from shared.visits.repository import VisitRepository
from tests.support.launch_world import SMITH, SMITH_UPN, LaunchWorld
from tests.support.sealing import sealer_for

SMITH_OID = next(u.object_id for u in DIRECTORY.users if u.upn == SMITH_UPN)
PATIENT = "e-pat-rivera"


@dataclass(frozen=True)
class Identifier:
    """A seeded value and how to find it in text."""

    what: str
    value: str
    pattern: re.Pattern[str]


def _exact(what: str, value: str) -> Identifier:
    """An id or user name: anywhere, any case, also percent-encoded; digits not inside a longer number."""
    variants = {value, quote(value, safe=""), quote(value, safe="/")}
    body = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
    return Identifier(what, value, re.compile(rf"(?<![0-9])(?:{body})(?![0-9])", re.IGNORECASE))


def _name(what: str, value: str) -> Identifier:
    """A person's name: as a word, case-sensitive (so "Lee" is not found in "sleep")."""
    return Identifier(what, value, re.compile(rf"\b{re.escape(value)}\b"))


def seeded_identifiers(world: LaunchWorld) -> list[Identifier]:
    found: list[Identifier] = []
    for user in DIRECTORY.users:
        found += [_exact("Entra UPN", user.upn), _name("Entra display name", user.name)]
    for person in (*PRACTITIONERS, *PATIENTS):
        kind = person.resource_type
        found += [
            _exact(f"{kind} FHIR id", person.id),
            _name(f"{kind} name", f"{person.given} {person.family}"),
            _name(f"{kind} family name", person.family),
        ]
        found += [_name(f"{kind} display name", person.display)] if person.prefix else []
        found += [_exact(f"{kind} EHR user name", person.username)] if person.username else []
        found += [_exact("NPI", person.npi)] if person.npi else []
        found += [_exact("MRN", person.mrn)] if person.mrn else []
        found += [_exact("birth date", person.birth_date)] if person.birth_date else []
    for visit in world.ehr.clinic.visits:
        found += [
            _exact("CSN", visit.csn),
            _exact("conference id", visit.conference_id),
            _exact("Appointment id", visit.appointment_id),
            _exact("Encounter id", visit.encounter_id),
        ]
    unique = {(i.what, i.value): i for i in found}
    return list(unique.values())


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def run_visit(world: LaunchWorld, mode: WritebackMode) -> Visit:
    """One visit from Begin virtual visit to both participants' disconnection written back to the EHR."""
    launcher = Launcher(world)
    appointment = world.appointment_of(SMITH, PATIENT)
    clinic_visit = world.ehr.clinic.visit_by_appointment(appointment)
    assert clinic_visit is not None
    _, provider_page = launcher.launch("provider", appointment, SMITH, sign_in_as=SMITH_UPN)
    assert provider_page.startswith(f"{world.url}/api/visits/"), provider_page
    page = launcher.client.get(provider_page)
    assert page.status_code == 200, page.text
    parts = urlsplit(provider_page)
    presence = launcher.client.get(f"{world.url}{parts.path}/presence?{parts.query}")
    assert presence.status_code == 200, presence.text
    _, lobby = launcher.launch("patient", appointment, PATIENT)
    assert lobby.startswith(world.stand_ins.settings["GRAPH_BASE_URL"]), lobby  # the meeting's join URL

    key = parts.path.split("/")[3]
    visits = VisitRepository(Storage(world.settings), sealer_for(world.settings))
    geography = world.configuration.geography
    visit: Visit = wait_for(
        lambda: (v := visits.get(geography, key)) and v.subscription_id and v, what="the visit's subscription"
    )
    assert visit.meeting_id is not None
    graph = world.stand_ins.graph
    doctor = graph.join_user(visit.meeting_id, SMITH_OID)
    patient_user = world.ehr.clinic.patient(PATIENT)
    assert patient_user is not None
    guest = graph.join_anonymous(visit.meeting_id, patient_user.display)  # the name Teams shows and Graph sends
    graph.admit(visit.meeting_id, guest.id)
    graph.leave(visit.meeting_id, guest.id)
    graph.leave(visit.meeting_id, doctor.id)

    if mode is WritebackMode.EPIC:

        def written() -> bool:
            return all(
                world.ehr.count_status_changes(clinic_visit.csn, external_id, "2") >= 1
                for external_id in (clinic_visit.practitioner_id, clinic_visit.patient_id)
            )
    else:
        patient_reference = f"Patient/{clinic_visit.patient_id}"

        def written() -> bool:
            disconnected = [
                e
                for e in world.ehr.audit_events()
                if any(s.get("code") == "participant-disconnected" for s in e.get("subtype", []))
                and any(a.get("who", {}).get("reference") == patient_reference for a in e.get("agent", []))
            ]
            return bool(disconnected)

    wait_for(written, timeout=60, what=f"the {mode.value} writeback of both disconnections")
    final = visits.get(geography, key)
    assert final is not None
    return final
