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


class Refused(Exception):
    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code
        self.audience: str | None = None


def test_each_waiter_gets_its_own_copy_of_the_failure_as_the_load_raised_it() -> None:
    """The app annotates an error as it handles it (whose page it is): one reader's annotation must not reach
    another's, nor the load's own thread's reach a waiter's."""
    flight: SingleFlight[str, object] = SingleFlight()
    failing = GatedLoad(error=Refused("the EHR refused", code="invalid_client"))
    seen: list[Refused] = []

    def ask() -> object:
        try:
            return flight.run("k", failing)
        except Refused as exc:
            seen.append(exc)
            assert exc.audience is None  # nobody else's annotation
            exc.audience = "patient"
            raise

    outcomes = stampede(6, ask, failing.gate)
    assert all(isinstance(outcome, Refused) for outcome in outcomes)
    assert len({id(exc) for exc in seen}) == 6
    assert {(str(exc), exc.code) for exc in seen} == {("the EHR refused", "invalid_client")}
    assert all(exc.__traceback__ is not None for exc in seen)


def test_a_waiters_copy_keeps_what_the_failure_was_raised_over() -> None:
    """Upstream failures are raised ``from None`` over the transport's error, which the log line still names."""
    flight: SingleFlight[str, object] = SingleFlight()
    gate = threading.Event()

    def load() -> object:
        assert gate.wait(timeout=10)
        try:
            raise TimeoutError("read timed out")
        except TimeoutError:
            raise Refused("the EHR did not answer", code="upstream_unavailable") from None

    outcomes = stampede(4, lambda: flight.run("k", load), gate)
    assert all(isinstance(outcome, Refused) for outcome in outcomes)
    for outcome in outcomes:
        assert isinstance(outcome, Refused)
        assert isinstance(outcome.__context__, TimeoutError)
        assert outcome.__suppress_context__ and outcome.__cause__ is None
