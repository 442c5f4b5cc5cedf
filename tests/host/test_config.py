"""Settings, host.json and keys, read as the host reads them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from sandbox.host.config import HostConfigurationError, HostJson, apply_settings, parse_timespan, resolve
from sandbox.host.keys import HostKeys
from sandbox.host.routing import RouteTemplate

GUID = "6f1c1d52-7c9b-4b0e-9a51-0f8a2f4f8f10"


def test_local_settings_never_override_a_non_empty_environment_variable() -> None:
    environ = {"KEEP": "from-env", "EMPTY": ""}
    skipped = apply_settings({"KEEP": "from-file", "EMPTY": "filled", "NEW": "new"}, environ)
    assert environ == {"KEEP": "from-env", "EMPTY": "filled", "NEW": "new"}
    assert skipped == ["KEEP"]


def test_setting_references_resolve_or_fail_clearly() -> None:
    assert resolve("%QUEUE%", {"QUEUE": "writeback-events"}) == "writeback-events"
    with pytest.raises(HostConfigurationError, match="QUEUE"):
        resolve("%QUEUE%", {})


def test_host_json_defaults_and_timespans() -> None:
    defaults = HostJson.from_json({"version": "2.0"})
    assert defaults.route_prefix == "api"
    assert defaults.queues.max_dequeue_count == 5
    assert defaults.queues.batch_size == 16
    assert defaults.queues.new_batch_threshold == 8
    assert defaults.queues.visibility_timeout == timedelta(0)
    assert defaults.queues.max_polling_interval == timedelta(minutes=1)
    assert defaults.queues.message_encoding == "base64"
    assert parse_timespan("00:00:00.500") == timedelta(milliseconds=500)
    assert parse_timespan("1.02:03:04") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    repo = HostJson.load(Path(__file__).resolve().parents[2] / "host.json")
    assert repo.queues.max_dequeue_count == 5
    assert HostJson.from_json({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}}).route_prefix == ""
    with pytest.raises(HostConfigurationError):
        HostJson.from_json({"version": "2.0", "extensions": {"queues": {"messageEncoding": "utf8"}}})


def test_keys_file_is_created_once_with_random_keys(tmp_path: Path) -> None:
    path = tmp_path / ".sandbox" / "host-keys.json"
    first = HostKeys.load_or_create(path)
    again = HostKeys.load_or_create(path)
    assert first == again
    assert first.master_key != first.default_function_key
    assert len(first.master_key) >= 40
    assert path.stat().st_mode & 0o077 == 0
    assert json.loads(path.read_text())["functionKeys"]["default"] == first.default_function_key
    assert first.authorizes("FUNCTION", "f", first.default_function_key)
    assert not first.authorizes("ADMIN", "f", first.default_function_key)
    assert first.authorizes("ADMIN", "f", first.master_key)
    assert not first.authorizes("FUNCTION", "f", None)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("users/{id:guid}", f"/users/{GUID}", {"id": GUID}),
        ("users/{id:guid}", "/users/nope", None),
        ("page/{n:int:min(1)}", "/page/0", None),
        ("page/{n:int:min(1)}", "/page/3", {"n": "3"}),
        ("report.{format}", "/report.csv", {"format": "csv"}),
        ("a/{b=dflt}", "/a", {"b": "dflt"}),
        ("", "/", {}),
        ("x/{y}", "/x/", None),
    ],
)
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert RouteTemplate(template).match(path) == expected


def test_invalid_route_templates_are_refused() -> None:
    for template in ("a/{*rest}/b", "{x}/{x}", "a/{id:nonsense}", "a/{b"):
        with pytest.raises(HostConfigurationError):
            RouteTemplate(template)
