"""The launch context: who launched, for which appointment, read leniently from Epic-shaped responses."""

from __future__ import annotations

import pytest

from shared.ehr.launch_context import (
    LaunchContext,
    NoAppointment,
    asserted_context,
    confirmed_context,
    primary_performer,
    user_reference,
)
from shared.kernel.errors import BadRequest, Forbidden

EPIC_FIELDS = {
    "access_token": "x",
    "token_type": "Bearer",
    "patient": "eP1",
    "__epic.dstu2.patient": "TeP1",
    "encounter": "eE1",
    "appointment": "eA1",
    "location": "eL1",
    "loginDepartment": "eL2",
    "need_patient_banner": "false",
    "smart_style_url": "https://ehr.example/style",
    "extra": {"nested": True},
}


def test_epic_token_response_with_a_csn_the_encounter_confirms() -> None:
    claims = {"sub": "eDoc1", "fhirUser": "https://ehr.example/api/FHIR/R4/Practitioner/eDoc1"}
    asserted = asserted_context(EPIC_FIELDS, claims, provider_launch=True)
    assert (asserted.encounter, asserted.appointment, asserted.location, asserted.login_department) == (
        "eE1",
        "eA1",
        "eL1",
        "eL2",
    )
    context = confirmed_context(
        asserted,
        session_id="1853",
        department_id="10501",
        csns=frozenset({"1853"}),
        department_ids=frozenset({"10501"}),
    )
    assert context.user == "Practitioner/eDoc1"
    assert (context.csn, context.appointment, context.encounter, context.patient) == ("1853", "eA1", "eE1", "eP1")
    assert context.appointment_key == "csn:1853"
    assert (context.login_department, context.department) == ("eL2", "10501")


def test_csn_may_arrive_as_a_token_field_and_keys_fall_back() -> None:
    fields = {**EPIC_FIELDS, "csn": "77"}
    asserted = asserted_context(fields, {"sub": "d"}, provider_launch=True)
    assert asserted.csn == "77"
    without = asserted_context(EPIC_FIELDS, {"sub": "d"}, provider_launch=True)
    context = confirmed_context(without, session_id=None, department_id=None, csns=None, department_ids=None)
    assert context.appointment_key == "appointment:eA1"
    only_encounter = LaunchContext(user="Practitioner/d", encounter="eE1")
    assert only_encounter.appointment_key == "encounter:eE1"
    with pytest.raises(NoAppointment):
        _ = LaunchContext(user="Practitioner/d").appointment_key


def test_booleans_and_objects_are_not_ids() -> None:
    fields = {"appointment": True, "encounter": {"x": 1}, "patient": "Patient/eP1"}
    asserted = asserted_context(fields, {"sub": "p"}, provider_launch=False)
    assert asserted.appointment is None and asserted.encounter is None
    assert asserted.patient == "eP1"
    assert asserted.user == "Patient/p"


def test_user_reference_prefers_fhir_user_and_refuses_patients_on_the_provider_launch() -> None:
    assert user_reference({"sub": "x", "fhirUser": "Practitioner/9"}, provider_launch=True) == "Practitioner/9"
    assert user_reference({"sub": "x"}, provider_launch=True) == "Practitioner/x"
    with pytest.raises(Forbidden):
        user_reference({"sub": "x", "fhirUser": "https://e/R4/Patient/x"}, provider_launch=True)
    with pytest.raises(BadRequest):
        user_reference({}, provider_launch=False)


def test_primary_performer_of_appointment_and_encounter() -> None:
    pprf = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PPRF"}]}]
    appointment = {
        "resourceType": "Appointment",
        "participant": [
            {"actor": {"reference": "Patient/eP1"}},
            {"type": pprf, "actor": {"reference": "Practitioner/eDoc2"}},
        ],
    }
    encounter = {
        "resourceType": "Encounter",
        "participant": [{"type": pprf, "individual": {"reference": "Practitioner/eDoc3"}}],
    }
    assert primary_performer(appointment) == "Practitioner/eDoc2"
    assert primary_performer(encounter) == "Practitioner/eDoc3"
    assert primary_performer({"participant": [{"actor": {"reference": "Practitioner/x"}}]}) is None
    assert primary_performer({"participant": "garbage"}) is None


def test_context_round_trips_through_json() -> None:
    context = LaunchContext(user="Practitioner/1", csn="5", patient="p")
    assert LaunchContext.from_json(context.to_json()) == context
