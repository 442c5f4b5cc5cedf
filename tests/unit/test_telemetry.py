"""connector.telemetry: Azure Monitor export configured once, lazily, only when configured."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.functions.extension.extension_meta import ExtensionMeta

from connector import telemetry

CONNECTION_STRING = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.error:
            raise self.error


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    telemetry.reset_telemetry_state()
    yield
    telemetry.reset_telemetry_state()


@pytest.fixture
def azure_monitor(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Stands in for configure_azure_monitor (which would start exporter threads)."""
    import azure.monitor.opentelemetry

    recorder = Recorder()
    monkeypatch.setattr(azure.monitor.opentelemetry, "configure_azure_monitor", recorder)
    return recorder


def test_without_a_connection_string_nothing_is_configured(azure_monitor: Recorder) -> None:
    assert telemetry.configure_telemetry({}) is False
    assert telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False
    assert azure_monitor.calls == []


def test_with_a_connection_string_azure_monitor_is_configured_once(azure_monitor: Recorder) -> None:
    environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING}
    assert telemetry.configure_telemetry(environ) is True
    assert telemetry.configure_telemetry(environ) is True
    assert azure_monitor.calls == [{"connection_string": CONNECTION_STRING}]


def test_concurrent_first_invocations_configure_once(azure_monitor: Recorder) -> None:
    environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING}
    threads = [threading.Thread(target=telemetry.configure_telemetry, args=(environ,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(azure_monitor.calls) == 1


def test_a_failure_is_logged_without_the_connection_string_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    failing = Recorder(ValueError(f"bad {CONNECTION_STRING}"))
    environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING}
    with caplog.at_level(logging.WARNING, logger="connector.telemetry"):
        assert telemetry.configure_telemetry(environ, configure=failing) is False
        assert telemetry.configure_telemetry(environ, configure=failing) is False
    assert len(failing.calls) == 1
    assert "ValueError" in caplog.text and CONNECTION_STRING not in caplog.text


def test_the_worker_extension_configures_before_an_invocation(
    azure_monitor: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = ExtensionMeta.get_application_hooks()
    assert hooks is not None
    pre_invocation = [h for h in hooks.pre_invocation_app_level if h.ext_name == "TelemetryExtension"]
    assert len(pre_invocation) == 1
    monkeypatch.setenv("APPLICATIONINSIGHTS_CONNECTION_STRING", CONNECTION_STRING)
    # The worker calls the hook as (logger, context, function arguments) before every invocation.
    pre_invocation[0].ext_impl(logging.getLogger("worker"), object(), {})
    pre_invocation[0].ext_impl(logging.getLogger("worker"), object(), {})
    assert azure_monitor.calls == [{"connection_string": CONNECTION_STRING}]


def test_function_app_registers_the_extension_without_configuring_at_import() -> None:
    code = (
        "import os, sys\n"
        "os.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = 'InstrumentationKey=x'\n"
        "import function_app\n"
        "from azure.functions.extension.extension_meta import ExtensionMeta\n"
        "names = [h.ext_name for h in ExtensionMeta.get_application_hooks().pre_invocation_app_level]\n"
        "assert 'TelemetryExtension' in names, names\n"
        "assert 'azure.monitor.opentelemetry' not in sys.modules, 'configured at import'\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(  # noqa: S603 - the test's own interpreter and code
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
