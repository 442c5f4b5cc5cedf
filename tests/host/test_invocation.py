"""The invoker's one limit on sync invocations (``PYTHON_THREADPOOL_THREAD_COUNT``), whatever their trigger.

HTTP invocations run on the pool's threads, queue and timer invocations on the thread that holds their message
or tick; a slot is taken either way, so no more than the limit run at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sandbox.host.index import IndexedFunction
from sandbox.host.invocation import Invoker
from sandbox.host.storage import QueueClients


def _counting_entry(
    name: str, trigger_type: str, running: list[int], peak: list[int], lock: threading.Lock
) -> IndexedFunction:
    def function(value: object) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return threading.current_thread().name

    return IndexedFunction(name=name, function=function, trigger_type=trigger_type, trigger={"name": "value"})


def test_sync_invocations_of_every_trigger_share_the_limit() -> None:
    running, peak, lock = [0], [0], threading.Lock()
    queued = _counting_entry("work", "queueTrigger", running, peak, lock)
    web = _counting_entry("page", "httpTrigger", running, peak, lock)
    invoker = Invoker(QueueClients({}), "base64", Path("."), max_workers=2)
    invoker.start()
    try:

        async def http_calls() -> list[str]:
            return list(await asyncio.gather(*(invoker.invoke_async(web, None, "http") for _ in range(3))))

        with ThreadPoolExecutor(max_workers=4) as listeners:  # the listener threads holding queue messages
            from_queue = listeners.map(lambda _: str(invoker.invoke(queued, None, "queue")), range(4))
            from_http = asyncio.run(http_calls())
            threads = list(from_queue)
    finally:
        invoker.stop()
    assert peak[0] == 2  # never more than the limit, though seven were waiting
    assert all(name.startswith("functions-worker") for name in from_http)
    assert not any(name.startswith("functions-worker") for name in threads)  # run where the message is held
