"""An asyncio event loop on a daemon thread, so synchronous code can use an async-only client.

msgraph-core's Graph client (httpx with Graph's middleware) is async, while the connector's
functions are synchronous: the Functions worker runs them on its own thread pool. The Graph
adapter submits its coroutines here and waits for their results, so no caller ever sees a
coroutine. One loop serves every thread of the process (its httpx connections are pooled on
it); a thread waiting for a result releases the GIL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Started on first use: importing the adapter starts no thread."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coroutine: Coroutine[Any, Any, T], *, timeout: float) -> T:
        """The coroutine's result; ``TimeoutError`` once ``timeout`` seconds pass, the coroutine then cancelled."""
        loop = self._running()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a coroutine on the background loop cannot wait for that same loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop
