"""Logout CSRF: a page on another site must not be able to sign a portal user out.

``GET /api/portal/signin`` is a top-level GET any site can make a browser send, and the SameSite=Lax session
cookie goes with it. Before the fix that GET deleted the browser's session; now the old session ends only
when the new sign-in succeeds. Headless Chromium plays the victim's browser; the attacker's page is served
from http://localhost (another site than the connector's http://127.0.0.1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from connector import portal
from connector.services import services
from sandbox.server import ServerThread
from shared.portal.sessions import PortalSession
from tests.security.edge_world import client, new_session, session_cookie, still_signed_in, world  # noqa: F401
from tests.support.launch_world import LaunchWorld

pytestmark = [pytest.mark.browser, pytest.mark.azurite]


def attacker_page(target: str) -> str:
    return f"""<!doctype html><html><body><h1>Cute cats</h1>
<img src="{target}" alt="">
<script>setTimeout(function () {{ window.location.href = "{target}"; }}, 300);</script>
</body></html>"""


@pytest.fixture(scope="module")
def attacker(world: LaunchWorld) -> Iterator[str]:  # noqa: F811
    target = f"{world.host.url}/api/portal/signin"

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(attacker_page(target))

    with ServerThread(Starlette(routes=[Route("/", page)])) as server:
        yield f"http://localhost:{server.port}/"  # another site: localhost is not 127.0.0.1


@pytest.fixture
def victim(world: LaunchWorld, browser: Browser) -> Iterator[tuple[BrowserContext, PortalSession]]:  # noqa: F811
    session = new_session(upn="admin@contoso.example", admin=True)
    context = browser.new_context()
    context.set_default_timeout(20_000)
    context.add_cookies(
        [
            {
                "name": portal.cookie_name(services().settings),
                "value": session.id,
                "url": world.host.url,
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    yield context, session
    context.close()


def test_a_cross_site_get_of_the_sign_in_start_does_not_sign_the_user_out(
    world: LaunchWorld,  # noqa: F811
    attacker: str,
    victim: tuple[BrowserContext, PortalSession],
) -> None:
    context, session = victim
    assert still_signed_in(world, session)
    page = context.new_page()
    with page.expect_response(
        lambda r: r.url.endswith("/api/portal/signin") and r.request.is_navigation_request()
    ) as navigation:
        page.goto(attacker)
    started = navigation.value
    assert started.status == 302  # the sign-in did start, in the victim's browser, with the victim's cookie
    assert session.id in (started.request.all_headers().get("cookie") or "")
    assert still_signed_in(world, session), "a page on another site signed the user out"


def test_starting_a_sign_in_over_http_keeps_the_current_session(world: LaunchWorld) -> None:  # noqa: F811
    session = new_session(upn="admin@contoso.example", admin=True)
    with client(world) as http:
        started = http.get("/api/portal/signin", headers=session_cookie(session))
    assert started.status_code == 302
    assert "portal_session=;" not in " ".join(started.headers.get_list("set-cookie"))
    assert still_signed_in(world, session)
