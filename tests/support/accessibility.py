"""axe-core over a page in the test browser: every page a person sees must pass its WCAG 2.0–2.2 A/AA rules;
``assert_checked`` adds reflow (WCAG 1.4.10): no sideways scrolling at 320/390 px or at 200 % zoom.

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


def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no horizontal scroll)."""
    overflow: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"
    )
    return overflow


def assert_checked(page: Page) -> None:
    """axe-core finds nothing, and the page reflows at 390 px and at 200 % zoom without scrolling sideways.

    The page is resized in place (a page that answered a POST cannot be reloaded). Browser zoom at 200 % of a
    1280 px window lays the page out in 640 CSS px, media queries included; CSS zoom 2 on the 1280 px page keeps
    the wide layout and doubles it, the harder case for tables.
    """
    assert_accessible(page)
    size = page.viewport_size or {"width": 1280, "height": 720}
    try:
        for width in (390, 640, 320):
            page.set_viewport_size({"width": width, "height": 800})
            assert sideways_overflow(page) <= 0, f"{page.url} scrolls sideways at {width} px"
        page.set_viewport_size({"width": 1280, "height": 800})
        page.evaluate("() => { document.documentElement.style.zoom = '2'; }")
        assert sideways_overflow(page) <= 0, f"{page.url} scrolls sideways at CSS zoom 200 % of 1280 px"
    finally:
        page.evaluate("() => { document.documentElement.style.zoom = ''; }")
        page.set_viewport_size(size)
