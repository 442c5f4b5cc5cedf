"""Oracle Health's patient-side FHIR URL through the portal, called as the Functions host calls it: checked at
entry like the FHIR URL (SMART discovery, FHIR R4) and as a root of the same tenant, offered to Oracle only,
re-checked and recorded with the approver's EHR sign-in, an edit of it waiting for approval and a new sign-in,
and shown on the approval page and in the integration records (the patient launch's ``iss``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector import portal
from connector.services import reset as reset_services
from tests.functions.portal_support import Tenant, call, configuration_form, new_tenant, repository, submit, text
from tests.functions.test_portal import approve, callback, edit, ehr_signin, page_of
from tests.support.fake_ehr import FakeEhr

pytestmark = pytest.mark.azurite
TENANT_ID = "ec2458f2-1e24-41c8-b71b-0e701af7583d"
ORACLE = {"vendor": "oracle", "writeback_mode": "fhir-auditevent"}


@pytest.fixture
def tenant(env: dict[str, str], ehr: FakeEhr) -> Iterator[Tenant]:
    reset_services()
    yield new_tenant()
    ehr.fhir_versions.clear()
    reset_services()


def roots(ehr: FakeEhr, name: str, tenant_id: str = TENANT_ID) -> tuple[str, str]:
    """(provider root, patient-access root) of one Millennium tenant, as Oracle's "Service Root URL" page lists."""
    return f"{ehr.base}/{name}-ehr/r4/{TENANT_ID}", f"{ehr.base}/{name}-myrecord/r4/{tenant_id}"


