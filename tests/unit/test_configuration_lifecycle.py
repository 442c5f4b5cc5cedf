"""The configuration state machine: pending → (EHR sign-in) → approved → (edit) → pending."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.configurations import model as cfg
from shared.configurations.model import ConfigurationInput, Environment, Status, Vendor, WritebackMode
from shared.kernel.errors import BadRequest, Conflict, Forbidden, NotFound
from shared.kernel.settings import Geography

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TENANT = "11111111-1111-4111-8111-111111111111"
APPROVER_OID = "a0000000-0000-4000-8000-000000000002"
DATA = ConfigurationInput(
    organization="Contoso Health",
    fhir_base_url="HTTPS://EHR.contoso.example/api/FHIR/R4/",
    environment=Environment.TEST,
    approver_upn="Analyst@Contoso.example",
    geography=Geography.AMERICAS,
    vendor=Vendor.EPIC,
    provider_client_id="prov",
    patient_client_id="pat",
    writeback_mode=WritebackMode.EPIC,
)


def new() -> cfg.Configuration:
    return cfg.new_configuration(TENANT, DATA, by="admin@contoso.example", now=NOW)


def proven(config: cfg.Configuration) -> cfg.Configuration:
    return cfg.with_ehr_signin(config, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)


def test_a_new_configuration_is_pending_with_a_normalised_url_and_approver() -> None:
    config = new()
    assert config.status is Status.PENDING
    assert config.fhir_base_url == "https://ehr.contoso.example/api/FHIR/R4"
    assert config.approver_upn == "analyst@contoso.example"
    assert config.ehr_signin is None and config.approved_by is None


def test_the_named_approver_approves_after_their_ehr_signin() -> None:
    config = proven(new())
    assert config.status is Status.PENDING and config.ehr_signin is not None
    done = cfg.approved(config, upn="ANALYST@contoso.example", oid=APPROVER_OID, now=NOW + timedelta(minutes=1))
    assert done.status is Status.APPROVED
    assert done.approved_by == "analyst@contoso.example" and done.approved_at == NOW + timedelta(minutes=1)


def test_approval_without_ehr_signin_is_refused() -> None:
    with pytest.raises(Conflict) as caught:
        cfg.approved(new(), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert caught.value.code == "ehr_signin_required"


def test_approval_needs_the_approvers_own_ehr_signin() -> None:
    # The EHR sign-in bound the approver's name to their object id: someone else with that name is not the approver.
    with pytest.raises(Forbidden):
        cfg.approved(proven(new()), upn="analyst@contoso.example", oid="someone-else", now=NOW)
    # Without a binding (a row from before it existed) the EHR sign-in's own object id still has to match.
    unbound = replace(proven(new()), approver_oid=None)
    with pytest.raises(Conflict):
        cfg.approved(unbound, upn="analyst@contoso.example", oid="someone-else", now=NOW)


def test_an_ehr_signin_for_another_url_does_not_count() -> None:
    config = proven(new())
    moved = replace(config, fhir_base_url="https://other.contoso.example/fhir")
    with pytest.raises(Conflict):
        cfg.approved(moved, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)


def test_only_the_named_approver_may_sign_in_to_the_ehr_or_approve() -> None:
    with pytest.raises(Forbidden):
        cfg.with_ehr_signin(new(), upn="admin@contoso.example", oid="x", now=NOW)
    with pytest.raises(Forbidden):
        cfg.approved(proven(new()), upn="admin@contoso.example", oid=APPROVER_OID, now=NOW)


def test_approving_twice_is_a_conflict() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    with pytest.raises(Conflict):
        cfg.approved(done, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)


def test_editing_an_approved_configuration_sends_it_back_to_pending() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    changed = cfg.edited(done, replace(DATA, organization="Contoso Health System"), by="admin", now=NOW)
    assert changed.status is Status.PENDING
    assert changed.ehr_signin is None and changed.approved_by is None and changed.approved_at is None
    assert changed.organization == "Contoso Health System"
    assert changed.id == done.id and changed.created_at == done.created_at


def test_url_key_is_the_same_for_every_spelling_of_a_url() -> None:
    assert cfg.url_key("https://EHR.example.org:443/fhir/") == cfg.url_key("https://ehr.example.org/fhir")
    assert cfg.url_key("https://ehr.example.org/FHIR") != cfg.url_key("https://ehr.example.org/fhir")


PARTNER = "33333333-3333-4333-8333-333333333333"
ALLOWED = frozenset({TENANT, PARTNER})


def approved_config() -> cfg.Configuration:
    return cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)


def test_sharing_adds_a_tenant_that_may_then_sign_in() -> None:
    config = cfg.shared(approved_config(), f" {PARTNER.upper()} ", allowed_tenants=ALLOWED)
    assert config.shared_with == (PARTNER,)
    assert config.signin_tenants == {TENANT, PARTNER} and config.is_shared_with(PARTNER.upper())
    assert cfg.unshared(config, PARTNER).shared_with == ()


@pytest.mark.parametrize(
    ("tenant", "error"),
    [("x", BadRequest), (TENANT, BadRequest), ("44444444-4444-4444-8444-444444444444", BadRequest)],
    ids=["not-a-guid", "own-tenant", "not-allowed-to-sign-in"],
)
def test_sharing_refuses_what_cannot_work(tenant: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        cfg.shared(approved_config(), tenant, allowed_tenants=ALLOWED)


def test_sharing_needs_approval_and_refuses_duplicates_and_unknown_withdrawals() -> None:
    with pytest.raises(Conflict) as pending:
        cfg.shared(new(), PARTNER, allowed_tenants=ALLOWED)
    assert pending.value.code == "not_approved"
    once = cfg.shared(approved_config(), PARTNER, allowed_tenants=ALLOWED)
    with pytest.raises(Conflict) as twice:
        cfg.shared(once, PARTNER, allowed_tenants=ALLOWED)
    assert twice.value.code == "already_shared"
    with pytest.raises(NotFound):
        cfg.unshared(approved_config(), PARTNER)


def test_an_edit_keeps_the_shares_but_they_wait_for_approval() -> None:
    config = cfg.shared(approved_config(), PARTNER, allowed_tenants=ALLOWED)
    edited = cfg.edited(config, DATA, by="admin@contoso.example", now=NOW)
    assert edited.shared_with == (PARTNER,) and not edited.is_approved


def test_at_most_max_shares() -> None:
    many = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(cfg.MAX_SHARES + 1)]
    config = approved_config()
    for tenant in many[:-1]:
        config = cfg.shared(config, tenant, allowed_tenants=frozenset(many))
    with pytest.raises(Conflict) as caught:
        cfg.shared(config, many[-1], allowed_tenants=frozenset(many))
    assert caught.value.code == "too_many_shares"
