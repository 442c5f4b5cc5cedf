"""One load at a time per key: callers that need the same missing value while it is being loaded wait for that load.

A cache entry (a Backend Services token, a SMART configuration, a key set, a configuration) expires for every
thread of the worker at the same moment; without this, each of the invocations in flight then (24 writebacks, or a
burst of launches) would fetch it again at once: two dozen token requests to the EHR where one does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Flight(Generic[V]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}

    def run(self, key: K, load: Callable[[], V]) -> V:
        """``load()``, unless a load for ``key`` is already running: then wait for it and share its value, or raise
        its exception. ``load`` should look in its cache first, as a caller may arrive just after a flight ended."""
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.value  # type: ignore[return-value]  # set whenever error is not
        try:
            flight.value = load()
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
