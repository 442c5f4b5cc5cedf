"""The Graph adapter's event loop: sync callers get results, never coroutines; late work is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.kernel.errors import UpstreamUnavailable
from shared.microsoft.background_loop import BackgroundLoop
from shared.microsoft.teams import TeamsClient, graph_deadline
from tests.support.outbound import LOCAL_POLICY


def test_starts_on_first_use_and_serves_every_thread_on_one_loop() -> None:
    loop = BackgroundLoop("test-loop")
    assert "test-loop" not in {t.name for t in threading.enumerate()}

    async def where() -> tuple[str, int]:
        return threading.current_thread().name, id(asyncio.get_running_loop())

    results: list[tuple[str, int]] = []
    callers = [threading.Thread(target=lambda: results.append(loop.run(where(), timeout=5))) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert results[0][0] == "test-loop"


def test_a_late_coroutine_is_cancelled_and_the_caller_gets_timeout() -> None:
    loop = BackgroundLoop("test-loop-timeout")
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        loop.run(slow(), timeout=0.2)
    assert time.monotonic() - started < 2
    assert cancelled.wait(2)


def test_a_coroutine_on_the_loop_cannot_wait_for_the_loop_itself() -> None:
    loop = BackgroundLoop("test-loop-self")

    async def inner() -> int:
        return 1

    async def outer() -> int:
        return loop.run(inner(), timeout=1)

    with pytest.raises(RuntimeError):
        loop.run(outer(), timeout=5)


class SlowCredential:
    """Kiota awaits the credential before each request: a token that takes long stands in for a slow Graph."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = threading.Event()

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        self.calls += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def test_graph_requests_inside_a_deadline_give_up_at_it() -> None:
    credential = SlowCredential()
    client = TeamsClient("http://127.0.0.1:9", credential, policy=LOCAL_POLICY)
    started = time.monotonic()
    with graph_deadline(0.3), pytest.raises(UpstreamUnavailable, match="did not answer in time"):
        client.renew_subscription("s1", datetime(2030, 1, 1, tzinfo=UTC))
    assert 0.25 < time.monotonic() - started < 3
    assert credential.cancelled.wait(2)
    with graph_deadline(0.0), pytest.raises(UpstreamUnavailable):
        client.delete_subscription("s1")
    assert credential.calls == 1  # past the deadline, nothing is sent
