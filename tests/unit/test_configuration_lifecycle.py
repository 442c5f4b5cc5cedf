"""The configuration state machine: pending → (EHR sign-in) → approved → (edit beside it) → approved again."""

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


def test_editing_an_approved_configuration_keeps_the_approved_version_live() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    later = NOW + timedelta(hours=1)
    moved = replace(DATA, fhir_base_url="https://ehr2.contoso.example/fhir", organization="Contoso Health System")
    changed = cfg.edited(done, moved, by="admin@contoso.example", now=later)
    # What launches read is untouched: same status, URL, approval and sign-in.
    assert (
        changed.is_approved and changed.fhir_base_url == done.fhir_base_url and changed.organization == "Contoso Health"
    )
    assert (changed.approved_by, changed.approved_at, changed.ehr_signin) == (
        done.approved_by,
        done.approved_at,
        done.ehr_signin,
    )
    assert changed.awaits_approval and changed.edit is not None
    assert [(c.field, c.old, c.new) for c in changed.changes] == [
        ("organization", "Contoso Health", "Contoso Health System"),
        ("fhir_base_url", "https://ehr.contoso.example/api/FHIR/R4", "https://ehr2.contoso.example/fhir"),
    ]
    # The version awaiting approval: the new URL, not yet proven, by whom and when.
    proposed = changed.proposed
    assert proposed.fhir_base_url == "https://ehr2.contoso.example/fhir" and proposed.status is Status.PENDING
    assert proposed.ehr_signin is None and changed.edit_needs_ehr_signin
    assert (proposed.updated_by, proposed.updated_at) == ("admin@contoso.example", later)
    assert changed.id == done.id and changed.created_at == done.created_at


