"""The pure rules behind a trusted launch context: absent tokens, the back channel, confirmation, the visit's context
and the integration records. Each refusal here is one an edited launch URL meets in
``test_launch_context_trust_browser``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Vendor, WritebackMode
from shared.ehr.launch_context import (
    AssertedContext,
    LaunchContextMismatch,
    UnverifiableLaunchContext,
    asserted_context,
    confirmed_context,
    csn_identifiers,
    identifier_values,
)
from shared.ehr.launch_params import context_value, parse_launch
from shared.kernel.errors import ConnectorError, Forbidden
from shared.kernel.settings import Geography
from shared.portal.service import integration_records
from shared.visits.events import Role
from shared.visits.model import Visit, VisitContext, merged_context, with_launch_context

PROVIDER = {"sub": "eDoc1", "fhirUser": "https://ehr.example/api/FHIR/R4/Practitioner/eDoc1"}
CSN = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8"


# --- absent tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["%CSN%", "%PERFDEPID;;; ; ;;NONE;%", "x%CSN%", "", "  ", "NONE", "none", None])
def test_unsubstituted_empty_and_none_tokens_are_absent(value: str | None) -> None:
    assert context_value(value) is None


def test_a_substituted_token_is_kept() -> None:
    assert context_value(" 1000001 ") == "1000001"
    query = "iss=https%3A%2F%2Fehr%2FR4&launch=abc&sessionId=%25CSN%25&departmentId=NONE"
    params = parse_launch(query)
    assert (params.session_id, params.department_id) == (None, None)


@pytest.mark.parametrize("value", ["%CSN%", "NONE", "", True, {"v": 1}])
def test_the_token_responses_csn_field_counts_as_absent_when_not_substituted(value: Any) -> None:
    assert asserted_context({"csn": value, "encounter": "eE1"}, PROVIDER, provider_launch=True).csn is None


# --- the back channel ---------------------------------------------------------------------------------


def test_the_token_response_is_the_ehrs_word() -> None:
    fields = {
        "patient": "eP1",
        "encounter": "Encounter/eE1",
        "location": "eL1",
        "loginDepartment": "eL2",
        "csn": 1000001,
        "sessionId": "ignored: csn comes first",
    }
    asserted = asserted_context(fields, PROVIDER, provider_launch=True)
    assert asserted == AssertedContext(
        user="Practitioner/eDoc1",
        csn="1000001",
        encounter="eE1",
        patient="eP1",
        location="eL1",
        login_department="eL2",
    )
    assert asserted.references == ("Encounter/eE1",)


@pytest.mark.parametrize(
    "fhir_context",
    [["Appointment/eA1", "Encounter/eE1"], [{"reference": "Encounter/eE1"}, {"reference": "Appointment/eA1"}]],
    ids=["SMART 2.0 strings", "SMART 2.1 objects"],
)
def test_fhir_context_names_the_appointment_and_encounter(fhir_context: list[Any]) -> None:
    asserted = asserted_context({"fhirContext": fhir_context}, PROVIDER, provider_launch=True)
    assert (asserted.appointment, asserted.encounter) == ("eA1", "eE1")
    assert asserted.references == ("Encounter/eE1", "Appointment/eA1")


def test_csn_identifiers_are_recognised_in_any_epic_instance() -> None:
    resource = {
        "identifier": [
            {"system": CSN, "value": "1"},
            {"system": "urn:oid:1.2.840.114350.1.13.861.1.7.3.698084.8", "value": "2"},  # another customer
            {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.88", "value": "x"},  # another item
            {"system": "urn:oid:2.16.840.1.113883.3.698084.8", "value": "y"},  # not Epic's root
            {"system": CSN, "value": " "},
            {"value": "z"},
            "garbage",
        ]
    }
    assert csn_identifiers(resource) == {"1", "2"}
    assert identifier_values(resource) == {"1", "2", "x", "y", "z"}
    assert csn_identifiers({"identifier": "garbage"}) == frozenset()


# --- confirmation -------------------------------------------------------------------------------------

ASSERTED = AssertedContext(user="Practitioner/eDoc1", encounter="eE1", appointment="eA1", patient="eP1")


def confirm(asserted: AssertedContext = ASSERTED, **kwargs: Any) -> Any:
    values: dict[str, Any] = {"session_id": None, "department_id": None, "csns": None, "department_ids": None}
    return confirmed_context(asserted, **{**values, **kwargs})


def test_a_url_csn_the_encounter_confirms_decides_the_visit() -> None:
    context = confirm(session_id="1853", csns=frozenset({"1853"}))
    assert context.appointment_key == "csn:1853" and (context.encounter, context.patient) == ("eE1", "eP1")


def test_the_ehrs_csn_is_used_with_or_without_the_url_so_both_launches_share_a_key() -> None:
    assert confirm(csns=frozenset({"1853"})).appointment_key == "csn:1853"
    assert confirm(csns=frozenset({"1", "2"})).appointment_key == "appointment:eA1"  # ambiguous: no CSN
    assert confirm(csns=None).appointment_key == "appointment:eA1"
    token_csn = replace(ASSERTED, csn="77")
    assert confirm(token_csn, session_id="77").appointment_key == "csn:77"


@pytest.mark.parametrize(
    ("asserted", "kwargs"),
    [
        (ASSERTED, {"session_id": "1854", "csns": frozenset({"1853"})}),  # another appointment's CSN
        (replace(ASSERTED, csn="1853"), {"session_id": "1854"}),  # the token response says otherwise
        (ASSERTED, {"department_id": "10501102", "department_ids": frozenset({"10501101"})}),
    ],
    ids=["encounter", "token field", "department"],
)
def test_a_contradicted_url_token_is_refused(asserted: AssertedContext, kwargs: dict[str, Any]) -> None:
    with pytest.raises(LaunchContextMismatch) as refused:
        confirm(asserted, **kwargs)
    assert refused.value.status == 403 and refused.value.page is not None
    assert refused.value.token in " ".join(refused.value.page.help)  # the analyst's detail names the token
    assert "1854" not in refused.value.message


@pytest.mark.parametrize(
    ("asserted", "csns", "reason"),
    [
        (AssertedContext(user="Patient/eP1", patient="eP1"), None, "no_ehr_context"),
        (ASSERTED, None, "unreadable"),
        (ASSERTED, frozenset(), "no_csn_identifier"),
    ],
)
def test_a_url_csn_nothing_confirms_is_refused(
    asserted: AssertedContext, csns: frozenset[str] | None, reason: str
) -> None:
    with pytest.raises(UnverifiableLaunchContext) as refused:
        confirm(asserted, session_id="1853", csns=csns)
    assert refused.value.reason == reason and isinstance(refused.value, Forbidden)
    assert refused.value.page is not None and "csn = %CSN%" in " ".join(refused.value.page.help)


def test_an_unconfirmable_department_is_dropped_and_a_confirmed_one_kept() -> None:
    assert confirm(department_id="10501101").department is None
    assert confirm(department_id="10501101", department_ids=frozenset({"10501101"})).department == "10501101"


def test_the_refusals_are_in_the_one_exception_tree() -> None:
    assert issubclass(LaunchContextMismatch, ConnectorError) and issubclass(UnverifiableLaunchContext, ConnectorError)


# --- the visit's context ------------------------------------------------------------------------------

PATIENT_LAUNCH = VisitContext(csn="1", encounter="eE1", patient="Patient/eP1", confirmed=True)
PROVIDER_LAUNCH = VisitContext(
    csn="1", encounter="eE1", appointment="eA1", patient="Patient/eP1", provider="Practitioner/d", confirmed=True
)
LEGACY = VisitContext(csn="1", encounter="eE9", patient="Patient/attacker", provider="Practitioner/x")


def test_confirmed_launches_fill_each_other_in_either_order() -> None:
    assert merged_context(PATIENT_LAUNCH, PROVIDER_LAUNCH) == PROVIDER_LAUNCH
    assert merged_context(PROVIDER_LAUNCH, PATIENT_LAUNCH) == PROVIDER_LAUNCH
    covering = replace(PROVIDER_LAUNCH, provider="Practitioner/covering")
    assert merged_context(PROVIDER_LAUNCH, covering) == PROVIDER_LAUNCH  # a value once confirmed stays


def test_unconfirmed_context_never_overrides_nor_survives_a_confirmed_one() -> None:
    assert merged_context(LEGACY, PATIENT_LAUNCH) == PATIENT_LAUNCH  # nothing of the unconfirmed row is kept
    assert merged_context(PATIENT_LAUNCH, LEGACY) == PATIENT_LAUNCH


def visit_with(context: VisitContext) -> Visit:
    return Visit(Geography.EMEA, "k", "cfg", expires_at=datetime(2026, 12, 6, tzinfo=UTC), context=context)


PROVIDER_EVENT = {"participant": "Practitioner/d", "csn": "1", "appointment": "eA1", "encounter": "eE1"}


def test_a_sealed_launch_event_merges_as_the_confirmed_launch_it_came_from() -> None:
    # A released context (the meeting ended) is restored by a relaunch's event, confirmed.
    restored = with_launch_context(Role.PROVIDER, PROVIDER_EVENT, confirmed=True)(visit_with(VisitContext()))
    assert restored is not None
    assert restored.context == replace(PROVIDER_LAUNCH, patient=None)
    # After the patient's launch the provider's event fills the provider in; it replaces nothing confirmed.
    filled = with_launch_context(Role.PROVIDER, PROVIDER_EVENT, confirmed=True)(visit_with(PATIENT_LAUNCH))
    assert filled is not None and filled.context == PROVIDER_LAUNCH
    covering = {**PROVIDER_EVENT, "participant": "Practitioner/covering"}
    assert with_launch_context(Role.PROVIDER, covering, confirmed=True)(visit_with(PROVIDER_LAUNCH)) is None


def test_a_legacy_clear_launch_event_neither_overrides_nor_fills_a_confirmed_context() -> None:
    legacy = {"participant": "Practitioner/x", "csn": "1", "encounter": "eE9"}
    assert with_launch_context(Role.PROVIDER, legacy, confirmed=False)(visit_with(PATIENT_LAUNCH)) is None
    unconfirmed = with_launch_context(Role.PROVIDER, legacy, confirmed=False)(visit_with(VisitContext()))
    assert unconfirmed is not None and not unconfirmed.context.confirmed
    # ... and the next confirmed launch replaces what it left, wholesale.
    replaced = with_launch_context(Role.PROVIDER, PROVIDER_EVENT, confirmed=True)(unconfirmed)
    assert replaced is not None and replaced.context == replace(PROVIDER_LAUNCH, patient=None)


# --- the integration records --------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", list(Vendor))
def test_context_tokens_are_epic_only_and_every_record_lists_the_read_scopes(vendor: Vendor) -> None:
    data = ConfigurationInput(
        organization="Contoso", fhir_base_url="https://ehr.contoso.example/fhir", environment=Environment.TEST,
        approver_upn="analyst@contoso.example", geography=Geography.AMERICAS, vendor=vendor,
        provider_client_id="p", patient_client_id="q", writeback_mode=WritebackMode.NONE,
    )  # fmt: skip
    now = datetime(2026, 12, 5, tzinfo=UTC)
    config = replace(cfg.new_configuration("t", data, by="a", now=now), status=cfg.Status.APPROVED, approved_at=now)
    records = integration_records(config, "https://connector.example")
    provider, patient = records.records
    text = records.as_text()
    if vendor is Vendor.EPIC:
        assert provider.context_tokens.startswith("sessionId=%CSN%") and patient.context_tokens == "sessionId=%CSN%"
        assert "csn = %CSN%" in provider.token_context
        assert text.count("Context tokens: ") == 2
    else:
        assert provider.context_tokens == patient.context_tokens == ""
        assert "Context tokens" not in text and "%CSN%" not in text
    for scope in ("user/Encounter.read", "user/Appointment.read", "user/Practitioner.read"):
        assert scope in provider.scopes.split()
    # A patient reads the launch's Encounter and Appointment in their compartment: Oracle grants them by name only.
    wanted = ("patient/Encounter.read", "patient/Appointment.read") if vendor is Vendor.ORACLE else ("patient/*.read",)
    assert set(wanted) <= set(patient.scopes.split())
