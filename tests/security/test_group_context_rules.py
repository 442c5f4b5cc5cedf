"""The pure rules of a group visit's launch: the conference id the launch URL carries decides a shared meeting only
when the EHR confirms it (its token response's ``conferenceId``, or an identifier of the launch's Appointment)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.ehr.launch_context import (
    AssertedContext,
    LaunchContextMismatch,
    UnverifiableLaunchContext,
    asserted_context,
    conference_identifiers,
    confirmed_context,
)
from shared.ehr.launch_params import parse_launch
from shared.kernel.settings import Geography
from shared.visits.model import Visit, with_group, with_group_meeting

CSN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8"
PATIENT = {"sub": "eP1", "fhirUser": "https://ehr.example/api/FHIR/R4/Patient/eP1"}
APPOINTMENT = {
    "resourceType": "Appointment",
    "id": "eA1",
    "identifier": [
        {"system": CSN_SYSTEM, "value": "1000006"},
        {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.99", "value": "9000001"},
    ],
}


def confirm(asserted: AssertedContext, conference_id: str | None, ids: frozenset[str] | None) -> str | None:
    context = confirmed_context(
        asserted,
        session_id=None,
        department_id=None,
        csns=None,
        department_ids=None,
        conference_id=conference_id,
        conference_ids=ids,
    )
    return context.conference


def test_the_launch_url_carries_the_conference_id_beside_the_csn() -> None:
    query = "iss=https%3A%2F%2Fehr%2FR4&launch=abc&sessionId=1000006&conferenceId=9000001"
    params = parse_launch(query)
    assert (params.session_id, params.conference_id) == ("1000006", "9000001")
    assert parse_launch("iss=https%3A%2F%2Fehr%2FR4&launch=abc&conferenceId=%25CONFERENCEID%25").conference_id is None


def test_an_appointments_csn_is_never_taken_for_a_conference_id() -> None:
    assert conference_identifiers(APPOINTMENT) == frozenset({"9000001"})


def test_a_conference_id_among_the_appointments_identifiers_is_confirmed() -> None:
    asserted = AssertedContext(user="Patient/eP1", appointment="eA1", patient="eP1")
    assert confirm(asserted, "9000001", conference_identifiers(APPOINTMENT)) == "9000001"


def test_the_token_responses_conference_id_confirms_without_a_read_and_refuses_another() -> None:
    asserted = asserted_context({"conferenceId": "9000001", "patient": "eP1"}, PATIENT, provider_launch=False)
    assert asserted.conference == "9000001"
    assert confirm(asserted, "9000001", None) == "9000001"
    assert confirm(asserted, None, None) == "9000001"  # the EHR's own word, with no URL token at all
    with pytest.raises(LaunchContextMismatch) as refused:
        confirm(asserted, "9000002", None)
    assert refused.value.token == "conferenceId"


def test_an_edited_conference_id_is_refused() -> None:
    asserted = AssertedContext(user="Patient/eP1", appointment="eA1", patient="eP1")
    with pytest.raises(LaunchContextMismatch):
        confirm(asserted, "9000002", conference_identifiers(APPOINTMENT))
    with pytest.raises(LaunchContextMismatch):
        confirm(asserted, "1000006", conference_identifiers(APPOINTMENT))  # the patient's own CSN is no group


@pytest.mark.parametrize(
    ("asserted", "ids", "reason"),
    [
        (AssertedContext(user="Patient/eP1", patient="eP1"), None, "no_conference_source"),
        (AssertedContext(user="Patient/eP1", appointment="eA1"), None, "no_conference_identifier"),
        (AssertedContext(user="Patient/eP1", appointment="eA1"), frozenset(), "no_conference_identifier"),
    ],
)
def test_a_conference_id_nothing_confirms_puts_nobody_in_a_shared_meeting(
    asserted: AssertedContext, ids: frozenset[str] | None, reason: str
) -> None:
    with pytest.raises(UnverifiableLaunchContext) as refused:
        confirm(asserted, "9000001", ids)
    assert refused.value.reason == reason
    assert "conferenceId" in " ".join(refused.value.page.help)


def test_without_a_conference_id_a_launch_is_a_visit_of_its_own() -> None:
    asserted = AssertedContext(user="Patient/eP1", appointment="eA1", patient="eP1")
    context = confirmed_context(asserted, session_id=None, department_id=None, csns=None, department_ids=None)
    assert context.conference is None and context.group_key is None
    grouped = confirmed_context(
        asserted,
        session_id=None,
        department_id=None,
        csns=None,
        department_ids=None,
        conference_id="9000001",
        conference_ids=frozenset({"9000001"}),
    )
    assert grouped.group_key == "conference:9000001" and grouped.appointment_key == "appointment:eA1"


def test_a_participant_joins_the_groups_meeting_and_keeps_its_own_context() -> None:
    expires = datetime(2026, 12, 5, tzinfo=UTC)
    group = Visit(
        Geography.EMEA,
        "g",
        "c",
        expires,
        meeting_id="m",
        join_web_url="https://teams/j",
        organizer_tenant_id="t",
        organizer_object_id="o",
        group_key="g",
    )
    member = Visit(Geography.EMEA, "p", "c", expires)
    joined = with_group_meeting(group)(member)
    assert joined is not None and joined.in_group and not joined.is_group and group.is_group
    assert (joined.meeting_id, joined.join_web_url, joined.group_key) == ("m", "https://teams/j", "g")
    assert with_group("g")(joined) is None  # nothing to change