def test_an_oracle_patient_url_of_the_same_tenant_is_accepted_and_normalised(tenant: Tenant, ehr: FakeEhr) -> None:
    main, patient = roots(ehr, "ok")
    response = submit(tenant, main, patient_fhir_base_url=f"  {patient}/ ", **ORACLE)
    assert response.status_code == 303, text(response)
    [config] = repository().list_for_tenant(tenant.id)
    assert config.patient_fhir_base_url == patient  # trimmed, no trailing slash
    assert repository().find_for_launch(config.id, config.patient_fhir_base_url, patient=True) == config


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda ehr: roots(ehr, "other", "another-tenant"), "it names tenant another-tenant in its path"),
        (lambda ehr: (roots(ehr, "same")[0], roots(ehr, "same")[0]), "it is the FHIR URL itself"),
        (lambda ehr: (roots(ehr, "nosmart")[0], f"{ehr.base}/nothing/x/{TENANT_ID}"), "SMART"),
    ],
)
def test_a_patient_url_that_is_not_the_same_tenants_smart_root_is_refused_with_the_reason(
    tenant: Tenant,
    ehr: FakeEhr,
    make,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    main, patient = make(ehr)
    response = submit(tenant, main, patient_fhir_base_url=patient, **ORACLE)
    assert response.status_code == 400
    body = text(response)
    assert "Patient-side FHIR URL isn&#39;t valid: " in body and reason in body
    assert repository().list_for_tenant(tenant.id) == []  # nothing saved


def test_a_patient_url_serving_another_fhir_version_is_refused_at_entry(tenant: Tenant, ehr: FakeEhr) -> None:
    main, patient = roots(ehr, "stu3")
    ehr.fhir_versions[patient.removeprefix(f"{ehr.base}/")] = "3.0.2"
    response = submit(tenant, main, patient_fhir_base_url=patient, **ORACLE)
    assert response.status_code == 400
    assert "Patient-side FHIR URL isn&#39;t valid: it serves FHIR 3.0.2 (STU3)" in text(response)


@pytest.mark.parametrize("vendor", ["epic", "smart"])
def test_only_oracle_is_offered_a_patient_url(tenant: Tenant, ehr: FakeEhr, vendor: str) -> None:
    main, patient = roots(ehr, f"v-{vendor}")
    writeback = "epic" if vendor == "epic" else "none"
    response = submit(tenant, main, patient_fhir_base_url=patient, vendor=vendor, writeback_mode=writeback)
    assert response.status_code == 400
    assert "serves patients from the FHIR URL itself: leave the patient-side FHIR URL empty" in text(response)


def test_the_approver_proves_it_an_edit_of_it_waits_and_the_records_name_it(tenant: Tenant, ehr: FakeEhr) -> None:
    main, patient = roots(ehr, "proof")
    assert submit(tenant, main, patient_fhir_base_url=patient, **ORACLE).status_code == 303
    [config] = repository().list_for_tenant(tenant.id)
    page = page_of(tenant, config.id, session=tenant.approver)
    assert patient in page and "The patient-side FHIR URL is not signed in to" in page  # what the approval proves

    # The EHR sign-in re-checks it: a patient root that stopped serving R4 meanwhile is not proven.
    ehr.fhir_versions[patient.removeprefix(f"{ehr.base}/")] = "5.0.0"
    failed = callback(tenant, ehr_signin(tenant, config.id))
    assert "The patient-side FHIR URL could not be proven" in text(failed)  # type: ignore[arg-type]
    assert repository().get(tenant.id, config.id).ehr_signin is None
    ehr.fhir_versions.clear()
    callback(tenant, ehr_signin(tenant, config.id))
    signin = repository().get(tenant.id, config.id).ehr_signin
    assert signin is not None and signin.patient_fhir_base_url == patient
    assert approve(tenant, config.id).status_code == 303  # type: ignore[attr-defined]

    records = text(call(portal.records, "GET", "r", session=tenant.admin, route={"id": config.id}))
    assert patient in records and 'id="patient-base-proof"' in records
    plain = text(call(portal.records_text, "GET", "r", session=tenant.admin, route={"id": config.id}))
    assert f"Patient-side FHIR URL: {patient}" in plain
    patient_record = plain.split("[Patient launch]")[1].split("[")[0]
    assert f"FHIR base URL (iss): {patient}" in patient_record
    assert f"FHIR base URL (iss): {main}" in plain.split("[Provider launch]")[1].split("[")[0]

    # An edit of the patient URL waits beside the approved version and needs a new EHR sign-in.
    _, moved = roots(ehr, "moved")
    response = edit(tenant, config.id, main, patient_fhir_base_url=moved, **ORACLE)
    assert response.status_code == 303, text(response)
    live = repository().get(tenant.id, config.id)
    assert live.patient_fhir_base_url == patient and live.edit is not None
    assert live.edit.data.patient_fhir_base_url == moved and live.edit_needs_ehr_signin
    assert repository().find_for_launch(config.id, moved, patient=True) is None  # reserved, not allowed
    assert repository().find_for_launch(config.id, patient, patient=True) is not None
    shown = page_of(tenant, config.id, session=tenant.approver)
    assert "Patient-side FHIR URL" in shown and moved in shown and "signs in to the EHR again" in shown
    callback(tenant, ehr_signin(tenant, config.id))
    assert approve(tenant, config.id).status_code == 303  # type: ignore[attr-defined]
    assert repository().find_for_launch(config.id, moved, patient=True) is not None
    assert repository().find_for_launch(config.id, patient, patient=True) is None


def test_a_patient_url_may_not_repeat_another_rows_url_in_one_form(tenant: Tenant, ehr: FakeEhr) -> None:
    main, patient = roots(ehr, "twice")
    other, _ = roots(ehr, "twice-b")
    form = {"csrf": tenant.admin.csrf_token, "rows": "2", "action": "save"}
    form |= configuration_form(main, prefix="c0-", patient_fhir_base_url=patient, **ORACLE)
    form |= configuration_form(other, prefix="c1-", patient_fhir_base_url=patient, environment="production", **ORACLE)
    response = call(portal.create_configurations, "POST", "portal/configurations", session=tenant.admin, form=form)
    assert response.status_code == 400
    assert text(response).count("This URL appears twice in this form.") >= 2
    assert "This FHIR URL appears twice" not in text(response)  # the FHIR URLs differ
    assert repository().list_for_tenant(tenant.id) == []
