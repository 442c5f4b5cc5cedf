"""The launch sandbox each browser module runs against, and a fresh browser profile per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext

from tests.support.launch_world import LaunchWorld, launch_world

TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LaunchWorld]:
    """One sandbox (host, stand-ins, configurations) per test module; a module may define its own ``world``."""
    folder = Path(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    with launch_world(azurite_port_base, folder) as running:
        yield running


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # A fresh profile per test, with third-party cookies blocked as in Epic's embedded browsers.
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()
