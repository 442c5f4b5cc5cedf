"""The portal's entry checks that depend on the EHR and its vendor, called as the Functions host calls them:
the FHIR version (R4 only), the token endpoint's client authentication, writeback modes per vendor, and the
integration records each vendor's profile lists."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from shared.configurations.model import Status
from shared.configurations.repository import ConfigurationRepository
from tests.functions.portal_support import Tenant, call, new_tenant, submit, text
from tests.support.fake_ehr import FakeEhr

pytestmark = pytest.mark.azurite


@pytest.fixture
def tenant(env: dict[str, str], ehr: FakeEhr) -> Iterator[Tenant]:
    reset_services()
    yield new_tenant()
    ehr.fhir_version, ehr.auth_methods = "4.0.1", ("private_key_jwt",)
    reset_services()


def stored(tenant: Tenant) -> list[str]:
    return [c.fhir_base_url for c in ConfigurationRepository(services().storage.app).list_for_tenant(tenant.id)]


@pytest.mark.parametrize(
    ("version", "named"),
    [("3.0.2", "FHIR 3.0.2 (STU3)"), ("5.0.0", "FHIR 5.0.0 (R5)"), ("1.0.2", "FHIR 1.0.2 (DSTU2)")],
)
def test_a_fhir_url_of_another_fhir_version_is_refused_at_entry_with_the_reason(
    tenant: Tenant, ehr: FakeEhr, version: str, named: str
) -> None:
    ehr.fhir_version = version
    response = submit(tenant, f"{ehr.base}/v{version.replace('.', '')}/api/FHIR/R4")
    assert response.status_code == 400
    assert f"FHIR URL isn&#39;t valid: it serves {named}; the connector supports R4 (4.0.x) only" in text(response)
    assert stored(tenant) == []  # nothing saved


def test_an_r4_server_is_accepted(tenant: Tenant, ehr: FakeEhr) -> None:
    ehr.fhir_version = "4.0.1"
    url = f"{ehr.base}/r4ok/api/FHIR/R4"
    assert submit(tenant, url).status_code == 303
    assert stored(tenant) == [url]


def test_an_ehr_that_does_not_accept_private_key_jwt_is_refused_at_entry(tenant: Tenant, ehr: FakeEhr) -> None:
    ehr.auth_methods = ("client_secret_basic", "client_secret_post")
    response = submit(tenant, f"{ehr.base}/secret-only/api/FHIR/R4", vendor="smart", writeback_mode="none")
    assert response.status_code == 400
    body = text(response)
    assert "does not accept private_key_jwt client authentication" in body
    assert "client_secret_basic, client_secret_post" in body


@pytest.mark.parametrize("vendor", ["oracle", "smart"])
def test_epic_writeback_is_offered_to_epic_only(tenant: Tenant, ehr: FakeEhr, vendor: str) -> None:
    response = submit(tenant, f"{ehr.base}/{vendor}-wb/api/FHIR/R4", vendor=vendor, writeback_mode="epic")
    assert response.status_code == 400
    assert "has no Epic SetExternalConnectionStatus writeback: choose FHIR AuditEvent or no writeback" in text(response)
    ok = submit(tenant, f"{ehr.base}/{vendor}-wb/api/FHIR/R4", vendor=vendor, writeback_mode="fhir-auditevent")
    assert ok.status_code == 303


def records_page(tenant: Tenant, vendor: str, ehr: FakeEhr) -> tuple[str, str]:
    url = f"{ehr.base}/{vendor}-records/api/FHIR/R4"
    writeback = "epic" if vendor == "epic" else "fhir-auditevent"
    assert submit(tenant, url, vendor=vendor, writeback_mode=writeback).status_code == 303
    repository = ConfigurationRepository(services().storage.app)
    config = next(c for c in repository.list_for_tenant(tenant.id) if c.fhir_base_url == url)
    approved = dataclasses.replace(config, status=Status.APPROVED, approved_by="analyst@contoso.example")
    repository.update(config, dataclasses.replace(approved, approved_at=config.created_at), etag=str(config.etag))
    route, base = {"id": config.id}, f"portal/configurations/{config.id}"
    page = call(portal.records, "GET", f"{base}/records", session=tenant.admin, route=route)
    plain = call(portal.records_text, "GET", f"{base}/records.txt", session=tenant.admin, route=route)
    assert page.status_code == plain.status_code == 200, text(page)
    return text(page), text(plain)


def test_oracle_records_carry_no_epic_context_tokens_and_name_powerchart(tenant: Tenant, ehr: FakeEhr) -> None:
    page, plain = records_page(tenant, "oracle", ehr)
    assert "%CSN%" not in page and "%CSN%" not in plain and "Context tokens" not in plain
    assert "EHR vendor: Oracle Health" in plain and "Where: PowerChart" in plain
    assert "patient/Patient.read patient/Encounter.read patient/Appointment.read" in plain  # no wildcard
    assert "tenant id in the FHIR URL" in plain  # what the approver proved, in Oracle's terms
    assert "[Email/SMS join links]" in plain and "signed connector URL for this one appointment" in plain
    assert "Epic SetExternalConnectionStatus" not in plain


def test_epic_records_keep_the_fdi_context_tokens(tenant: Tenant, ehr: FakeEhr) -> None:
    page, plain = records_page(tenant, "epic", ehr)
    assert "Context tokens: sessionId=%CSN%&departmentId=%PERFDEPID" in plain and "sessionId=%CSN%" in page
    assert "Where: Hyperspace" in plain and "user/Location.read" in plain
