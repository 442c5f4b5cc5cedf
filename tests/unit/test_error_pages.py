"""Which page an error ends a request with: its own, else its blueprint's words for its class."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

from connector.launch import LAUNCH_PAGES, launch_page
from connector.web import PAGES, ErrorPages, api, page
from shared.kernel.errors import (
    ConnectorError,
    ErrorPage,
    NotFound,
    StateError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from shared.launch.service import EhrSignInRejected, TenantConfigNotFound
from shared.microsoft.teams import AccessPolicyMissing

CORRELATION = "c0ffee00-pages"


def request() -> func.HttpRequest:
    return func.HttpRequest("GET", "http://localhost/api/x", headers={"x-correlation-id": CORRELATION}, body=b"")


def failing(exc: Exception) -> func.HttpResponse:
    raise exc


def test_the_most_specific_class_explains_an_error_and_an_own_page_beats_them_all() -> None:
    pages = ErrorPages(
        "error.html",
        {
            ConnectorError: lambda exc: ErrorPage("general", exc.message),
            NotFound: lambda exc: ErrorPage("not found", exc.message),
        },
    )
    assert pages.page_for(NotFound("gone")) == ErrorPage("not found", "gone")
    assert pages.page_for(StateError("used")) == ErrorPage("general", "used")
    assert pages.page_for(TenantConfigNotFound()).title == "Tenant config not found"


def test_every_book_explains_every_connector_error() -> None:
    with pytest.raises(ValueError, match="every ConnectorError"):
        ErrorPages("error.html", {NotFound: lambda exc: ErrorPage("not found", exc.message)})


def test_the_launch_tells_an_ehr_refusal_from_another_systems() -> None:
    ehr = LAUNCH_PAGES.page_for(EhrSignInRejected("unauthorized_client"))
    assert ehr.title == "EHR sign-in failed" and "unauthorized_client" in ehr.message and ehr.help
    graph = LAUNCH_PAGES.page_for(UpstreamRejected("no", system="Microsoft Graph", code="graph_not_found"))
    assert graph.title == "Microsoft Graph returned an error"
    down = LAUNCH_PAGES.page_for(UpstreamUnavailable("The EHR could not be reached.", system="EHR"))
    assert down.title == "EHR is unreachable" and down.message == "The EHR could not be reached."


def test_the_same_error_speaks_to_its_audience() -> None:
    used = StateError("This sign-in link was already used. Please start again.")
    assert PAGES.page_for(used) == ErrorPage("Bad request", used.message)
    assert LAUNCH_PAGES.page_for(used).title == "Please launch again from Epic"


def test_an_error_with_its_own_page_shows_it_with_its_code_block() -> None:
    own = LAUNCH_PAGES.page_for(AccessPolicyMissing())
    assert own.title == "Teams meeting could not be created"
    assert own.code_block is not None and "Grant-CsApplicationAccessPolicy" in own.code_block


@pytest.mark.parametrize("wrap", [page, launch_page], ids=["page", "launch_page"])
def test_an_unexpected_error_shows_the_same_terse_page_everywhere(wrap: Callable[[Any], Any]) -> None:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret-value-xyz")

    response = wrap(handler)(request())
    body = response.get_body().decode()
    assert response.status_code == 500 and "Something went wrong" in body
    assert "secret-value-xyz" not in body and "Traceback" not in body and "RuntimeError" not in body
    assert f"correlation id <code>{CORRELATION}</code>" in body
    assert response.headers["x-correlation-id"] == CORRELATION


def test_a_problem_takes_its_title_and_detail_from_the_same_pages() -> None:
    response = api(lambda req: failing(NotFound("There is no such configuration.")))(request())
    assert json.loads(response.get_body()) == {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "code": "not_found",
        "detail": "There is no such configuration.",
        "correlationId": CORRELATION,
    }
