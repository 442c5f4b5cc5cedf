"""Approvers are bound to their Entra object id, not their user name.

Microsoft documents ``preferred_username`` as mutable: when the approver's name passes to somebody else (a
rename, a leaver's name reused), that person must not see or approve the configuration. The name is bound to
the object id of the user who first signs in with it (through the real sign-in callback, msal and our id_token
checks against a stand-in Entra); afterwards only that object id is the approver. Before the fix, anyone
holding the name was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connector import portal
from connector.services import services
from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Vendor, WritebackMode
from shared.kernel.settings import Geography
from shared.microsoft.entra import PortalIdentity
from shared.portal.sessions import PortalSession
from tests.functions.portal_support import call, text
from tests.functions.test_portal_signin import FakeEntra, fake_entra, finish, start  # noqa: F401

pytestmark = pytest.mark.azurite

# The second allowed tenant of the test settings: Contoso's rows in the shared test storage belong to the
# browser journey, which counts them.
TENANT = "33333333-3333-4333-8333-333333333333"

APPROVER_UPN = "admin@contoso.example"  # the name FakeEntra's user signs in with
APPROVER_OID = "a0000000-0000-4000-8000-000000000001"  # FakeEntra's user


@pytest.fixture
def entra(fake_entra: FakeEntra) -> Iterator[FakeEntra]:  # noqa: F811 - the sign-in stand-in, in TENANT
    fake_entra.tenant = TENANT
    yield fake_entra
    for config in services().configurations.list_for_tenant(TENANT):
        services().configurations.delete(config)


def configuration_naming(upn: str) -> str:
    data = ConfigurationInput(
        organization="Contoso Health",
        fhir_base_url=f"https://ehr-{uuid.uuid4().hex[:8]}.contoso.example/api/FHIR/R4",
        environment=Environment.TEST,
        approver_upn=upn,
        geography=Geography.AMERICAS,
        vendor=Vendor.EPIC,
        provider_client_id="provider-client",
        patient_client_id="patient-client",
        writeback_mode=WritebackMode.EPIC,
    )
    now = datetime.now(UTC)
    return services().configurations.create(cfg.new_configuration(TENANT, data, by="admin", now=now)).id


def namesake() -> PortalSession:
    """Someone who holds the approver's user name today, with another object id (and no admin role)."""
    return services().sessions.create(
        PortalIdentity(tenant_id=TENANT, object_id=str(uuid.uuid4()), upn=APPROVER_UPN, name="Namesake")
    )


def test_a_renamed_namesake_cannot_see_or_approve_a_configuration_bound_to_the_approver(
    entra: FakeEntra,
) -> None:
    config_id = configuration_naming(APPROVER_UPN)
    entra.wids = ()  # the approver is no administrator
    assert finish(start(entra)).status_code == 303  # their first sign-in binds the name to their object id
    assert services().configurations.get(TENANT, config_id).approver_oid == APPROVER_OID

    other = namesake()
    route = {"id": config_id}
    seen = call(portal.configuration, "GET", f"portal/configurations/{config_id}", session=other, route=route)
    assert seen.status_code == 404
    assert config_id not in text(call(portal.dashboard, "GET", "portal", session=other))
    form = {"csrf": other.csrf_token}
    started = call(portal.start_ehr_signin, "POST", "x", session=other, form=form, route=route)
    assert started.status_code == 404
    approved = call(portal.approve, "POST", "x", session=other, form=form, route=route)
    assert approved.status_code == 404
    assert not services().configurations.get(TENANT, config_id).is_approved


def test_the_bound_approver_keeps_access_and_configurations_from_before_are_bound_at_first_sign_in(
    entra: FakeEntra,
) -> None:
    config_id = configuration_naming(APPROVER_UPN)
    assert services().configurations.get(TENANT, config_id).approver_oid is None  # as rows written before
    entra.wids = ()
    finish(start(entra))
    approver = services().sessions.create(
        PortalIdentity(tenant_id=TENANT, object_id=APPROVER_OID, upn=APPROVER_UPN, name="Erin")
    )
    seen = call(portal.configuration, "GET", "x", session=approver, route={"id": config_id})
    assert seen.status_code == 200


def test_naming_another_approver_in_an_edit_unbinds_the_old_one() -> None:
    now = datetime.now(UTC)
    data = ConfigurationInput(
        organization="Contoso Health",
        fhir_base_url="https://ehr.contoso.example/api/FHIR/R4",
        environment=Environment.TEST,
        approver_upn=APPROVER_UPN,
        geography=Geography.AMERICAS,
        vendor=Vendor.EPIC,
        provider_client_id="p",
        patient_client_id="q",
        writeback_mode=WritebackMode.EPIC,
    )
    bound = cfg.bound_approver(cfg.new_configuration(TENANT, data, by="a", now=now), upn=APPROVER_UPN, oid="o1")
    assert bound.approver_oid == "o1" and not bound.is_approver(APPROVER_UPN, "o2")
    assert cfg.bound_approver(bound, upn=APPROVER_UPN, oid="o2").approver_oid == "o1"  # no re-binding
    assert cfg.edited(bound, data, by="a", now=now).approver_oid == "o1"  # same approver: still bound
    renamed = cfg.edited(
        bound, ConfigurationInput(**{**data.__dict__, "approver_upn": "new@contoso.example"}), by="a", now=now
    )
    assert renamed.approver_oid is None
