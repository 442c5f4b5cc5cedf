"""Run an ASGI app with uvicorn on 127.0.0.1, in a background thread (tests) or in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from sandbox.ports import free_ports


def free_port() -> int:
    """A free port outside the ephemeral range (see ``sandbox.ports``)."""
    return free_ports(1)


class QuietServer(uvicorn.Server):
    """uvicorn's server, looking at its flags once a second instead of ten times, and woken at once by ``stop``.

    uvicorn's main loop sleeps 0.1 s between two looks at ``should_exit``: ~1 ms of CPU per second per idle
    server, which a benchmark measuring a host process's CPU (``benchmarks.launch``) would charge to whatever
    request is in flight. Its other housekeeping (the ``Date`` header) is once a second anyway.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # each look is a second later: on_tick's once-a-second work runs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def request_exit(self) -> None:
        """Stop serving, from any thread: the main loop wakes now rather than at its next look."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already closed
                loop.call_soon_threadsafe(wake.set)


class ServerThread:
    """``with ServerThread(app) as server: server.url`` — a real HTTP(S) server for one test session."""

    def __init__(
        self,
        app: Any,
        *,
        port: int = 0,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.scheme = "https" if ssl_certfile else "http"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            lifespan="auto",
            timeout_keep_alive=30,
            # An idle keep-alive TLS connection (e.g. a requests session inside msal) would hold a graceful
            # shutdown until asyncio's TLS close times out (30 s); give open connections one second.
            timeout_graceful_shutdown=1,
        )
        self._server = QuietServer(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.request_exit()
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
