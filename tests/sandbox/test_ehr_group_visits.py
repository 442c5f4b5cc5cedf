"""The sandbox clinic's group visit, staff interpreter and clinician-to-clinician consult, as FHIR R4 JSON."""

from __future__ import annotations

import datetime as dt

from sandbox.ehr.clinic import CONFERENCE_SYSTEM, CSN_SYSTEM, GROUP_CONFERENCE_ID, Clinic
from shared.ehr.launch_context import books_as_interpreter, conference_identifiers, csn_identifiers, primary_performer

FHIR = "https://ehr.example/api/FHIR/R4"


def clinic() -> Clinic:
    return Clinic(dt.date(2026, 12, 5), FHIR)


def test_a_group_visit_has_three_patients_each_with_their_own_csn_and_one_conference_id() -> None:
    group = [v for v in clinic().visits if v.conference_id == GROUP_CONFERENCE_ID]
    assert len(group) == 3 and len({v.patient_id for v in group}) == 3 and len({v.csn for v in group}) == 3
    assert {v.practitioner_id for v in group} == {"e-prac-lee"} and len({v.start for v in group}) == 1
    for visit in group:
        appointment = clinic()._appointment(visit)
        # What the connector confirms a launch's conferenceId against: the Appointment's identifiers.
        assert conference_identifiers(appointment) == {GROUP_CONFERENCE_ID}
        assert csn_identifiers(appointment) == {visit.csn}
        systems = {i["system"] for i in appointment["identifier"]}
        assert systems == {CSN_SYSTEM, CONFERENCE_SYSTEM}


def test_single_visits_carry_no_conference_identifier() -> None:
    single = next(v for v in clinic().visits if v.csn == "1000001")
    assert conference_identifiers(clinic()._appointment(single)) == frozenset()


def test_the_staff_interpreter_is_booked_on_a_group_visit_and_sees_it_on_their_schedule() -> None:
    c = clinic()
    interpreter = c.practitioner("e-prac-souza")
    assert interpreter is not None and interpreter.role == "Interpreter"
    [booked] = c.visits_for_practitioner("e-prac-souza")
    assert booked.conference_id == GROUP_CONFERENCE_ID
    appointment = c._appointment(booked)
    codes = [p["type"][0]["coding"][0]["code"] for p in appointment["participant"] if "type" in p]
    assert codes == ["PPRF", "translator"]
    assert books_as_interpreter(appointment, "Practitioner/e-prac-souza")  # what the connector reads
    assert not books_as_interpreter(appointment, f"Practitioner/{booked.practitioner_id}")
    assert "e-prac-souza" in c.participants(GROUP_CONFERENCE_ID)  # may be reported on the conference


def test_a_consult_names_two_practitioners_and_no_patient() -> None:
    c = clinic()
    consult = next(v for v in c.visits if v.patient_id is None)
    appointment, encounter = c._appointment(consult), c._encounter(consult)
    actors = [p["actor"]["reference"] for p in appointment["participant"]]
    assert actors == ["Practitioner/e-prac-smith", "Practitioner/e-prac-lee", f"Location/{consult.department_id}"]
    assert "subject" not in encounter and primary_performer(appointment) == "Practitioner/e-prac-smith"
    assert consult in c.visits_for_practitioner("e-prac-lee")
    assert c.participants(consult.csn) == {"e-prac-smith", "e-prac-lee"}
