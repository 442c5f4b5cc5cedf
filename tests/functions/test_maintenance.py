"""The sweep timer, called as the host calls it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from connector import maintenance
from connector.maintenance import sweep_expired_state
from connector.services import services
from shared.kernel.errors import StorageUnavailable
from shared.kernel.settings import Geography
from shared.launch.service import STATE_KIND
from shared.storage.accounts import StorageAccount
from shared.storage.state import TABLE as AUTH_STATES
from shared.storage.sweep import SweepResult, sweep_expired
from shared.visits.repository import TABLE as VISITS
from shared.writeback.worker import FAILURES_TABLE

pytestmark = pytest.mark.azurite


def test_sweep_removes_expired_state_failures_and_visits_in_every_geography(env: dict[str, str], unique: str) -> None:
    storage = services().storage
    state = services().states.create(f"k{unique}", {}, ttl=timedelta(seconds=-1))
    launch_states = {  # a launch's states live in its configuration's geography
        geography: services().states.create(STATE_KIND, {}, geography=geography, ttl=timedelta(seconds=-1))
        for geography in Geography
    }
    past = datetime.now(UTC) - timedelta(minutes=1)
    for geography in Geography:
        storage.for_geography(geography).table(VISITS).upsert_entity(
            {"PartitionKey": geography.value, "RowKey": unique, "ConfigurationId": "c", "ExpiresAt": past}
        )

    storage.app.table(FAILURES_TABLE).upsert_entity(
        {"PartitionKey": "2026-01-01", "RowKey": unique, "Code": "http_403", "ExpiresAt": past}
    )

    sweep_expired_state(TimerRequest(past_due=False))

    assert not list(storage.app.table("AuthStates").query_entities(f"RowKey eq '{state}'"))
    assert not list(storage.app.table(FAILURES_TABLE).query_entities(f"RowKey eq '{unique}'"))
    for geography in Geography:
        rows = storage.for_geography(geography).table(VISITS).query_entities(f"RowKey eq '{unique}'")
        assert not list(rows), geography
        states = (
            storage.for_geography(geography)
            .table(AUTH_STATES)
            .query_entities("RowKey eq @state", parameters={"state": launch_states[geography]})
        )
        assert not list(states), geography


def test_a_failing_account_does_not_stop_the_sweep_of_the_others(
    env: dict[str, str], unique: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    storage = services().storage
    state = services().states.create(f"k{unique}", {}, ttl=timedelta(seconds=-1))
    past = datetime.now(UTC) - timedelta(minutes=1)
    for geography in Geography:
        storage.for_geography(geography).table(VISITS).upsert_entity(
            {"PartitionKey": geography.value, "RowKey": unique, "ConfigurationId": "c", "ExpiresAt": past}
        )
    broken = storage.for_geography(Geography.AMERICAS).name
    swept: list[tuple[str, str]] = []

    def flaky(account: StorageAccount, table: str) -> SweepResult:
        swept.append((account.name, table))
        if account.name == broken or table == "Sessions":
            raise StorageUnavailable(f"Storage {account.name} is unreachable.")
        return sweep_expired(account, table)

    monkeypatch.setattr(maintenance, "sweep_expired", flaky)
    with caplog.at_level(logging.ERROR, logger="connector.maintenance"):
        sweep_expired_state(TimerRequest(past_due=False))

    every = len(maintenance.APP_SHORT_LIVED_TABLES) + len(Geography) * len(maintenance.GEOGRAPHY_SHORT_LIVED_TABLES)
    assert len(swept) == every  # every target was tried
    assert not list(storage.app.table("AuthStates").query_entities(f"RowKey eq '{state}'"))
    for geography in Geography:
        rows = list(storage.for_geography(geography).table(VISITS).query_entities(f"RowKey eq '{unique}'"))
        assert bool(rows) == (storage.for_geography(geography).name == broken), geography
    assert "Sweeping Sessions" in caplog.text and f"Visits in {broken} failed" in caplog.text
