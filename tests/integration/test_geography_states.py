"""Launch states on Azurite: created in the configuration's geography, consumed from there, never found elsewhere.

A launch's state rows carry its context (sealed), so they live in ``AuthStates`` of the configuration's geography
account; the state's tag names it. These tests look at every account's table directly.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.kernel.errors import StateError
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.launch.service import CONFIRM_STATE_KIND, LAUNCH_STATE_KINDS, SIGNIN_STATE_KIND, STATE_KIND
from shared.microsoft.entra import STATE_KIND as PORTAL_SIGNIN_KIND
from shared.storage.accounts import Storage, StorageAccount
from shared.storage.state import GEOGRAPHY_TAGS, TABLE, StateRouter
from shared.storage.sweep import sweep_expired

pytestmark = pytest.mark.azurite

CONTEXT = {"launch": {"session_id": "7780001", "geography": "emea"}, "context": {"patient": "e-pat-geo"}}


@pytest.fixture
def router(storage: Storage, sealer: Sealer) -> StateRouter:
    return StateRouter(storage, sealer, in_geography=LAUNCH_STATE_KINDS)


def rows(account: StorageAccount, state: str) -> list[dict[str, object]]:
    table = account.table(TABLE)
    return [dict(e) for e in table.query_entities("RowKey eq @state", parameters={"state": state})]


def accounts(storage: Storage) -> dict[str, StorageAccount]:
    return {"app": storage.app, **{g.value: storage.for_geography(g) for g in storage.geographies}}


@pytest.mark.parametrize("kind", sorted(LAUNCH_STATE_KINDS))
def test_a_launch_state_for_emea_lives_in_emea_and_is_consumed_from_there(
    router: StateRouter, storage: Storage, kind: str
) -> None:
    state = router.create(kind, CONTEXT, geography=Geography.EMEA)
    assert state.startswith("eu.")
    where = {name: rows(account, state) for name, account in accounts(storage).items()}
    assert {name for name, found in where.items() if found} == {"emea"}  # nowhere else, not even the app's
    [row] = where["emea"]
    assert row["PartitionKey"] == kind and str(row["Payload"]).startswith("s1.")
    assert "7780001" not in str(row) and "e-pat-geo" not in str(row)

    assert router.consume(kind, state) == CONTEXT
    [consumed] = rows(storage.for_geography(Geography.EMEA), state)
    assert consumed["Consumed"] is True and consumed["Payload"] == ""
    with pytest.raises(StateError) as again:
        router.consume(kind, state)
    assert again.value.code == "state_reused"


def test_a_state_replayed_with_another_tag_is_unknown_and_leaves_the_real_row_alone(
    router: StateRouter, storage: Storage
) -> None:
    state = router.create(STATE_KIND, CONTEXT, geography=Geography.EMEA)
    token = state.removeprefix("eu.")
    for geography in (Geography.AMERICAS, Geography.APAC):
        with pytest.raises(StateError) as refused:
            router.consume(STATE_KIND, f"{GEOGRAPHY_TAGS[geography]}.{token}")
        assert refused.value.code == "state_unknown"
    with pytest.raises(StateError) as untagged:
        router.consume(STATE_KIND, token)
    assert untagged.value.code == "state_unknown"
    [row] = rows(storage.for_geography(Geography.EMEA), state)
    assert row["Consumed"] is False  # the replays consumed nothing: the launch still completes
    assert router.consume(STATE_KIND, state) == CONTEXT
    with pytest.raises(StateError) as after:  # nor does retagging revive a consumed state
        router.consume(STATE_KIND, f"am.{token}")
    assert after.value.code == "state_unknown"


def test_a_row_copied_into_another_geography_under_its_tag_does_not_open(router: StateRouter, storage: Storage) -> None:
    """The sealed payload is bound to the full state, tag included: a row moved between accounts is worthless."""
    state = router.create(SIGNIN_STATE_KIND, CONTEXT, geography=Geography.EMEA)
    moved = f"am.{state.removeprefix('eu.')}"
    [row] = rows(storage.for_geography(Geography.EMEA), state)
    storage.for_geography(Geography.AMERICAS).table(TABLE).create_entity({**row, "RowKey": moved})
    with pytest.raises(StateError) as refused:
        router.consume(SIGNIN_STATE_KIND, moved)
    assert refused.value.code == "state_unknown"


def test_a_given_state_is_kept_where_its_tag_says(router: StateRouter, storage: Storage) -> None:
    """The launch's sign-in and confirmation choose their state first (to seal a payload bound to it)."""
    state = router.new_state(Geography.AMERICAS)
    assert router.create(CONFIRM_STATE_KIND, CONTEXT, state=state, ttl=timedelta(minutes=5)) == state
    assert rows(storage.for_geography(Geography.AMERICAS), state)
    assert not rows(storage.app, state) and not rows(storage.for_geography(Geography.EMEA), state)
    assert router.consume(CONFIRM_STATE_KIND, state) == CONTEXT


def test_the_portals_sign_in_state_stays_untagged_in_the_app_account(router: StateRouter, storage: Storage) -> None:
    state = router.create(PORTAL_SIGNIN_KIND, {"nonce": "n"})
    assert "." not in state
    where = {name: bool(rows(account, state)) for name, account in accounts(storage).items()}
    assert where == {"app": True, **{g.value: False for g in storage.geographies}}
    assert router.consume(PORTAL_SIGNIN_KIND, state) == {"nonce": "n"}


def test_expired_launch_states_are_swept_in_their_geography(router: StateRouter, storage: Storage) -> None:
    expired = router.create(STATE_KIND, {}, geography=Geography.APAC, ttl=timedelta(seconds=-5))
    live = router.create(STATE_KIND, {}, geography=Geography.APAC)
    apac = storage.for_geography(Geography.APAC)
    assert sweep_expired(apac, TABLE).deleted >= 1
    assert not rows(apac, expired) and rows(apac, live)
    with pytest.raises(StateError):
        router.consume(STATE_KIND, expired)
