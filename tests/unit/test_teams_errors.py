"""Graph adapter pieces that need no server: resource encoding and error classification."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from shared.kernel.clock import utcnow
from shared.kernel.errors import UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.microsoft.teams import _graph_error, _graph_time, _parse_time, call_events_resource

JOIN = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjE3%40thread.v2/0"
    "?context=%7b%22Tid%22%3a%22t1%22%2c%22Oid%22%3a%22o1%22%7d"
)


def test_call_events_resource_encodes_the_join_url_once_more() -> None:
    resource = call_events_resource(JOIN)
    assert resource.startswith("communications/onlineMeetings(joinWebUrl='https%3A%2F%2Fteams.microsoft.com")
    assert "%253a" in resource and "%2540" in resource and "%257b" in resource
    inner = resource.split("'")[1]
    assert unquote(inner) == JOIN


def odata(status: int, code: str, headers: dict[str, Any] | None = None) -> tuple[int, str, httpx.Headers]:
    """What the adapter reads from a Graph error answer: its status, ``error.code`` and headers."""
    return status, code, httpx.Headers(headers or {})


def test_missing_access_policy_tells_the_admin_what_to_run() -> None:
    mapped = _graph_error(*odata(403, "Forbidden"), "create_meeting")
    assert isinstance(mapped, UpstreamRejected) and mapped.code == "graph_access_policy"
    assert "Grant-CsApplicationAccessPolicy" in mapped.message


@pytest.mark.parametrize(
    ("status", "headers", "kind"),
    [
        (429, {"Retry-After": "7"}, UpstreamThrottled),
        (503, {"retry-after": "2"}, UpstreamThrottled),
        (503, {}, UpstreamUnavailable),
        (500, {}, UpstreamUnavailable),
        (401, {}, UpstreamRejected),
        (400, {}, UpstreamRejected),
    ],
)
def test_statuses_map_to_retryable_or_permanent(status: int, headers: dict[str, str], kind: type) -> None:
    mapped = _graph_error(*odata(status, "x", headers), "subscribe")
    assert type(mapped) is kind
    if isinstance(mapped, UpstreamThrottled) and status == 429:
        assert mapped.retry_after == 7.0
    assert mapped.retryable is (kind is not UpstreamRejected)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"RETRY-AFTER": "3"}, 3.0),  # header names in any case
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_graph_retry_after_is_read_by_the_one_parser(headers: dict[str, Any], seconds: float | None) -> None:
    mapped = _graph_error(*odata(429, "TooManyRequests", headers), "create_meeting")
    assert isinstance(mapped, UpstreamThrottled) and mapped.retry_after == seconds


def test_graph_retry_after_as_an_http_date() -> None:
    when = format_datetime(utcnow() + timedelta(seconds=30), usegmt=True)
    mapped = _graph_error(*odata(503, "ServiceUnavailable", {"Retry-After": when}), "subscribe")
    assert isinstance(mapped, UpstreamThrottled) and mapped.retry_after is not None
    assert 25 <= mapped.retry_after <= 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07T17:00:00.1234567Z", datetime(2026, 12, 7, 17, 0, 0, 123456, tzinfo=UTC)),
        ("2026-12-07T17:00:00Z", datetime(2026, 12, 7, 17, tzinfo=UTC)),
        ("2026-12-07T18:00:00+01:00", datetime(2026, 12, 7, 17, tzinfo=UTC)),
        ("2026-12-07T17:00:00", datetime(2026, 12, 7, 17, tzinfo=UTC)),
        ("soon", None),
        (None, None),
    ],
)
def test_graph_times_are_read_with_seven_fractional_digits(text: str | None, expected: datetime | None) -> None:
    assert _parse_time(text) == expected


def test_graph_times_are_written_in_utc() -> None:
    assert _graph_time(datetime(2026, 12, 7, 18, 30, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-07T17:30:00Z"


def test_no_product_module_imports_msgraph_sdk() -> None:
    """Only msgraph-core ships (requirements.txt): msgraph-sdk's generated models are a development dependency."""
    root = Path(__file__).resolve().parents[2]
    files = [root / "function_app.py", *(root / "shared").rglob("*.py"), *(root / "connector").rglob("*.py")]
    importing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "msgraph" or name.startswith("msgraph.") for name in names):
                importing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(files) > 40 and importing == []
    pins = [line.split("#")[0].strip() for line in (root / "requirements.txt").read_text().splitlines()]
    assert "msgraph-core==1.5.2" in pins and not [pin for pin in pins if pin.startswith("msgraph-sdk")]
