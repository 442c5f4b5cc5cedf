"""Many threads asking for one thing at once: how a cache entry's expiry meets the invocations in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def stampede(count: int, call: Callable[[], T], gate: threading.Event) -> list[T | BaseException]:
    """``count`` threads make ``call`` at once; ``gate`` opens once all of them have made it (the load waits on it)."""
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
    time.sleep(0.3)  # each of them past its own cache check and into the flight
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
