"""The one log line of a failed request names the failing system and how it failed, never a value."""

from __future__ import annotations

import logging

import azure.functions as func
import pytest

from connector.web import api
from shared.kernel.errors import NotFound, UpstreamUnavailable


def failing(exc: BaseException) -> func.HttpResponse:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        raise exc

    return api(handler)(func.HttpRequest("GET", "http://127.0.0.1/api/x", body=b""))


def test_an_upstream_timeout_logs_its_system_and_the_transport_error_type(caplog: pytest.LogCaptureFixture) -> None:
    class ReadTimeout(Exception):
        pass

    try:
        try:
            raise ReadTimeout("http://secret.example/?code=abc")
        except ReadTimeout:
            raise UpstreamUnavailable("The EHR did not answer in time.", system="EHR") from None
    except UpstreamUnavailable as exc:
        error = exc
    with caplog.at_level(logging.WARNING, logger="connector.web"):
        response = failing(error)
    assert response.status_code == 503
    [line] = [r.getMessage() for r in caplog.records if r.name == "connector.web"]
    assert line.startswith("UpstreamUnavailable upstream_unavailable from EHR after ReadTimeout (correlation ")
    assert "secret" not in line and "code=abc" not in line


def test_other_errors_keep_their_short_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="connector.web"):
        failing(NotFound("gone", code="visit_gone"))
    [line] = [r.getMessage() for r in caplog.records if r.name == "connector.web"]
    assert line.startswith("NotFound visit_gone (correlation ")
