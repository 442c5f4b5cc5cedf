"""Many threads asking for one thing at once: how a cache entry's expiry meets the invocations in flight."""

from __future__ import annotations

import inspect
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from shared.kernel.single_flight import SingleFlight

T = TypeVar("T")


def stampede(count: int, call: Callable[[], T], gate: threading.Event) -> list[T | BaseException]:
    """``count`` threads make ``call`` at once; ``gate`` opens once all of them are in the load's flight (the load
    waits on it)."""
    entered = threading.Semaphore(0)
    outcomes: list[T | BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        entered.release()
        try:
            outcome: T | BaseException = call()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertions
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        assert entered.acquire(timeout=5)
    _until_all_in_flight(threads)  # each of them past its own cache check: leading the load, or waiting for it
    gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(outcomes) == count
    return outcomes


class GatedLoad:
    """A load that counts its calls and does not finish before ``gate`` opens."""

    def __init__(self, result: object = "value", error: Exception | None = None) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.result = result
        self.error = error

    def __call__(self) -> object:
        self.calls += 1
        assert self.gate.wait(timeout=10)
        if self.error is not None:
            raise self.error
        return self.result


def _until_all_in_flight(threads: list[threading.Thread], timeout: float = 10.0) -> None:
    """Wait until each thread is in ``SingleFlight.run`` past joining its flight: leading the load (held at the
    gate, so the flight stays open) or about to wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        frames = sys._current_frames()
        if all(_in_flight(frames.get(thread.ident or -1)) for thread in threads):
            return
        assert time.monotonic() < deadline, "not every thread reached the flight"
        time.sleep(0.01)


def _joined_line() -> int:
    """The first line of ``SingleFlight.run`` a thread reaches only once it leads or has joined a flight."""
    lines, first = inspect.getsourcelines(SingleFlight.run)
    return first + next(n for n, line in enumerate(lines) if "if not leading:" in line)


JOINED_LINE = _joined_line()


def _in_flight(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code is SingleFlight.run.__code__:
            return frame.f_lineno >= JOINED_LINE
        frame = frame.f_back
    return False
