"""Headless Debian Chromium for browser tests (never a downloaded browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"  # scripts/chromium reads the same variable
# Without the background-networking flags Chromium keeps reaching for Google's hosts, which this
# closed network refuses many times over.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_missing() -> str | None:
    """One line saying what to do when Debian's chromium is not there (as scripts/chromium says it), else None."""
    if os.access(CHROMIUM_PATH, os.X_OK):
        return None
    return (
        f"Chromium: the browser tests need Debian's chromium at {CHROMIUM_PATH}; "
        "install it with 'sudo apt-get install chromium' (scripts/test does so when run as root)."
    )


def is_browser_test_file(nodeid: str) -> bool:
    """Tests that drive Chromium live in tests/browser/ or in a ``*_browser.py`` file (conftest enforces it)."""
    path = nodeid.split("::", 1)[0]
    return path.startswith("tests/browser/") or path.endswith("_browser.py")


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM_PATH, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
