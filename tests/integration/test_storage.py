"""Storage on a real Azurite: geography isolation, etags, single-use state, expiry, sweep."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError

from sandbox import azurite
from shared.http.outbound import storage_transport as shared_transport
from shared.kernel.errors import BadRequest, StateError, StorageUnavailable
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography, Secret, Settings, StorageConnection
from shared.launch.user_map import TABLE as USER_MAP_TABLE
from shared.launch.user_map import UserMapRepository
from shared.storage.accounts import Storage, StorageAccount
from shared.storage.state import AuthStateStore
from shared.storage.sweep import sweep_expired

pytestmark = pytest.mark.azurite


def test_mapping_written_for_emea_is_invisible_in_americas(storage: Storage, settings: Settings, unique: str) -> None:
    repo = UserMapRepository(
        storage, settings.connector_secret.reveal(), Sealer.from_text(settings.sealing_keys.reveal())
    )
    repo.put(Geography.EMEA, f"cfg-{unique}", "Practitioner/123", tenant_id="t1", object_id="o1")

    found = repo.get(Geography.EMEA, f"cfg-{unique}", "Practitioner/123")
    assert found is not None and (found.tenant_id, found.object_id) == ("t1", "o1")
    assert repo.get(Geography.AMERICAS, f"cfg-{unique}", "Practitioner/123") is None
    assert repo.get(Geography.APAC, f"cfg-{unique}", "Practitioner/123") is None
    # The row lives only in the EMEA account, and its key reveals no EHR identifier.
    rows = list(storage.for_geography(Geography.EMEA).table(USER_MAP_TABLE).list_entities())
    assert all("Practitioner" not in row["RowKey"] for row in rows)
    americas_rows = storage.for_geography(Geography.AMERICAS).table(USER_MAP_TABLE).list_entities()
    assert all(row["RowKey"] != repo.row_key(f"cfg-{unique}", "Practitioner/123") for row in americas_rows)


def test_mapping_key_depends_on_configuration(storage: Storage, settings: Settings, unique: str) -> None:
    repo = UserMapRepository(
        storage, settings.connector_secret.reveal(), Sealer.from_text(settings.sealing_keys.reveal())
    )
    repo.put(Geography.AMERICAS, f"a-{unique}", "Practitioner/1", tenant_id="t", object_id="o")
    assert repo.get(Geography.AMERICAS, f"b-{unique}", "Practitioner/1") is None


def test_unconfigured_geography_is_an_error(base_env: dict[str, str]) -> None:
    env = {k: v for k, v in base_env.items() if k != "STORAGE_APAC"}
    storage = Storage(Settings.from_env(env))
    with pytest.raises(BadRequest, match="apac"):
        storage.for_geography(Geography.APAC)


def test_stale_etag_update_is_rejected(storage: Storage, unique: str) -> None:
    table = storage.app.table("EtagProbe")
    table.create_entity({"PartitionKey": unique, "RowKey": "r", "Value": 1})
    first = table.get_entity(unique, "r")
    second = table.get_entity(unique, "r")
    first["Value"] = 2
    table.update_entity(first, etag=first.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    second["Value"] = 3
    with pytest.raises(ResourceModifiedError):
        table.update_entity(second, etag=second.metadata["etag"], match_condition=MatchConditions.IfNotModified)
    assert table.get_entity(unique, "r")["Value"] == 2


def test_state_is_consumed_exactly_once(storage: Storage, sealer: Sealer) -> None:
    store = AuthStateStore(storage.app, sealer)
    state = store.create("test", {"verifier": "v"})
    assert len(state) >= 22  # >= 128 bits of URL-safe base64
    assert store.consume("test", state) == {"verifier": "v"}
    with pytest.raises(StateError) as caught:
        store.consume("test", state)
    assert caught.value.code == "state_reused"


def test_concurrent_consumers_exactly_one_wins(storage: Storage, sealer: Sealer) -> None:
    store = AuthStateStore(storage.app, sealer)

    def consume(state: str, barrier: threading.Barrier, wins: list[object], losses: list[str]) -> None:
        barrier.wait()
        try:
            wins.append(store.consume("race", state))
        except StateError as exc:
            losses.append(exc.code)

    for _ in range(5):
        state = store.create("race", {"n": 1})
        barrier = threading.Barrier(8)
        wins: list[object] = []
        losses: list[str] = []
        threads = [threading.Thread(target=consume, args=(state, barrier, wins, losses)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(wins) == 1
        assert losses == ["state_reused"] * 7


def test_expired_state_is_rejected(storage: Storage, sealer: Sealer) -> None:
    store = AuthStateStore(storage.app, sealer)
    state = store.create("test", {"x": 1}, ttl=timedelta(seconds=-1))
    with pytest.raises(StateError) as caught:
        store.consume("test", state)
    assert caught.value.code == "state_expired"


@pytest.mark.parametrize("forged", ["", "short", "a/b" * 10, "x" * 500, "../../etc/passwd-aaaaaaaaaaa"])
def test_forged_or_malformed_state_is_unknown(storage: Storage, forged: str, sealer: Sealer) -> None:
    with pytest.raises(StateError) as caught:
        AuthStateStore(storage.app, sealer).consume("test", forged)
    assert caught.value.code == "state_unknown"


def test_sweep_deletes_only_expired_rows(storage: Storage, unique: str, sealer: Sealer) -> None:
    store = AuthStateStore(storage.app, sealer)
    kind = f"sweep{unique}"
    expired = store.create(kind, {}, ttl=timedelta(seconds=-5))
    live = store.create(kind, {}, ttl=timedelta(minutes=5))
    result = sweep_expired(storage.app, "AuthStates")
    assert result.deleted >= 1
    keys = {row["RowKey"] for row in storage.app.table("AuthStates").query_entities(f"PartitionKey eq '{kind}'")}
    assert live in keys and expired not in keys


def test_unreachable_storage_is_storage_unavailable() -> None:
    dead = StorageConnection(
        setting="STORAGE_DEAD",
        connection_string=Secret(azurite.connection_string("americas", port_base=9)),
    )
    with pytest.raises(StorageUnavailable, match="STORAGE_DEAD"):
        StorageAccount(dead).check()


def test_every_account_shares_one_transport_that_reads_no_proxy_from_the_environment(
    storage: Storage, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One storage transport per process, and no per-call environment scan: a proxy setting is never used."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: using it would fail the call
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport = shared_transport()
    assert transport.session is not None and transport.session.trust_env is False
    accounts = [storage.app, *(storage.for_geography(g) for g in storage.geographies)]
    for account in accounts:
        table = account.table("TransportCheck")
        table.upsert_entity({"PartitionKey": unique, "RowKey": "r", "V": 1})
        assert table.get_entity(unique, "r")["V"] == 1
        pipeline_transport = table._client._client._pipeline._transport  # the SDK wraps the service's transport
        assert getattr(pipeline_transport, "_transport", pipeline_transport) is transport
    assert shared_transport() is transport
