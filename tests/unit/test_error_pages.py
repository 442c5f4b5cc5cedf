"""Which page an error ends a request with: its own, else its blueprint's words for its class."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import azure.functions as func
import pytest

import connector.launch as launch_routes
from connector.launch import (
    LAUNCH_PAGES,
    PATIENT_CALL_CLINIC,
    PATIENT_LAUNCH_PAGES,
    PATIENT_VISIT_PAGES,
    launch_page,
)
from connector.web import PAGES, Audiences, ErrorPages, api, page
from shared.kernel.errors import (
    Audience,
    ConnectorError,
    ErrorPage,
    NotFound,
    StateError,
    UpstreamRejected,
    UpstreamUnavailable,
    speaking_to,
)
from shared.launch.service import EhrSignInRejected, TenantConfigNotFound
from shared.microsoft.teams import AccessPolicyMissing
from tests.support.audience import PATIENT_CASES, technical_words, visible_text

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


def test_the_access_policy_page_names_the_real_app_and_organizer_in_a_copyable_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("connector.launch._connector_app_id", lambda: "11111111-2222-4333-8444-555555555555")
    shown = LAUNCH_PAGES.page_for(AccessPolicyMissing("b0000000-0000-4000-8000-000000000001"))
    assert shown.title == "Teams meeting could not be created"
    assert shown.code_block == (
        "Connect-MicrosoftTeams\n"
        'New-CsApplicationAccessPolicy -Identity "Teams-EHR-Connector" -AppIds "11111111-2222-4333-8444-555555555555" '
        '-Description "Teams EHR connector: visit meetings on behalf of clinicians"\n'
        'Grant-CsApplicationAccessPolicy -PolicyName "Teams-EHR-Connector" '
        '-Identity "b0000000-0000-4000-8000-000000000001"'
    )
    prose = " ".join((shown.title, shown.message, *shown.help))
    assert "<" not in prose and "New-Cs" not in prose  # the commands are in the block only, no placeholders


def test_an_access_policy_page_without_a_known_value_leaves_its_command_out_rather_than_a_placeholder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("connector.launch._connector_app_id", lambda: None)
    shown = LAUNCH_PAGES.page_for(AccessPolicyMissing())
    assert shown.code_block == "Connect-MicrosoftTeams"


@pytest.mark.parametrize(
    ("error", "words"), PATIENT_CASES, ids=lambda v: type(v).__name__ if not isinstance(v, str) else ""
)
def test_a_patient_gets_plain_words_and_never_an_errors_own_page(error: ConnectorError, words: str) -> None:
    shown = PATIENT_VISIT_PAGES.page_for(error)
    text = " ".join((shown.title, shown.message, *shown.help))
    assert words.lower() in text.lower()
    assert shown.code_block is None and not technical_words(text), text
    launch = PATIENT_LAUNCH_PAGES.page_for(error)
    assert not technical_words(" ".join((launch.title, launch.message, *launch.help)))
    assert not launch.retry  # a used launch link cannot be reloaded; a visit page can
    assert shown.retry == error.retryable


def test_the_callback_speaks_to_the_audience_its_launch_state_names() -> None:
    books = Audiences({Audience.PATIENT: PATIENT_LAUNCH_PAGES, Audience.CLINICIAN: LAUNCH_PAGES})
    for_patient, for_clinician, unknown = TenantConfigNotFound(), TenantConfigNotFound(), StateError("used")
    for_patient.audience, for_clinician.audience = Audience.PATIENT, Audience.CLINICIAN
    assert books.book_for(for_patient).page_for(for_patient) == PATIENT_CALL_CLINIC
    assert books.book_for(for_clinician).page_for(for_clinician).title == "Tenant config not found"
    assert books.book_for(unknown) is PATIENT_LAUNCH_PAGES  # nobody could tell: words a patient may read


def test_speaking_to_marks_errors_once_the_innermost_knows_best() -> None:
    with pytest.raises(NotFound) as caught, speaking_to(Audience.PATIENT), speaking_to(Audience.CLINICIAN):
        raise NotFound("x")
    assert caught.value.audience is Audience.CLINICIAN


@pytest.mark.parametrize("route", ["patient_launch_page", "callback_page", "visit_page_errors"])
def test_an_unexpected_error_on_a_patients_route_is_told_in_a_patients_words(route: str) -> None:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret-value-xyz")

    response = getattr(launch_routes, route)(handler)(request())
    body = response.get_body().decode()
    assert response.status_code == 500 and "Please call your clinic" in body
    assert not technical_words(visible_text(body)) and "secret-value-xyz" not in body


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
