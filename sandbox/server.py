"""Run an ASGI app with uvicorn on 127.0.0.1, in a background thread (tests) or in the foreground."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from sandbox.ports import free_ports


def free_port() -> int:
    """A free port outside the ephemeral range (see ``sandbox.ports``)."""
    return free_ports(1)


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
        self._server = uvicorn.Server(config)
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
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
