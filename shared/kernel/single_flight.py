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

    def run(self, key: K, load: Callable[[], V], *, kept: Callable[[], V | None] = lambda: None) -> V:
        """What ``kept()`` finds (the caller's cache, while fresh), else ``load()``; if a load for ``key`` is already
        running, wait for it and share its value, or raise a copy of its exception. ``kept`` is asked again by the
        thread that leads a load: a flight may have filled the cache just before this one began."""
        found = kept()
        if found is not None:
            return found
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            if flight.error is not None:
                raise _own_copy(flight.error)
            return flight.value  # type: ignore[return-value]  # set whenever error is not
        try:
            found = kept()
            flight.value = found if found is not None else load()
            return flight.value
        except BaseException as exc:
            flight.error = _own_copy(exc)  # as it was raised: this thread's handlers may annotate ``exc`` meanwhile
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


def _own_copy(error: BaseException) -> BaseException:
    """The load's exception for one more thread: a copy of its own, since the app annotates an error as it handles
    it (``ConnectorError.speaking_to`` sets the audience of its page) and each waiter speaks to its own reader.
    The copy keeps the class, arguments, attributes, cause, context and the load's traceback (traceback objects
    are never changed by raising again). Exceptions that are not ``Exception``s (an interrupt) and those that
    cannot be copied so are shared as they are."""
    if not isinstance(error, Exception):
        return error
    try:
        copy = type(error).__new__(type(error), *error.args)
        copy.__dict__.update(error.__dict__)
    except Exception:  # noqa: BLE001 - e.g. a class whose __new__ wants other arguments
        return error
    if "__notes__" in error.__dict__:
        copy.__notes__ = list(error.__notes__)
    copy.__cause__ = error.__cause__
    copy.__context__ = error.__context__  # e.g. the transport error an upstream failure was raised from None over
    copy.__suppress_context__ = error.__suppress_context__
    return copy.with_traceback(error.__traceback__)
