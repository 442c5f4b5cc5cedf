"""What the Functions host indexes: names, routes, methods, auth levels, bindings."""

from __future__ import annotations

import functools
import inspect
import json
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest

# Routes that must be callable without a function key (browsers, EHRs, Graph, probes).
ANONYMOUS_ROUTES = {"health"}


@functools.cache
def functions() -> list[dict[str, Any]]:
    # get_functions() may be called once per app object: the host indexes once.
    import function_app

    found = []
    for fn in function_app.app.get_functions():
        found.append(
            {
                "name": fn.get_function_name(),
                "bindings": json.loads(fn.get_function_json())["bindings"],
                "function": fn.get_user_function(),
            }
        )
    return found


def http_triggers() -> list[dict[str, Any]]:
    return [b for f in functions() for b in f["bindings"] if b["type"] == "httpTrigger"]


def test_importing_function_app_needs_no_settings_and_does_no_io() -> None:
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k):\n    raise AssertionError('network I/O at import')\n"
        "socket.socket.connect = refuse\n"
        "import function_app\n"
        "assert function_app.app.get_functions()\n"
        "print('ok')\n"
    )
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_function_names_are_unique() -> None:
    names = [f["name"] for f in functions()]
    assert len(names) == len(set(names))


def test_routes_and_methods_are_unique() -> None:
    pairs = [(t["route"], method) for t in http_triggers() for method in t["methods"]]
    assert len(pairs) == len(set(pairs))
    assert all(t.get("methods") for t in http_triggers()), "every HTTP function names its methods"


def test_only_intended_routes_are_anonymous() -> None:
    anonymous = {t["route"] for t in http_triggers() if t["authLevel"] == "ANONYMOUS"}
    public_prefixes = ("launch", "visits", "graph/", "portal", ".well-known")
    assert anonymous <= ANONYMOUS_ROUTES | {r for r in anonymous if r.startswith(public_prefixes)}
    assert "health" in anonymous
    levels = {t["route"]: t["authLevel"] for t in http_triggers()}
    assert levels["ready"] == "FUNCTION"
    assert "ADMIN" not in levels.values()


def test_queue_names_come_from_settings() -> None:
    queue_bindings = [b for f in functions() for b in f["bindings"] if b["type"] in ("queueTrigger", "queue")]
    for binding in queue_bindings:
        assert binding["queueName"].startswith("%") and binding["queueName"].endswith("%"), binding
        assert binding["connection"] == "AzureWebJobsStorage"


def test_timer_schedules_are_six_field_ncrontab() -> None:
    timers = [b for f in functions() for b in f["bindings"] if b["type"] == "timerTrigger"]
    assert timers
    assert all(len(t["schedule"].split()) == 6 for t in timers)


def test_only_connector_imports_azure_functions() -> None:
    pattern = re.compile(r"^\s*(import azure\.functions|from azure\.functions|from azure import functions)", re.M)
    offenders = [
        str(path)
        for folder in ("shared", "sandbox", "benchmarks")
        for path in pathlib.Path(folder).rglob("*.py")
        if folder != "sandbox" or "host" not in path.parts  # the local Functions host must import it
        if pattern.search(path.read_text())
    ]
    assert offenders == []


def test_every_function_is_a_plain_def_the_worker_runs_on_its_threads() -> None:
    coroutines = [f["name"] for f in functions() if inspect.iscoroutinefunction(f["function"])]
    assert functions() and coroutines == []


def test_the_edge_refuses_an_async_handler() -> None:
    from connector.web import api, page

    async def handler(req: Any) -> Any:
        return None

    for edge in (api, page):
        with pytest.raises(TypeError, match="plain def"):
            edge(handler)
