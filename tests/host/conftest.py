"""A local host running the sample app against the test Azurite, with quick queue settings.

The host copies its settings into os.environ (as ``func start`` does) until it stops, so it is
module-scoped: other test modules never see those variables.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox.host import LocalHost
from tests.host import sample_app

# Small visibility timeout and polling interval so retries and poisoning take about a second.
HOST_JSON = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:00",
            "maxPollingInterval": "00:00:00.300",
            "batchSize": 4,
            "messageEncoding": "base64",
        },
    },
}


@pytest.fixture(scope="session")
def queue_names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"TEST_WORK_QUEUE": f"work-{suffix}", "TEST_OUTPUT_QUEUE": f"out-{suffix}"}


@pytest.fixture(scope="module")
def host(base_env: dict[str, str], queue_names: dict[str, str]) -> Iterator[LocalHost]:
    settings = {
        **base_env,
        **queue_names,
        "TEST_TIMER_SCHEDULE": "*/2 * * * * *",
        "AzureWebJobs.disabled_hello.Disabled": "true",
    }
    with LocalHost(sample_app.build_app(), settings, host_json=HOST_JSON) as running:
        yield running


@pytest.fixture
def client(host: LocalHost) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.url, follow_redirects=False, timeout=10) as http:
        yield http


def wait_for(condition: Callable[[], Any], timeout: float = 15, interval: float = 0.1) -> Any:
    """Poll until ``condition()`` is truthy; fail with a clear message at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
