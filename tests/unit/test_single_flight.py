"""SingleFlight: callers that need the same missing value while it loads share one load (and its failure)."""

from __future__ import annotations

import threading

import pytest

from shared.kernel.single_flight import SingleFlight
from tests.support.stampede import GatedLoad, stampede


def test_callers_asking_for_one_key_meanwhile_share_one_load() -> None:
    flight: SingleFlight[str, object] = SingleFlight()
    load = GatedLoad(result=object())
    outcomes = stampede(12, lambda: flight.run("k", load), load.gate)
    assert load.calls == 1
    assert all(outcome is load.result for outcome in outcomes)


def test_a_failed_load_fails_every_caller_that_waited_for_it_and_the_next_caller_loads_again() -> None:
    flight: SingleFlight[str, object] = SingleFlight()
    failing = GatedLoad(error=TimeoutError("the EHR did not answer"))
    outcomes = stampede(6, lambda: flight.run("k", failing), failing.gate)
    assert failing.calls == 1
    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
    assert flight.run("k", lambda: "later") == "later"  # nothing of the failure is kept


def test_a_flight_keeps_nothing_once_it_has_landed() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = iter(range(10))
    assert flight.run("k", lambda: next(calls)) == 0
    assert flight.run("k", lambda: next(calls)) == 1  # caching is the caller's: its load looks there first


def test_different_keys_load_independently() -> None:
    flight: SingleFlight[str, str] = SingleFlight()
    first = threading.Event()

    def slow() -> str:
        assert first.wait(timeout=10)
        return "a"

    thread = threading.Thread(target=lambda: flight.run("a", slow))
    thread.start()
    try:
        assert flight.run("b", lambda: "b") == "b"  # not held up by the load of "a"
    finally:
        first.set()
        thread.join(timeout=10)


def test_an_interrupted_load_does_not_leave_its_key_stuck() -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    def interrupted() -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        flight.run("k", interrupted)
    assert flight.run("k", lambda: "again") == "again"
