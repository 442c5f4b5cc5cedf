"""Clinician links in the portal: the owning tenant's admins list a configuration's EHR user → Microsoft 365 user
links and remove one (CSRF-checked POST); nobody else sees or removes them. Through the functions, on Azurite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connector import portal
from connector.services import reset as reset_services
from connector.services import services
from shared.configurations import model as cfg
from shared.configurations.model import Configuration
from shared.configurations.repository import ConfigurationRepository
from shared.launch.user_map import UserMapping
from tests.functions.portal_support import Tenant, call, new_tenant, text
from tests.functions.test_portal import approved_in_storage

pytestmark = pytest.mark.azurite


@pytest.fixture
def tenants(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Tenant, Tenant, Tenant]]:
    """(owner, partner the configuration is shared with, stranger)."""
    owner, partner, stranger = new_tenant(), new_tenant(), new_tenant()
    monkeypatch.setenv("ENTRA_ALLOWED_TENANT_IDS", ",".join(t.id for t in (owner, partner, stranger)))
    reset_services()
    yield owner, partner, stranger
    reset_services()


def linked_config(owner: Tenant, partner: Tenant) -> Configuration:
    """An approved configuration shared with ``partner``, with two clinicians linked and one of another config."""
    config = approved_in_storage(owner)
    repository = ConfigurationRepository(services().storage.app)
    shared = cfg.shared(config, partner.id, allowed_tenants=services().settings.entra_allowed_tenant_ids)
    config = repository.update(config, shared, etag=str(config.etag))
    user_map = services().user_map
    user_map.put(config.geography, config.id, "Practitioner/lee", tenant_id=owner.id, object_id="oid-lee",
                 upn="dr.lee@contoso.example")  # fmt: skip
    user_map.put(config.geography, config.id, "Practitioner/old", tenant_id=partner.id, object_id="oid-old")
    other = approved_in_storage(owner)
    user_map.put(other.geography, other.id, "Practitioner/x", tenant_id=owner.id, object_id="oid-x",
                 upn="dr.other@contoso.example")  # fmt: skip
    return config


def links_page(tenant_session: object, config: Configuration):  # type: ignore[no-untyped-def]
    return call(portal.links, "GET", "l", session=tenant_session, route={"id": config.id})  # type: ignore[arg-type]


def remove(session: object, config: Configuration, key: str, *, csrf: str | None = None):  # type: ignore[no-untyped-def]
    token = session.csrf_token if csrf is None else csrf  # type: ignore[attr-defined]
    return call(
        portal.remove_link, "POST", "d", session=session, form={"csrf": token},  # type: ignore[arg-type]
        route={"id": config.id, "key": key},
    )  # fmt: skip


def test_the_owners_admin_lists_the_links_of_the_configuration(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, _ = tenants
    config = linked_config(owner, partner)
    response = links_page(owner.admin, config)
    assert response.status_code == 200
    page = text(response)
    assert "dr.lee@contoso.example" in page and "this organization" in page
    assert "oid-old" in page and partner.id in page  # linked before UPNs were kept: the object id
    assert "dr.other@contoso.example" not in page  # another configuration's
    lee_key = services().user_map.row_key(config.id, "Practitioner/lee")
    assert lee_key[:12] in page and "Practitioner" not in page and "lee</" not in page
    assert f"/api/portal/configurations/{config.id}/links/{lee_key}/delete" in page
    detail = text(call(portal.configuration, "GET", "c", session=owner.admin, route={"id": config.id}))
    assert f"/api/portal/configurations/{config.id}/links" in detail


def test_only_the_owners_admins_see_the_links(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, stranger = tenants
    config = linked_config(owner, partner)
    assert links_page(owner.approver, config).status_code == 403  # the owner's approver is no admin
    assert links_page(partner.admin, config).status_code == 404  # shared with them: still not theirs
    assert links_page(stranger.admin, config).status_code == 404
    anonymous = call(portal.links, "GET", "l", route={"id": config.id})
    assert anonymous.status_code in (302, 303) and "signin-required" in anonymous.headers["Location"]
    partner_detail = text(call(portal.configuration, "GET", "c", session=partner.admin, route={"id": config.id}))
    assert "/links" not in partner_detail


def test_the_owners_admin_removes_a_link_and_this_instance_forgets_it(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, _ = tenants
    config = linked_config(owner, partner)
    user_map = services().user_map
    key = user_map.row_key(config.id, "Practitioner/lee")
    memo_key = (config.geography, config.id, key)
    remembered = user_map.get(config.geography, config.id, "Practitioner/lee")
    assert isinstance(remembered, UserMapping)
    services().launch._mappings.put(memo_key, remembered)  # a launch on this instance remembered it

    response = remove(owner.admin, config, key)
    assert response.status_code == 303
    assert response.headers["Location"] == f"/api/portal/configurations/{config.id}/links?notice=link-removed"
    assert user_map.get(config.geography, config.id, "Practitioner/lee") is None
    assert services().launch._mappings.get(memo_key) is None
    after = call(
        portal.links, "GET", "l", session=owner.admin, route={"id": config.id}, params={"notice": "link-removed"}
    )
    page = text(after)
    assert "Link removed" in page and "dr.lee@contoso.example" not in page and "oid-old" in page


def test_removing_needs_the_form_token_and_the_owners_admin(tenants: tuple[Tenant, Tenant, Tenant]) -> None:
    owner, partner, stranger = tenants
    config = linked_config(owner, partner)
    user_map = services().user_map
    key = user_map.row_key(config.id, "Practitioner/lee")
    assert remove(owner.admin, config, key, csrf="").status_code == 403
    assert remove(owner.admin, config, key, csrf="forged").status_code == 403
    assert remove(owner.approver, config, key).status_code == 403
    assert remove(partner.admin, config, key).status_code == 404
    assert remove(stranger.admin, config, key).status_code == 404
    assert user_map.get(config.geography, config.id, "Practitioner/lee") is not None  # still there

    other_key = user_map.row_key("another-configuration", "Practitioner/lee")
    assert remove(owner.admin, config, other_key).status_code == 404
    assert remove(owner.admin, config, "../../x").status_code == 404


def test_deleting_a_configuration_removes_its_clinician_links_and_no_other(
    tenants: tuple[Tenant, Tenant, Tenant],
) -> None:
    """A deleted configuration's links are unusable; they are deleted with it rather than left for nobody."""
    owner, partner, _ = tenants
    config = linked_config(owner, partner)
    user_map = services().user_map
    for number in range(105):  # more than one Table transaction's worth
        user_map.put(config.geography, config.id, f"Practitioner/p{number}", tenant_id=owner.id, object_id="oid")
    others = [c for c in ConfigurationRepository(services().storage.app).list_for_tenant(owner.id) if c.id != config.id]
    etag = str(ConfigurationRepository(services().storage.app).get(owner.id, config.id).etag)
    done = call(
        portal.delete_configuration, "POST", "x", session=owner.admin, route={"id": config.id},  # type: ignore[arg-type]
        form={"csrf": owner.admin.csrf_token, "confirm": "yes", "etag": etag},
    )  # fmt: skip
    assert done.status_code == 303
    assert user_map.list_for_configuration(config.geography, config.id) == []
    assert user_map.get(config.geography, config.id, "Practitioner/lee") is None
    assert [len(user_map.list_for_configuration(c.geography, c.id)) for c in others] == [1]  # the other's link stays
