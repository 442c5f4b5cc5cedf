"""Sharing an approved FHIR URL with other Microsoft 365 tenants, through the portal's functions on Azurite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from shared.configurations import model as cfg
from shared.configurations.model import Configuration
from shared.configurations.repository import SHARES_TABLE, ConfigurationRepository
from tests.functions.portal_support import Tenant, call, configuration_form, new_tenant, text
from tests.functions.test_portal import approved_in_storage

pytestmark = pytest.mark.azurite


@pytest.fixture
def tenants(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tenant, Tenant, Tenant]]:
    """(owner, partner, stranger): the deployment lets all three sign in."""
    owner, partner, stranger = new_tenant(), new_tenant(), new_tenant()
    monkeypatch.setenv("ENTRA_ALLOWED_TENANT_IDS", ",".join(t.id for t in (owner, partner, stranger)))
    reset_services()
    yield owner, partner, stranger
    reset_services()


def repository() -> ConfigurationRepository:
    return ConfigurationRepository(services().storage.app)


def share(tenant: Tenant, config_id: str, tenant_id: str, *, csrf: str | None = None):  # type: ignore[no-untyped-def]
    return call(
        portal.share, "POST", f"portal/configurations/{config_id}/shares", session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token if csrf is None else csrf, "tenant_id": tenant_id},
        route={"id": config_id},
    )  # fmt: skip


def unshare(tenant: Tenant, config_id: str, tenant_id: str):  # type: ignore[no-untyped-def]
    return call(
        portal.unshare, "POST", f"portal/configurations/{config_id}/shares/{tenant_id}/delete", session=tenant.admin,
        form={"csrf": tenant.admin.csrf_token}, route={"id": config_id, "tenant": tenant_id},
    )  # fmt: skip


def shared_config(owner: Tenant, partner: Tenant) -> Configuration:
    config = approved_in_storage(owner)
    response = share(owner, config.id, partner.id.upper())  # as copied from the Entra admin center, any case
    assert response.status_code == 303, text(response)
    assert "notice=shared" in response.headers["Location"]
    return repository().get(owner.id, config.id)


def test_sharing_lets_the_partners_admins_see_the_configuration_and_its_records(
    tenants: tuple[Tenant, Tenant, Tenant],
) -> None:
    owner, partner, _ = tenants
    config = shared_config(owner, partner)
    assert config.shared_with == (partner.id,) and config.signin_tenants == {owner.id, partner.id}

    dashboard = text(call(portal.dashboard, "GET", "portal", session=partner.admin))
    assert "Shared with your organization" in dashboard and f"/api/portal/configurations/{config.id}" in dashboard
    detail = call(portal.configuration, "GET", "c", session=partner.admin, route={"id": config.id})
    assert detail.status_code == 200
    page = text(detail)
    assert f"Shared with your organization by tenant <code>{owner.id}</code>" in page
    assert "Save changes" not in page and "Stop sharing" not in page and "Sign in to EHR" not in page
    records = call(portal.records, "GET", "r", session=partner.admin, route={"id": config.id})
    assert records.status_code == 200 and f"/api/launch/{config.id}/provider" in text(records)
    plain = call(portal.records_text, "GET", "r.txt", session=partner.admin, route={"id": config.id})
    assert plain.status_code == 200 and config.fhir_base_url in text(plain)

    owner_page = text(call(portal.configuration, "GET", "c", session=owner.admin, route={"id": config.id}))
    assert f"<code>{partner.id}</code>" in owner_page and "Stop sharing" in owner_page

    # The owning organization's staff are not named to another organization.
    assert config.approver_upn in owner_page and str(config.approved_by) in text(
        call(portal.records_text, "GET", "r.txt", session=owner.admin, route={"id": config.id})
    )
    for shown in (page, text(records), text(plain)):
        for name in (config.approver_upn, str(config.approved_by)):
            assert name not in shown
    assert f"by {config.updated_by} on" not in page  # (the header names the signed-in partner admin, who shares a UPN)


def test_the_partner_can_read_but_never_change_the_owners_configuration(
    tenants: tuple[Tenant, Tenant, Tenant],
) -> None:
    owner, partner, stranger = tenants
    config = shared_config(owner, partner)
    edit = call(
        portal.update_configuration, "POST", "c", session=partner.admin, route={"id": config.id},
        form={"csrf": partner.admin.csrf_token, "etag": str(config.etag), **configuration_form(config.fhir_base_url)},
    )  # fmt: skip
    assert edit.status_code == 404
    delete = call(
        portal.delete_configuration, "POST", "d", session=partner.admin, route={"id": config.id},
        form={"csrf": partner.admin.csrf_token, "etag": str(config.etag), "confirm": "yes"},
    )  # fmt: skip
    assert delete.status_code == 404
    assert share(partner, config.id, stranger.id).status_code == 404  # re-sharing is the owner's call
    assert unshare(partner, config.id, partner.id).status_code == 404
    for handler, path in (
        (portal.approve, "approve"), (portal.start_ehr_signin, "ehr-signin"), (portal.confirm_delete, "delete"),
    ):  # fmt: skip
        response = call(handler, "POST" if path != "delete" else "GET", path, session=partner.admin,
                        route={"id": config.id}, form={"csrf": partner.admin.csrf_token})  # fmt: skip
        assert response.status_code == 404, path
    assert repository().get(owner.id, config.id) == config  # nothing changed


def test_non_admins_of_the_partner_and_strangers_see_nothing_and_forged_csrf_shares_nothing(
    tenants: tuple[Tenant, Tenant, Tenant],
) -> None:
    owner, partner, stranger = tenants
    config = shared_config(owner, partner)
    for session in (partner.approver, partner.member, stranger.admin):
        for handler in (portal.configuration, portal.records, portal.records_text):
            response = call(handler, "GET", "x", session=session, route={"id": config.id})
            assert response.status_code == 404, (handler, session.user.upn)
            assert config.fhir_base_url not in text(response)
        assert "Shared with your organization" not in text(call(portal.dashboard, "GET", "portal", session=session))
    for csrf in ("", "forged", partner.admin.csrf_token):
        assert share(owner, config.id, stranger.id, csrf=csrf).status_code == 403
    not_admin = call(
        portal.share, "POST", "s", session=owner.approver, route={"id": config.id},
        form={"csrf": owner.approver.csrf_token, "tenant_id": stranger.id},
    )  # fmt: skip
    assert not_admin.status_code == 403
    not_admin_unshare = call(
        portal.unshare, "POST", "u", session=owner.approver, route={"id": config.id, "tenant": partner.id},
        form={"csrf": owner.approver.csrf_token},
    )  # fmt: skip
    assert not_admin_unshare.status_code == 403
    for csrf in ("", "forged"):
        forged = call(
            portal.unshare, "POST", "u", session=owner.admin, route={"id": config.id, "tenant": partner.id},
            form={"csrf": csrf},
        )  # fmt: skip
        assert forged.status_code == 403
    assert repository().get(owner.id, config.id).shared_with == (partner.id,)


@pytest.mark.parametrize(
    ("tenant_id", "status", "message"),
    [
        ("not-a-tenant", 400, "A tenant id looks like"),
        ("<script>alert(1)</script>", 400, "A tenant id looks like"),
        ("OWNER", 400, "That is your own tenant"),
        ("UNLISTED", 400, "add the tenant id to ENTRA_ALLOWED_TENANT_IDS"),
        ("PARTNER", 409, "already shared with tenant"),
    ],
)
def test_bad_share_requests_are_explained_and_change_nothing(
    tenants: tuple[Tenant, Tenant, Tenant], tenant_id: str, status: int, message: str
) -> None:
    owner, partner, _ = tenants
    config = shared_config(owner, partner)
    value = {"OWNER": owner.id, "PARTNER": partner.id, "UNLISTED": str(uuid.uuid4())}.get(tenant_id, tenant_id)
    response = share(owner, config.id, value)
    assert response.status_code == status
    page = text(response)
    assert message in page and 'id="share-error"' in page
    assert "<script>alert(1)</script>" not in page  # what was typed comes back escaped
    assert repository().get(owner.id, config.id).shared_with == (partner.id,)


def test_shares_keep_working_while_an_edit_awaits_approval(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, stranger = tenants
    config = shared_config(owner, partner)
    renamed = replace(config.input(), organization="Contoso Health (renamed)")  # the portal's edit, minus discovery
    repository().update(config, cfg.edited(config, renamed, by="admin@x", now=datetime.now(UTC)), etag=str(config.etag))
    edited = repository().get(owner.id, config.id)
    assert edited.is_approved and edited.edit is not None and edited.shared_with == (partner.id,)
    # The partner's clinicians keep launching: the launch lookup finds the approved version, still shared.
    live = repository().find_for_launch(config.id, config.fhir_base_url)
    assert live is not None and live.is_approved and live.is_shared_with(partner.id)
    assert live.organization == config.organization
    # The partner's admins see the approved version and its records; the owner's edit is the owner's business.
    page = text(call(portal.configuration, "GET", "c", session=partner.admin, route={"id": config.id}))
    assert "Edit awaiting approval" not in page and "(renamed)" not in page
    records = call(portal.records, "GET", "r", session=partner.admin, route={"id": config.id})
    assert records.status_code == 200 and f"/api/launch/{config.id}/provider" in text(records)
    # Sharing goes on meanwhile.
    assert share(owner, config.id, stranger.id).status_code == 303
    assert repository().get(owner.id, config.id).shared_with == (partner.id, stranger.id)


def test_a_configuration_never_approved_cannot_be_shared(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, _ = tenants
    data = replace(approved_in_storage(owner).input(), fhir_base_url="https://pending.contoso.example/fhir")
    config = repository().create(cfg.new_configuration(owner.id, data, by="admin@x", now=datetime.now(UTC)))
    response = share(owner, config.id, partner.id)
    assert response.status_code == 409 and "Approve this configuration before sharing it" in text(response)
    assert repository().get(owner.id, config.id).shared_with == ()


def test_stopping_a_share_hides_the_configuration_from_the_partner(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, _ = tenants
    config = shared_config(owner, partner)
    response = unshare(owner, config.id, partner.id)
    assert response.status_code == 303 and "notice=unshared" in response.headers["Location"]
    assert repository().get(owner.id, config.id).shared_with == ()
    assert repository().list_shared_with(partner.id) == []
    detail = call(portal.configuration, "GET", "c", session=partner.admin, route={"id": config.id})
    assert detail.status_code == 404
    assert unshare(owner, config.id, partner.id).status_code == 404  # not shared any more


def test_an_index_row_the_configuration_does_not_confirm_is_ignored(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    """A share written half-way (index row, then the configuration write failed) grants nothing."""
    owner, partner, _ = tenants
    config = approved_in_storage(owner)
    services().storage.app.table(SHARES_TABLE).upsert_entity(
        {"PartitionKey": partner.id, "RowKey": config.id, "OwnerTenantId": owner.id}
    )
    assert repository().list_shared_with(partner.id) == []
    response = call(portal.configuration, "GET", "c", session=partner.admin, route={"id": config.id})
    assert response.status_code == 404


def test_a_late_index_delete_racing_a_reshare_is_repaired(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    """Admin 1 stops sharing; admin 2 shares again before admin 1's index-row delete lands."""
    owner, partner, _ = tenants
    config = shared_config(owner, partner)  # admin 2's share: the configuration lists the partner again
    repository()._forget_shares(owner.id, config.id, {partner.id})  # admin 1's late delete
    assert [c.id for c in repository().list_shared_with(partner.id)] == [config.id]


def test_deleting_a_shared_configuration_removes_it_for_the_partner(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, _ = tenants
    config = shared_config(owner, partner)
    deleted = call(
        portal.delete_configuration, "POST", "d", session=owner.admin, route={"id": config.id},
        form={"csrf": owner.admin.csrf_token, "etag": str(config.etag), "confirm": "yes"},
    )  # fmt: skip
    assert deleted.status_code == 303, text(deleted)
    assert repository().list_shared_with(partner.id) == []
    assert list(services().storage.app.table(SHARES_TABLE).query_entities(
        "PartitionKey eq @pk", parameters={"pk": partner.id}
    )) == []  # fmt: skip
