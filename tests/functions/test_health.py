"""Health and readiness, called as the host calls them."""

from __future__ import annotations

import json

import azure.functions as func
import pytest

from connector.health import health, ready
from connector.services import reset as reset_services
from sandbox import azurite


def get(route: str) -> func.HttpRequest:
    return func.HttpRequest("GET", f"http://localhost/api/{route}", body=b"")


def test_health_answers_without_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    response = health(get("health"))
    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"status": "ok"}
    assert response.headers["x-correlation-id"]


@pytest.mark.azurite
def test_ready_checks_every_geography(env: dict[str, str]) -> None:
    response = ready(get("ready"))
    body = json.loads(response.get_body())
    assert response.status_code == 200, body
    assert body["checks"] == {"app": "ok", "americas": "ok", "emea": "ok", "apac": "ok"}


@pytest.mark.azurite
def test_ready_names_the_failing_geography(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMEA", azurite.connection_string("emea", port_base=9))
    reset_services()
    response = ready(get("ready"))
    body = json.loads(response.get_body())
    assert response.status_code == 503
    assert body["failing"] == ["emea"]
    assert body["checks"]["americas"] == "ok"


def test_missing_settings_give_one_clear_503_with_correlation_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for key in ("AzureWebJobsStorage", "PUBLIC_BASE_URL", "SIGNING_KEYS"):
        monkeypatch.delenv(key, raising=False)
    reset_services()
    headers = {"x-correlation-id": "abc12345-test"}
    request = func.HttpRequest("GET", "http://localhost/api/ready", body=b"", headers=headers)
    response = ready(request)
    body = json.loads(response.get_body())
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert body["correlationId"] == "abc12345-test"
    assert body["code"] == "configuration_error"
    assert "Traceback" not in response.get_body().decode()
    reset_services()
