"""benchmarks.cost's queue receives: the listener's back-off as a Markov chain, against the local host's own
back-off (the Storage Queues extension's) run against Poisson arrivals."""

from __future__ import annotations

import random

import pytest

from benchmarks.cost import POLL_CEILING, polls_per_second, receives_per_event
from sandbox.host.queues import MIN_POLLING, PollingBackoff


def simulated_polls_per_second(rate: float, seconds: float = 20_000.0, seed: int = 7) -> float:
    """``sandbox/host/queues.py``'s listener against Poisson arrivals: receives a second."""
    chance = random.Random(seed)
    backoff = PollingBackoff(POLL_CEILING, random.Random(seed + 1))
    now, next_arrival, polls = 0.0, chance.expovariate(rate), 0
    while now < seconds:
        found = next_arrival <= now
        while next_arrival <= now:
            next_arrival += chance.expovariate(rate)
        polls += 1
        now += backoff.next(found=found)
    return polls / now


@pytest.mark.parametrize("rate", [0.3, 2.0, 6.0, 15.0])
def test_the_chain_matches_the_listener_it_models(rate: float) -> None:
    assert polls_per_second(rate) == pytest.approx(simulated_polls_per_second(rate), rel=0.03)


def test_the_back_off_is_the_extensions() -> None:
    """100 ms after messages; then 100 ms + 0.8-1.2 x 100 ms x 2^(n-1); then maxPollingInterval, kept."""
    backoff = PollingBackoff(2.0, random.Random(3))
    assert backoff.next(found=True) == MIN_POLLING
    empty = [backoff.next(found=False) for _ in range(8)]
    for n, delay in enumerate(empty[:4], start=1):
        assert MIN_POLLING * (1 + 0.8 * 2 ** (n - 1)) <= delay <= MIN_POLLING * (1 + 1.2 * 2 ** (n - 1))
    assert empty[-3:] == [2.0, 2.0, 2.0]
    assert backoff.next(found=True) == MIN_POLLING


def test_a_busy_queue_is_received_every_100_ms_and_an_idle_one_every_2_s() -> None:
    assert polls_per_second(1000.0) == pytest.approx(1 / MIN_POLLING, rel=0.01)
    assert polls_per_second(1e-6) == pytest.approx(1 / POLL_CEILING, rel=0.01)


def test_receives_per_event_fall_as_the_day_gets_busier() -> None:
    quiet, busy = receives_per_event(40_000), receives_per_event(400_000)
    assert busy < quiet
    assert 0.5 < busy < 1.0  # 50,000 visits of 8 events: most receives find one message or none
