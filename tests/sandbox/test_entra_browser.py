"""A real browser on the http sign-in page: the form_post answer auto-submits to the app's redirect URI."""

from __future__ import annotations

from collections.abc import Iterator

import msal
import pytest
from playwright.sync_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sandbox.entra import RunningEntra
from sandbox.seed import DIRECTORY
from sandbox.server import ServerThread

APPROVER = DIRECTORY.user_by_upn("analyst@contoso.example")
assert APPROVER


@pytest.fixture
def callback_app() -> Iterator[tuple[ServerThread, list[dict[str, str]]]]:
    """Stands in for the connector's redirect URI: records what the browser posts."""
    received: list[dict[str, str]] = []

    async def callback(request: Request) -> HTMLResponse:
        received.append({k: v for k, v in (await request.form()).items() if isinstance(v, str)})
        return HTMLResponse("<h1>Signed in</h1>")

    with ServerThread(Starlette(routes=[Route("/api/portal/signin/callback", callback, methods=["POST"])])) as server:
        yield server, received


@pytest.mark.browser
def test_chromium_signs_in_through_the_http_page_and_form_post(
    entra: RunningEntra,
    connector: msal.ConfidentialClientApplication,
    callback_app: tuple[ServerThread, list[dict[str, str]]],
    browser: Browser,
) -> None:
    server, received = callback_app
    # The registration says http://localhost:7071/...; Entra ignores the port of loopback redirect URIs.
    redirect_uri = f"http://localhost:{server.port}/api/portal/signin/callback"
    flow = connector.initiate_auth_code_flow(["User.Read"], redirect_uri=redirect_uri, response_mode="form_post")
    page = browser.new_page()
    try:
        page.goto(flow["auth_uri"])
        assert page.title().startswith("Pick an account")
        page.get_by_role("button", name=APPROVER.name).click()
        page.get_by_role("heading", name="Signed in").wait_for(timeout=10_000)
    finally:
        page.close()
    (posted,) = received
    assert posted["state"] == flow["state"]
    result = connector.acquire_token_by_auth_code_flow(flow, posted)
    assert result["id_token_claims"]["oid"] == APPROVER.object_id
