"""The sweep timer, called as the host calls it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from connector.maintenance import sweep_expired_state
from shared.auth_state import AuthStateStore
from shared.settings import Geography
from shared.storage import get_storage
from shared.visits import TABLE as VISITS

pytestmark = pytest.mark.azurite


def test_sweep_removes_expired_state_and_visits_in_every_geography(env: dict[str, str], unique: str) -> None:
    storage = get_storage()
    state = AuthStateStore(storage.app).create(f"k{unique}", {}, ttl=timedelta(seconds=-1))
    past = datetime.now(UTC) - timedelta(minutes=1)
    for geography in Geography:
        storage.for_geography(geography).table(VISITS).upsert_entity(
            {"PartitionKey": geography.value, "RowKey": unique, "ConfigurationId": "c", "ExpiresAt": past}
        )

    sweep_expired_state(TimerRequest(past_due=False))

    assert not list(storage.app.table("AuthStates").query_entities(f"RowKey eq '{state}'"))
    for geography in Geography:
        rows = storage.for_geography(geography).table(VISITS).query_entities(f"RowKey eq '{unique}'")
        assert not list(rows), geography
