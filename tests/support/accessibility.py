"""axe-core over a page in the test browser: every page a person sees must pass its WCAG 2.0–2.2 A/AA rules.

axe-core's script comes with ``axe-playwright-python`` (a dev dependency, no download at run time); it is
evaluated through Playwright's DevTools channel, so the pages' Content-Security-Policy stays as served.
"""

from __future__ import annotations

from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
_axe = Axe()


def violations(page: Page) -> list[dict[str, Any]]:
    results = _axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}, "resultTypes": ["violations"]})
    found: list[dict[str, Any]] = results.response["violations"]
    return found


def assert_accessible(page: Page) -> None:
    found = violations(page)
    summary = [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}" for v in found]
    assert not found, f"axe-core violations on {page.url}: {summary}"
