"""The clock: timezone-aware UTC, read in one place so every timestamp agrees.

Tests that need time to pass (a waiting room giving up after 15 minutes) run the whole process on a
``FakeClock`` with ``use_clock``; production code only ever calls ``utcnow``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


def _system() -> datetime:
    return datetime.now(UTC)


_source: Callable[[], datetime] = _system


def utcnow() -> datetime:
    return _source()


class FakeClock:
    """A clock that stands still until told to move (thread-safe: the local host serves on threads)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or _system()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


@contextmanager
def use_clock(clock: Callable[[], datetime]) -> Iterator[Callable[[], datetime]]:
    """Every ``utcnow`` in this process reads ``clock`` until the block ends."""
    global _source
    previous, _source = _source, clock
    try:
        yield clock
    finally:
        _source = previous
