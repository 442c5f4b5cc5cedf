"""The ledger's decisions about an event row it finds already present (pure: no storage)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.writeback.ledger import (
    CLAIMED,
    DONE,
    FAILED,
    RELEASED,
    RETRY_SPAN,
    Decision,
    LedgerEntry,
    decide,
    is_pending,
)

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def entry(state: str, claimed_ago: timedelta) -> LedgerEntry:
    return LedgerEntry("visit", "event", state, NOW - claimed_ago, 1, NOW + timedelta(hours=24))


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=59), timedelta(hours=30)])
def test_done_is_final_however_old_the_claim(ago: timedelta) -> None:
    assert decide(entry(DONE, ago), now=NOW, lease=LEASE) is Decision.DONE


@pytest.mark.parametrize("ago", [timedelta(0), timedelta(seconds=1), timedelta(seconds=59, microseconds=999_999)])
def test_a_claim_within_its_lease_is_held(ago: timedelta) -> None:
    assert decide(entry(CLAIMED, ago), now=NOW, lease=LEASE) is Decision.HELD


@pytest.mark.parametrize("ago", [timedelta(seconds=60), timedelta(minutes=10), timedelta(days=2)])
def test_a_claim_past_its_lease_is_taken_over(ago: timedelta) -> None:
    assert decide(entry(CLAIMED, ago), now=NOW, lease=LEASE) is Decision.TAKE_OVER


def test_a_claim_from_a_clock_ahead_of_ours_is_held() -> None:
    """Another instance's clock runs a little fast: its claim looks as if from the future; it is live."""
    assert decide(entry(CLAIMED, timedelta(seconds=-5)), now=NOW, lease=LEASE) is Decision.HELD


@pytest.mark.parametrize("ago", [timedelta(seconds=-5), timedelta(0), timedelta(seconds=30), timedelta(hours=30)])
def test_a_released_or_failed_row_is_claimable_at_once(ago: timedelta) -> None:
    """Released after a retryable failure (its retry takes it over) or failed (a replay may): no lease to wait."""
    assert decide(entry(RELEASED, ago), now=NOW, lease=LEASE) is Decision.TAKE_OVER
    assert decide(entry(FAILED, ago), now=NOW, lease=LEASE) is Decision.TAKE_OVER


@pytest.mark.parametrize(("state", "pending"), [(CLAIMED, True), (RELEASED, True), (DONE, False), (FAILED, False)])
def test_claimed_and_released_rows_are_pending_done_and_failed_are_not(state: str, pending: bool) -> None:
    """Pending keeps the visit's launch context: a released event still waits for its retry; failed is final."""
    assert is_pending(entry(state, timedelta(0)), now=NOW) is pending
    assert is_pending(entry(state, RETRY_SPAN - timedelta(seconds=1)), now=NOW) is pending


@pytest.mark.parametrize("state", [CLAIMED, RELEASED])
def test_a_row_its_queue_has_given_up_on_is_no_longer_pending(state: str) -> None:
    """Poisoned after its retries (or its worker died and nothing took it over): the context need not wait 24 h."""
    assert not is_pending(entry(state, RETRY_SPAN), now=NOW)
    assert not is_pending(entry(state, timedelta(hours=3)), now=NOW)
