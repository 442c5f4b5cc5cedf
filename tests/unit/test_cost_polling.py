"""benchmarks.cost's queue receives: the listener's back-off as a Markov chain, against a direct simulation of it."""

from __future__ import annotations

import random

import pytest

from benchmarks.cost import POLL_AFTER_FOUND, POLL_CEILING, polls_per_second, receives_per_event


def simulated_polls_per_second(rate: float, seconds: float = 20_000.0, seed: int = 7) -> float:
    """The listener as ``sandbox/host/queues.py`` runs it, against Poisson arrivals: receives a second."""
    chance = random.Random(seed)
    now, next_arrival, waiting, polls, delay = 0.0, chance.expovariate(rate), 0, 0, POLL_AFTER_FOUND
    while now < seconds:
        while next_arrival <= now:
            waiting += 1
            next_arrival += chance.expovariate(rate)
        polls += 1
        if waiting:
            waiting = 0
            delay = POLL_AFTER_FOUND
            wait = delay
        else:
            delay = min(POLL_CEILING, max(2 * POLL_AFTER_FOUND, 2 * delay))
            wait = delay * chance.uniform(0.8, 1.0)
        now += wait
    return polls / now


@pytest.mark.parametrize("rate", [0.3, 2.0, 6.0, 15.0])
def test_the_chain_matches_the_listener_it_models(rate: float) -> None:
    assert polls_per_second(rate) == pytest.approx(simulated_polls_per_second(rate), rel=0.06)


def test_a_busy_queue_is_received_every_100_ms_and_an_idle_one_every_2_s_or_so() -> None:
    assert polls_per_second(1000.0) == pytest.approx(1 / POLL_AFTER_FOUND, rel=0.01)
    assert polls_per_second(1e-6) == pytest.approx(1 / (POLL_CEILING * 0.9), rel=0.01)


def test_receives_per_event_fall_as_the_day_gets_busier() -> None:
    quiet, busy = receives_per_event(40_000), receives_per_event(400_000)
    assert busy < quiet
    assert 0.5 < busy < 1.0  # 50,000 visits of 8 events: most receives find one message or none