def test_approving_an_edit_that_moves_the_url_needs_a_new_ehr_signin_then_applies_it() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    changed = cfg.edited(done, replace(DATA, fhir_base_url="https://ehr2.contoso.example/fhir"), by="a", now=NOW)
    with pytest.raises(Conflict) as caught:
        cfg.approved(changed, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert caught.value.code == "ehr_signin_required"
    signed = cfg.with_ehr_signin(changed, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert signed.ehr_signin == done.ehr_signin  # the live version's proof is untouched
    assert signed.edit is not None and signed.edit.ehr_signin is not None
    assert signed.edit.ehr_signin.fhir_base_url == "https://ehr2.contoso.example/fhir"
    later = NOW + timedelta(days=1)
    applied = cfg.approved(signed, upn="analyst@contoso.example", oid=APPROVER_OID, now=later)
    assert applied.is_approved and applied.edit is None and not applied.awaits_approval
    assert applied.fhir_base_url == "https://ehr2.contoso.example/fhir" and applied.approved_at == later


def test_an_edit_of_the_display_name_keeps_the_ehr_signin_but_still_awaits_approval() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    renamed = cfg.edited(done, replace(DATA, organization="Contoso Health System"), by="admin", now=NOW)
    assert renamed.awaits_approval and not renamed.edit_needs_ehr_signin
    assert renamed.proposed.ehr_signin == done.ehr_signin
    with pytest.raises(Forbidden):  # still only the approver
        cfg.approved(renamed, upn="admin@contoso.example", oid="x", now=NOW)
    applied = cfg.approved(renamed, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert applied.organization == "Contoso Health System" and applied.is_approved and applied.edit is None
    with pytest.raises(Conflict) as again:
        cfg.with_ehr_signin(applied, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert again.value.code == "already_approved"


@pytest.mark.parametrize(
    "change",
    [
        {"vendor": Vendor.ORACLE},
        {"provider_client_id": "another-client"},
        {"approver_upn": "other.analyst@contoso.example"},
    ],
    ids=["vendor", "provider-client", "approver"],
)
def test_an_edit_of_what_the_ehr_signin_proves_forgets_it(change: dict[str, object]) -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    changed = cfg.edited(done, replace(DATA, **change), by="admin", now=NOW)  # type: ignore[arg-type]
    assert changed.edit_needs_ehr_signin and changed.proposed.ehr_signin is None


def test_a_new_approver_named_in_an_edit_is_the_one_who_approves_it() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    other_oid = "a0000000-0000-4000-8000-000000000009"
    changed = cfg.edited(done, replace(DATA, approver_upn="Other@contoso.example"), by="admin", now=NOW)
    with pytest.raises(Forbidden):  # the approver of the live version does not approve an edit naming someone else
        cfg.with_ehr_signin(changed, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    bound = cfg.bound_approver(changed, upn="other@contoso.example", oid=other_oid)
    assert bound.approver_oid == APPROVER_OID and bound.edit is not None and bound.edit.approver_oid == other_oid
    signed = cfg.with_ehr_signin(bound, upn="other@contoso.example", oid=other_oid, now=NOW)
    applied = cfg.approved(signed, upn="other@contoso.example", oid=other_oid, now=NOW)
    assert applied.approver_upn == "other@contoso.example" and applied.approver_oid == other_oid


def test_rejecting_or_withdrawing_an_edit_keeps_the_approved_version() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    changed = cfg.edited(done, replace(DATA, patient_client_id="other"), by="admin", now=NOW)
    assert cfg.edit_discarded(changed) == done
    with pytest.raises(Conflict):
        cfg.edit_discarded(done)


def test_an_edit_back_to_the_approved_values_leaves_nothing_awaiting_approval() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    changed = cfg.edited(done, replace(DATA, organization="Renamed"), by="admin", now=NOW)
    restored = cfg.edited(changed, DATA, by="admin", now=NOW)
    assert restored == done and not restored.awaits_approval


def test_a_second_edit_keeps_the_first_edits_ehr_signin_when_it_proves_the_same() -> None:
    done = cfg.approved(proven(new()), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    moved = replace(DATA, fhir_base_url="https://ehr2.contoso.example/fhir")
    signed = cfg.with_ehr_signin(
        cfg.edited(done, moved, by="a", now=NOW), upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW
    )
    again = cfg.edited(signed, replace(moved, organization="Renamed"), by="a", now=NOW)
    assert again.proposed.ehr_signin is not None and again.proposed.ehr_signin.fhir_base_url == moved.fhir_base_url


def test_editing_a_configuration_never_approved_changes_it_in_place() -> None:
    config = proven(new())
    renamed = cfg.edited(config, replace(DATA, organization="Renamed"), by="admin", now=NOW)
    assert renamed.edit is None and renamed.organization == "Renamed" and renamed.ehr_signin == config.ehr_signin
    moved = cfg.edited(config, replace(DATA, fhir_base_url="https://ehr2.contoso.example/fhir"), by="admin", now=NOW)
    assert moved.edit is None and moved.ehr_signin is None and moved.status is Status.PENDING


def test_a_pending_edit_survives_a_round_trip_as_plain_values() -> None:
    assert cfg.input_from_plain(cfg.input_to_plain(DATA)) == DATA
    with pytest.raises(ValueError):
        cfg.input_from_plain({**cfg.input_to_plain(DATA), "vendor": "nope"})


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


def test_shares_keep_working_while_an_edit_awaits_approval() -> None:
    config = cfg.shared(approved_config(), PARTNER, allowed_tenants=ALLOWED)
    edited = cfg.edited(config, replace(DATA, organization="Renamed"), by="admin@contoso.example", now=NOW)
    assert edited.shared_with == (PARTNER,) and edited.is_approved and edited.awaits_approval
    other = "44444444-4444-4444-8444-444444444444"
    more = cfg.shared(edited, other, allowed_tenants=ALLOWED | {other})  # sharing goes on meanwhile
    applied = cfg.approved(more, upn="analyst@contoso.example", oid=APPROVER_OID, now=NOW)
    assert applied.shared_with == (PARTNER, other) and applied.organization == "Renamed"


def test_at_most_max_shares() -> None:
    many = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(cfg.MAX_SHARES + 1)]
    config = approved_config()
    for tenant in many[:-1]:
        config = cfg.shared(config, tenant, allowed_tenants=frozenset(many))
    with pytest.raises(Conflict) as caught:
        cfg.shared(config, many[-1], allowed_tenants=frozenset(many))
    assert caught.value.code == "too_many_shares"
