"""Sealed launch states on Azurite: nothing is written to start a launch; one conditional create consumes it once.

The EHR launch's state carries its payload sealed in itself (``StateRouter.seal``); consuming it creates the row
``AuthStates/<kind>/<SHA-256 of the state>`` in the tag's geography, and only the first create succeeds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from benchmarks.table_operations import TableOperations
from shared.kernel.errors import StateError
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography
from shared.launch.service import CONFIRM_STATE_KIND, LAUNCH_STATE_KINDS, STATE_KIND
from shared.microsoft.entra import STATE_KIND as PORTAL_SIGNIN_KIND
from shared.storage.accounts import Storage, StorageAccount
from shared.storage.state import TABLE, StateRouter
from shared.storage.sweep import sweep_expired

pytestmark = pytest.mark.azurite

LAUNCH = {"c": "config-1", "v": "verifier-" + "x" * 40, "n": "nonce-1", "s": "7780001"}


@pytest.fixture
def router(storage: Storage, sealer: Sealer) -> StateRouter:
    return StateRouter(storage, sealer, in_geography=LAUNCH_STATE_KINDS)


def rows_keyed(storage: Storage, row_key: str) -> dict[str, list[dict[str, object]]]:
    """The state rows with ``row_key`` in each account (other tests write state rows in parallel: only ours count)."""
    accounts: dict[str, StorageAccount] = {
        "app": storage.app,
        **{g.value: storage.for_geography(g) for g in storage.geographies},
    }
    query = f"PartitionKey eq '{STATE_KIND}' and RowKey eq '{row_key}'"
    return {name: [dict(e) for e in account.table(TABLE).query_entities(query)] for name, account in accounts.items()}


def refused(router: StateRouter, state: str, kind: str = STATE_KIND) -> str:
    with pytest.raises(StateError) as caught:
        router.consume_sealed(kind, state)
    return caught.value.code


def test_sealing_writes_nothing_and_consuming_writes_one_row_without_the_payload(
    router: StateRouter, storage: Storage
) -> None:
    with TableOperations().installed() as ops:  # this process's Table calls: other test workers' do not count
        state = router.seal(STATE_KIND, LAUNCH, geography=Geography.EMEA)
        assert state.startswith("eu.s1.") and "7780001" not in state and "verifier" not in state
        assert not ops.take()  # starting a launch stores nothing
        assert router.consume_sealed(STATE_KIND, state) == LAUNCH
        assert ops.take() == Counter({f"{TABLE}.create_entity": 1})  # one conditional create consumes it
    rows = rows_keyed(storage, hashlib.sha256(state.encode()).hexdigest())
    assert {name for name, found in rows.items() if found} == {"emea"}  # in the tag's geography, nowhere else
    [row] = rows["emea"]
    assert row["Consumed"] is True and "Payload" not in row and "7780001" not in str(row)
    assert refused(router, state) == "state_reused"


def test_only_one_of_many_concurrent_consumers_gets_the_payload(router: StateRouter) -> None:
    state = router.seal(STATE_KIND, LAUNCH, geography=Geography.AMERICAS)
    wins: list[dict[str, object]] = []
    losses: list[str] = []
    start = threading.Barrier(8)

    def consume() -> None:
        start.wait()
        try:
            wins.append(router.consume_sealed(STATE_KIND, state))
        except StateError as exc:
            losses.append(exc.code)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins == [LAUNCH] and losses == ["state_reused"] * 7


def test_a_changed_tag_body_kind_or_key_is_an_unknown_state(router: StateRouter, storage: Storage) -> None:
    state = router.seal(STATE_KIND, LAUNCH, geography=Geography.EMEA)
    tag, _, sealed = state.partition(".")
    assert refused(router, f"am.{sealed}") == "state_unknown"  # sealed for EMEA: does not open as the Americas'
    assert refused(router, sealed) == "state_unknown"  # no tag
    assert refused(router, f"xx.{sealed}") == "state_unknown"
    flipped = sealed[:-5] + ("A" if sealed[-5] != "A" else "B") + sealed[-4:]
    assert refused(router, f"{tag}.{flipped}") == "state_unknown"
    assert refused(router, state, kind=CONFIRM_STATE_KIND) == "state_unknown"  # sealed for another kind
    assert refused(router, f"{tag}.s1.{'a' * 2000}") == "state_unknown"
    other_keys = StateRouter(storage, Sealer.from_text(new_key_text()), in_geography=LAUNCH_STATE_KINDS)
    assert refused(other_keys, state) == "state_unknown"  # a retired key
    assert router.consume_sealed(STATE_KIND, state) == LAUNCH  # none of the refusals used it up


def test_an_expired_sealed_state_is_refused_and_its_row_is_swept(router: StateRouter, storage: Storage) -> None:
    expired = router.seal(STATE_KIND, LAUNCH, geography=Geography.APAC, ttl=timedelta(seconds=-1))
    assert refused(router, expired) == "state_expired"
    short = router.seal(STATE_KIND, LAUNCH, geography=Geography.APAC, ttl=timedelta(milliseconds=1500))
    router.consume_sealed(STATE_KIND, short)
    time.sleep(1.6)
    apac = storage.for_geography(Geography.APAC)
    sweep_expired(apac, TABLE)
    key = hashlib.sha256(short.encode()).hexdigest()
    assert not list(apac.table(TABLE).query_entities("RowKey eq @k", parameters={"k": key}))


def test_only_a_geographys_kinds_are_sealed(router: StateRouter) -> None:
    with pytest.raises(ValueError):
        router.seal(PORTAL_SIGNIN_KIND, LAUNCH, geography=Geography.EMEA)
    assert refused(router, router.seal(STATE_KIND, LAUNCH, geography=Geography.EMEA), kind=PORTAL_SIGNIN_KIND) == (
        "state_unknown"
    )


def test_a_state_too_large_to_come_back_is_refused_before_the_ehr_is_asked(router: StateRouter) -> None:
    """``consume_sealed`` refuses a state longer than ``MAX_SEALED_STATE``: sealing one would send the user through
    the EHR's sign-in only to be told the link is not valid, so it is refused at once, clearly."""
    from shared.kernel.errors import BadRequest
    from shared.storage.state import MAX_SEALED_STATE

    # A long FHIR URL and generous context tokens (Epic's are a few to a few dozen characters) still fit.
    long = {**LAUNCH, "u": "https://ehr.example/" + "p" * 200, "s": "1" * 20, "d": "d" * 40, "g": "g" * 64}
    state = router.seal(STATE_KIND, long, geography=Geography.EMEA)
    assert len(state) <= MAX_SEALED_STATE and router.consume_sealed(STATE_KIND, state)["g"] == "g" * 64
    with pytest.raises(BadRequest) as refused_at_once:  # e.g. a link edited to carry 256-character tokens
        router.seal(STATE_KIND, {**long, "d": "d" * 256, "g": "g" * 256}, geography=Geography.EMEA)
    assert refused_at_once.value.code == "state_too_large"
