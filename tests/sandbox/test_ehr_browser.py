"""A real browser presses "Begin virtual visit" in the Hyperspace stand-in and lands on the app's launch URL."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from sandbox.ehr import EhrConfig, EhrSandbox
from sandbox.server import ServerThread, free_port


@pytest.fixture
def app_launch_url() -> Iterator[str]:
    async def launch(request: Request) -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>App</title><h1>Launched</h1>")

    with ServerThread(Starlette(routes=[Route("/launch/provider", launch)])) as server:
        yield server.url + "/launch/provider"


@pytest.mark.browser
def test_begin_virtual_visit_opens_the_launch_url(app_launch_url: str, browser: Browser) -> None:
    port = free_port()
    ehr = EhrSandbox(EhrConfig(base_url=f"http://127.0.0.1:{port}"))
    ehr.add_record(
        name="Teams provider",
        kind="provider",
        launch_url=app_launch_url,
        context_tokens="sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%",
        client_id="app",
    )
    with ServerThread(ehr.app, port=port) as server:
        page = browser.new_page()
        try:
            page.goto(server.url + "/hyperspace/e-prac-smith")
            button = page.get_by_role("button", name="Begin virtual visit with Taylor Chen")
            with page.expect_popup() as popup_info:
                button.click()
            popup = popup_info.value
            popup.wait_for_load_state()
            assert popup.get_by_role("heading", name="Launched").is_visible()
            query = parse_qs(urlsplit(popup.url).query)
        finally:
            page.close()
    assert popup.url.startswith(app_launch_url + "?")
    assert query["sessionId"] == ["1000003"] and query["departmentId"] == ["10501101"]
    assert query["iss"] == [ehr.config.fhir_base]
    launch = ehr.state.launches[query["launch"][0]]
    assert (launch.context.encounter_id, launch.context.user_id, launch.used) == ("e-enc-003", "e-prac-smith", False)
