"""Field validation, permissions and integration records of the portal (no storage, no network)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Vendor, WritebackMode
from shared.kernel.errors import NotFound
from shared.kernel.settings import Geography
from shared.microsoft.entra import GLOBAL_ADMINISTRATOR, TEAMS_ADMINISTRATOR, PortalIdentity
from shared.portal.service import can_approve, can_edit, can_view, integration_records, parse_fields

TENANT = "11111111-1111-4111-8111-111111111111"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GOOD = {
    "organization": "Contoso Health",
    "fhir_base_url": "https://ehr.contoso.example/api/FHIR/R4",
    "environment": "Production",
    "approver_upn": "Analyst@Contoso.example",
    "geography": "americas",
    "vendor": "epic",
    "provider_client_id": "0f6c3a1e-5b7d-4c2a-9e8f-1a2b3c4d5e6f",
    "patient_client_id": "patient-app",
    "writeback_mode": "fhir-auditevent",
}


def identity(upn: str = "someone@contoso.example", *, tenant: str = TENANT, **kw: tuple[str, ...]) -> PortalIdentity:
    return PortalIdentity(tenant_id=tenant, object_id="oid-" + upn, upn=upn, name=upn, **kw)


def test_good_fields_are_cleaned() -> None:
    values, errors = parse_fields(GOOD, (Geography.AMERICAS, Geography.EMEA))
    assert errors == {}
    assert values["environment"] == "production" and values["approver_upn"] == "analyst@contoso.example"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("organization", "", "Enter the organization"),
        ("organization", "x" * 121, "up to 120"),
        ("organization", "Contoso\x00", "printable"),
        ("fhir_base_url", "", "FHIR URL isn't valid"),
        ("environment", "staging", "test or production"),
        ("approver_upn", "analyst", "user name"),
        ("approver_upn", "a@b", "user name"),
        ("geography", "apac", "geography offered here"),
        ("vendor", "cerner-classic", "vendor"),
        ("provider_client_id", "", "client id"),
        ("patient_client_id", "id with spaces", "client id"),
        ("writeback_mode", "hl7v2", "writeback"),
    ],
)
def test_each_bad_field_gets_its_own_message(field: str, value: str, message: str) -> None:
    _, errors = parse_fields({**GOOD, field: value}, (Geography.AMERICAS, Geography.EMEA))
    assert list(errors) == [field]
    assert message in errors[field]


def test_admin_roles_are_global_admin_teams_admin_or_the_app_role() -> None:
    assert identity(wids=(GLOBAL_ADMINISTRATOR,)).is_admin
    assert identity(wids=(TEAMS_ADMINISTRATOR,)).is_admin
    assert identity(roles=("Connector.Admin",)).is_admin
    assert not identity(wids=("some-other-role",), roles=("Reader",)).is_admin


def configuration() -> cfg.Configuration:
    data = ConfigurationInput(
        organization="Contoso", fhir_base_url="https://ehr.contoso.example/fhir", environment=Environment.TEST,
        approver_upn="analyst@contoso.example", geography=Geography.AMERICAS, vendor=Vendor.EPIC,
        provider_client_id="p", patient_client_id="q", writeback_mode=WritebackMode.NONE,
    )  # fmt: skip
    return cfg.new_configuration(TENANT, data, by="admin@contoso.example", now=NOW)


def test_who_may_see_edit_and_approve() -> None:
    config = configuration()
    admin = identity("admin@contoso.example", wids=(GLOBAL_ADMINISTRATOR,))
    approver = identity("ANALYST@contoso.example")
    member = identity("dr.smith@contoso.example")
    foreign_admin = identity(
        "admin@fabrikam.example", tenant="33333333-3333-4333-8333-333333333333", wids=(GLOBAL_ADMINISTRATOR,)
    )
    foreign_namesake = identity("analyst@contoso.example", tenant="33333333-3333-4333-8333-333333333333")
    assert can_view(admin, config) and can_edit(admin, config) and not can_approve(admin, config)
    assert can_view(approver, config) and can_approve(approver, config) and not can_edit(approver, config)
    assert not can_view(member, config)
    assert not can_view(foreign_admin, config) and not can_edit(foreign_admin, config)
    assert not can_view(foreign_namesake, config) and not can_approve(foreign_namesake, config)


def test_records_exist_only_for_approved_configurations() -> None:
    config = configuration()
    with pytest.raises(NotFound):
        integration_records(config, "https://connector.example")
    approved = replace(config, status=cfg.Status.APPROVED, approved_by="analyst@contoso.example", approved_at=NOW)
    records = integration_records(approved, "https://connector.example/")
    provider, patient, group_provider, group_patient = records.records
    # Epic's group visits: separate records beside the individual ones, the same launch URLs and clients,
    # each participant's own CSN and the conference id that decides the meeting.
    assert (group_provider.kind, group_patient.kind) == ("group-provider", "group-patient")
    assert group_provider.group and group_patient.group and not provider.group
    assert group_provider.launch_url == provider.launch_url and group_patient.launch_url == patient.launch_url
    assert group_provider.client_id == provider.client_id and group_patient.client_id == patient.client_id
    assert group_patient.context_tokens == "sessionId=%CSN%&conferenceId=%CONFERENCEID%"
    assert group_provider.context_tokens.startswith("sessionId=%CSN%&conferenceId=%CONFERENCEID%&departmentId=")
    assert "conferenceId = %CONFERENCEID%" in group_patient.token_context
    assert provider.launch_url == f"https://connector.example/api/launch/{config.id}/provider"
    assert patient.launch_url == f"https://connector.example/api/launch/{config.id}/patient"
    assert provider.context_tokens == "sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%"
    assert patient.scopes == "launch openid fhirUser patient/*.read"
    # The provider app reads the launch's Encounter and Appointment (the CSN, the primary performer), the
    # department and the clinician: without these scopes Epic answers every read with a 403.
    assert provider.scopes == (
        "launch openid fhirUser user/Encounter.read user/Appointment.read user/Location.read user/Practitioner.read"
    )
    assert "csn = %CSN%" in provider.token_context and "Token response context: " in records.as_text()
    assert records.redirect_uri == "https://connector.example/api/launch/callback"
    assert [uri for _, uri in provider.redirect_uris] == [
        "https://connector.example/api/launch/callback",
        "https://connector.example/api/portal/ehr/callback",  # the approver's EHR sign-in uses the provider app
    ]
    assert [uri for _, uri in patient.redirect_uris] == ["https://connector.example/api/launch/callback"]
    assert records.backend_scopes == "none (writeback off)"
    text = records.as_text()
    assert "Environment: TEST" in text and "Approved by analyst@contoso.example at 2026-11-25 12:00 UTC" in text
    assert text.count("Launch URL: ") == 4 and "[Group visit: patient launch]" in text
    ehr_signin = (
        "Redirect URI (approver's EHR sign-in in the portal): https://connector.example/api/portal/ehr/callback"
    )
    assert ehr_signin in text
    assert text.count("Redirect URI (launches): https://connector.example/api/launch/callback") == 4


def test_records_name_the_algorithm_of_the_active_signing_key() -> None:
    config = configuration()
    approved = replace(config, status=cfg.Status.APPROVED, approved_by="analyst@contoso.example", approved_at=NOW)
    records = integration_records(approved, "https://connector.example", signing_algorithm="ES384")
    assert "Method: private_key_jwt (ES384); no client secret" in records.as_text()
