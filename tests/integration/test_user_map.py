"""The EHR user map on Azurite: one partition per configuration (listable by its admins), the UPN sealed,
old-layout rows migrated on read, removal by key confined to its configuration, day-precision last use."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from shared.kernel.clock import utcnow
from shared.kernel.errors import NotFound
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography, Settings
from shared.launch.user_map import TABLE, UserMapRepository
from shared.storage.accounts import Storage

pytestmark = pytest.mark.azurite


@pytest.fixture
def repo(storage: Storage, settings: Settings) -> UserMapRepository:
    return UserMapRepository(
        storage, settings.connector_secret.reveal(), Sealer.from_text(settings.sealing_keys.reveal())
    )


def test_a_configurations_links_are_listed_with_their_sealed_upn(
    repo: UserMapRepository, storage: Storage, unique: str
) -> None:
    config, other = f"cfg-{unique}", f"other-{unique}"
    repo.put(Geography.EMEA, config, "Practitioner/1", tenant_id="t1", object_id="o1", upn="dr.one@contoso.example")
    repo.put(Geography.EMEA, config, "Practitioner/2", tenant_id="t1", object_id="o2")
    repo.put(Geography.EMEA, other, "Practitioner/3", tenant_id="t1", object_id="o3", upn="dr.three@contoso.example")
    listed = repo.list_for_configuration(Geography.EMEA, config)
    assert {(m.object_id, m.upn) for m in listed} == {("o1", "dr.one@contoso.example"), ("o2", None)}
    assert {m.key for m in listed} == {repo.row_key(config, "Practitioner/1"), repo.row_key(config, "Practitioner/2")}
    assert repo.list_for_configuration(Geography.AMERICAS, config) == []
    rows = list(storage.for_geography(Geography.EMEA).table(TABLE).list_entities())
    for row in rows:  # nothing personal in clear: keys are keyed hashes, the UPN is sealed
        assert "contoso.example" not in str(dict(row)) and "Practitioner" not in str(dict(row))
        assert config not in row["PartitionKey"]


def test_a_sealed_upn_does_not_open_in_another_row(repo: UserMapRepository, storage: Storage, unique: str) -> None:
    config = f"cfg-{unique}"
    repo.put(Geography.EMEA, config, "Practitioner/1", tenant_id="t", object_id="o1", upn="a@contoso.example")
    repo.put(Geography.EMEA, config, "Practitioner/2", tenant_id="t", object_id="o2", upn="b@contoso.example")
    table = storage.for_geography(Geography.EMEA).table(TABLE)
    first = table.get_entity(repo.partition_key(config), repo.row_key(config, "Practitioner/1"))
    second = table.get_entity(repo.partition_key(config), repo.row_key(config, "Practitioner/2"))
    second["UpnSealed"] = first["UpnSealed"]  # copied into another row
    table.update_entity(second)
    upns = {m.object_id: m.upn for m in repo.list_for_configuration(Geography.EMEA, config)}
    assert upns == {"o1": "a@contoso.example", "o2": None}


def test_old_layout_rows_are_read_and_moved_into_their_configurations_partition(
    repo: UserMapRepository, storage: Storage, unique: str
) -> None:
    config = f"cfg-{unique}"
    row = repo.row_key(config, "Practitioner/7")
    table = storage.for_geography(Geography.EMEA).table(TABLE)
    legacy = {"PartitionKey": "emea", "RowKey": row, "TenantId": "t", "ObjectId": "o7"}
    assert repo.list_for_configuration(Geography.EMEA, config) == []
    now = utcnow()
    table.upsert_entity({**legacy, "CreatedAt": now - timedelta(days=30), "LastUsedAt": now - timedelta(days=3)})
    mapping = repo.get(Geography.EMEA, config, "Practitioner/7")
    assert mapping is not None and mapping.object_id == "o7"
    assert mapping.created_at.date() == (now - timedelta(days=30)).date()  # the dates move with the row
    [listed] = repo.list_for_configuration(Geography.EMEA, config)
    assert listed.key == row and listed.upn is None
    assert not list(table.query_entities("PartitionKey eq 'emea' and RowKey eq @r", parameters={"r": row}))
    assert repo.get(Geography.EMEA, config, "Practitioner/7") is not None  # and is still found there


def test_removal_by_key_is_confined_to_its_configuration(repo: UserMapRepository, unique: str) -> None:
    config, other = f"cfg-{unique}", f"other-{unique}"
    repo.put(Geography.EMEA, config, "Practitioner/1", tenant_id="t", object_id="o1")
    key = repo.row_key(config, "Practitioner/1")
    for wrong in (key, "not-a-key", "0" * 64):
        with pytest.raises(NotFound):
            repo.delete_key(Geography.EMEA, other if wrong == key else config, wrong)
    assert repo.get(Geography.EMEA, config, "Practitioner/1") is not None
    repo.delete_key(Geography.EMEA, config, key)
    assert repo.get(Geography.EMEA, config, "Practitioner/1") is None


def test_last_use_moves_at_most_once_a_day(repo: UserMapRepository, unique: str) -> None:
    config = f"cfg-{unique}"
    mapping = repo.put(Geography.EMEA, config, "Practitioner/1", tenant_id="t", object_id="o1")
    assert repo.touch(Geography.EMEA, config, "Practitioner/1", mapping) is mapping  # used today: no write
    stale = replace(mapping, last_used_at=mapping.last_used_at - timedelta(days=2))
    touched = repo.touch(Geography.EMEA, config, "Practitioner/1", stale)
    assert touched.last_used_at > stale.last_used_at
    stored = repo.get(Geography.EMEA, config, "Practitioner/1")
    assert stored is not None and stored.created_at == mapping.created_at
    repo.delete(Geography.EMEA, config, "Practitioner/1")
    assert repo.touch(Geography.EMEA, config, "Practitioner/1", stale) is stale  # removed meanwhile: no row comes back
    assert repo.get(Geography.EMEA, config, "Practitioner/1") is None
