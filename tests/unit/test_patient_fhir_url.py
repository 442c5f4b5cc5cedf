"""Oracle Health's patient-side FHIR URL in the configuration model: normalised, part of what the approver's
sign-in proves (an edit of it waits for approval and a new sign-in), accepted as ``iss`` by patient launches
only, and refused for vendors without one or for another tenant."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Status, Vendor, WritebackMode
from shared.configurations.repository import held_urls
from shared.ehr.vendors import profile_for, tenant_segment
from shared.kernel.errors import Conflict
from shared.kernel.settings import Geography

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
TENANT = "11111111-1111-4111-8111-111111111111"
OID = "a0000000-0000-4000-8000-000000000002"
EHR = "https://fhir-ehr.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d"
MYRECORD = "https://fhir-myrecord.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d"
DATA = ConfigurationInput(
    organization="Contoso Health",
    fhir_base_url=EHR,
    environment=Environment.PRODUCTION,
    approver_upn="analyst@contoso.example",
    geography=Geography.AMERICAS,
    vendor=Vendor.ORACLE,
    provider_client_id="prov",
    patient_client_id="pat",
    writeback_mode=WritebackMode.FHIR_AUDIT_EVENT,
    patient_fhir_base_url="HTTPS://FHIR-MYRECORD.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d/",
)


def approved() -> cfg.Configuration:
    config = cfg.new_configuration(TENANT, DATA, by="admin@contoso.example", now=NOW)
    proven = cfg.with_ehr_signin(config, upn="analyst@contoso.example", oid=OID, now=NOW)
    return cfg.approved(proven, upn="analyst@contoso.example", oid=OID, now=NOW)


def test_the_patient_url_is_normalised_held_and_recorded_with_the_sign_in() -> None:
    config = approved()
    assert config.patient_fhir_base_url == MYRECORD
    assert config.ehr_signin is not None and config.ehr_signin.patient_fhir_base_url == MYRECORD
    assert held_urls(config) == {EHR, MYRECORD}  # both reserved in the tenant's URL index


def test_patient_launches_may_name_the_patient_url_provider_launches_never() -> None:
    config = approved()
    assert config.launch_base(MYRECORD + "/", patient=True) == MYRECORD
    assert config.launch_base(EHR, patient=True) == EHR
    assert config.launch_base(EHR, patient=False) == EHR
    assert config.launch_base(MYRECORD, patient=False) is None
    assert config.launch_base("https://fhir-myrecord.cerner.com/r4/another-tenant", patient=True) is None
    assert config.launch_base("https://x:notaport/r4", patient=True) is None  # a forged iss: no match, no error


def test_editing_the_patient_url_waits_for_approval_and_a_new_sign_in() -> None:
    live = approved()
    moved = "https://fhir-myrecord.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d/extra"
    edited = cfg.edited(live, replace(DATA, patient_fhir_base_url=moved), by="admin@contoso.example", now=NOW)
    assert edited.patient_fhir_base_url == MYRECORD  # launches keep the approved one
    assert edited.edit is not None and edited.edit.data.patient_fhir_base_url == moved
    assert edited.edit_needs_ehr_signin and edited.proposed.ehr_signin is None
    assert [c.field for c in edited.changes] == ["patient_fhir_base_url"]
    assert held_urls(edited) == {EHR, MYRECORD, moved}
    with pytest.raises(Conflict):
        cfg.approved(edited, upn="analyst@contoso.example", oid=OID, now=NOW)
    signed = cfg.with_ehr_signin(edited, upn="analyst@contoso.example", oid=OID, now=NOW + timedelta(minutes=1))
    done = cfg.approved(signed, upn="analyst@contoso.example", oid=OID, now=NOW + timedelta(minutes=2))
    assert done.patient_fhir_base_url == moved and done.edit is None and done.status is Status.APPROVED
    assert held_urls(done) == {EHR, moved}


def test_removing_the_patient_url_is_an_edit_too_and_a_stale_sign_in_proves_nothing() -> None:
    live = approved()
    edited = cfg.edited(live, replace(DATA, patient_fhir_base_url=""), by="admin@contoso.example", now=NOW)
    assert edited.edit_needs_ehr_signin and edited.proposed.ehr_signin is None
    # a sign-in recorded for another patient URL does not prove this one
    signin = live.ehr_signin
    assert signin is not None
    forged = replace(live, status=Status.PENDING, ehr_signin=replace(signin, patient_fhir_base_url=""))
    with pytest.raises(Conflict):
        cfg.approved(forged, upn="analyst@contoso.example", oid=OID, now=NOW)


def test_an_edit_stored_before_the_field_existed_reads_as_none() -> None:
    plain = cfg.input_to_plain(replace(DATA, patient_fhir_base_url=""))
    del plain["patient_fhir_base_url"]
    assert cfg.input_from_plain(plain).patient_fhir_base_url == ""


def test_only_oracle_offers_a_patient_url_and_only_for_the_same_tenant() -> None:
    oracle = profile_for(Vendor.ORACLE)
    assert oracle.patient_fhir_base_refusal(EHR, MYRECORD) is None
    assert "same tenant" in str(oracle.patient_fhir_base_refusal(EHR, "https://fhir-myrecord.cerner.com/r4/other"))
    assert "FHIR URL itself" in str(oracle.patient_fhir_base_refusal(EHR, EHR))
    for vendor in (Vendor.EPIC, Vendor.SMART):
        assert "leave the patient-side FHIR URL empty" in str(
            profile_for(vendor).patient_fhir_base_refusal(EHR, MYRECORD)
        )
    assert tenant_segment(MYRECORD) == "ec2458f2-1e24-41c8-b71b-0e701af7583d"
