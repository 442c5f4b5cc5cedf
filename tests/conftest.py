"""Shared fixtures: a real Azurite (started here unless scripts/test already did) and settings."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from connector.services import reset as reset_services
from sandbox import azurite
from sandbox.local_settings import local_values
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Settings
from shared.storage.accounts import Storage
from tests.support.browser import chromium, chromium_missing, is_browser_test_file


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without Chromium, a run that selects browser tests stops at once with one line, not N failures later.

    Under xdist the workers collect and the controller decides (``pytest_xdist_node_collection_finished``) from
    node ids alone, so every test that drives Chromium must sit where ``is_browser_test_file`` looks.
    """
    browser_tests = [item for item in items if "browser" in getattr(item, "fixturenames", ())]
    misplaced = [item.nodeid for item in browser_tests if not is_browser_test_file(item.nodeid)]
    if misplaced:
        raise pytest.UsageError(f"tests driving Chromium belong in tests/browser/ or a *_browser.py file: {misplaced}")
    missing = chromium_missing()
    if browser_tests and missing and not hasattr(config, "workerinput"):
        pytest.exit(missing, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    missing = chromium_missing()
    if missing and any(is_browser_test_file(nodeid) for nodeid in ids):
        pytest.exit(missing, returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def azurite_port_base() -> Iterator[int]:
    """Port base of a running Azurite with the geography accounts."""
    configured = os.environ.get("TEST_AZURITE_PORT_BASE")
    if configured and azurite.is_listening(int(configured) + 2):
        yield int(configured)
        return
    process = _start_private_azurite()
    base = process.port_base  # type: ignore[attr-defined]
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def _start_private_azurite() -> subprocess.Popen[bytes]:
    """Start Azurite on free ports, retrying: parallel sessions may race for the same range."""
    last: Exception | None = None
    for _ in range(5):
        base = azurite.free_port_base()
        try:
            process = azurite.start(base)
        except RuntimeError as exc:
            last = exc
            continue
        process.port_base = base  # type: ignore[attr-defined]
        return process
    raise RuntimeError(f"could not start a private Azurite: {last}")


@pytest.fixture(scope="session")
def base_env(azurite_port_base: int) -> dict[str, str]:
    """A complete, valid settings environment pointing at the test Azurite."""
    return local_values(azurite_port_base)


@pytest.fixture
def env(base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``base_env`` installed into os.environ for code that reads settings lazily."""
    for key, value in base_env.items():
        monkeypatch.setenv(key, value)
    reset_services()
    yield base_env
    reset_services()


@pytest.fixture
def settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env(base_env)


@pytest.fixture
def storage(settings: Settings) -> Storage:
    return Storage(settings)


@pytest.fixture
def sealer(settings: Settings) -> Sealer:
    """The deployment's sealer, as the composition root builds it."""
    return Sealer.from_text(settings.sealing_keys.reveal())


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests never see each other's rows."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module that asks for it."""
    with chromium() as running:
        yield running
