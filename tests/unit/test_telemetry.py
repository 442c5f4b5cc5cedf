"""connector.telemetry: Azure Monitor export configured once, lazily, only when configured."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

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


def configured(ratio: float) -> dict[str, object]:
    return {
        "connection_string": CONNECTION_STRING,
        "sampling_ratio": ratio,
        "span_processors": ANY,
        "instrumentation_options": telemetry.INSTRUMENTATIONS,
    }


def test_without_a_connection_string_nothing_is_configured(azure_monitor: Recorder) -> None:
    assert telemetry.configure_telemetry({}) is False
    assert telemetry.configure_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "  "}) is False
    assert azure_monitor.calls == []


def test_with_a_connection_string_azure_monitor_is_configured_once(azure_monitor: Recorder) -> None:
    environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING}
    assert telemetry.configure_telemetry(environ) is True
    assert telemetry.configure_telemetry(environ) is True
    assert azure_monitor.calls == [configured(0.1)]


@pytest.mark.parametrize(("text", "ratio"), [("0.25", 0.25), ("1", 1.0), ("0", 0.0), ("", 0.1), ("2", 0.1), ("x", 0.1)])
def test_the_sampling_ratio_is_the_setting_or_one_trace_in_ten(
    azure_monitor: Recorder, text: str, ratio: float
) -> None:
    environ = {"APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING, "TELEMETRY_SAMPLING_RATIO": text}
    assert telemetry.configure_telemetry(environ) is True
    assert azure_monitor.calls == [configured(ratio)]


def test_the_configured_ratio_reaches_the_real_distro_as_its_application_insights_sampler() -> None:
    """Run in a child process: the distro installs global providers and starts exporter threads."""
    code = (
        "import json, sys\n"
        "from connector import telemetry\n"
        "environ = {'APPLICATIONINSIGHTS_CONNECTION_STRING': 'InstrumentationKey=00000000-0000-4000-8000-000000000000;"
        "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/', 'TELEMETRY_SAMPLING_RATIO': '0.25'}\n"
        "assert telemetry.configure_telemetry(environ)\n"
        "from opentelemetry import trace\n"
        "from opentelemetry.instrumentation.requests import RequestsInstrumentor\n"
        "from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor\n"
        "sampler = trace.get_tracer_provider().sampler\n"
        "doubled = [RequestsInstrumentor().is_instrumented_by_opentelemetry,"
        " URLLib3Instrumentor().is_instrumented_by_opentelemetry]\n"
        "print(json.dumps([type(sampler).__name__, sampler._ratio, doubled]))\n"
    )
    root = Path(__file__).resolve().parents[2]
    environ = {"PATH": "/usr/bin:/bin", "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}
    result = subprocess.run(  # noqa: S603 - the test's own interpreter and code
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=False, env=environ
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # Storage calls traced once (azure-core), not again by requests / urllib3 underneath.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["ApplicationInsightsSampler", 0.25, [False, False]]


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
    assert azure_monitor.calls == [configured(0.1)]


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


# --- logs and traces carry no URLs of the HTTP client libraries -------------------------------------


class Records(logging.Handler):
    """A handler added to the root logger after the app's import, as the Functions worker adds its own."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.name, self.format(record)))


@pytest.fixture
def root_at_debug() -> Iterator[Records]:
    root, records = logging.getLogger(), Records()
    level = root.level
    root.setLevel(logging.DEBUG)  # what PYTHON_ENABLE_DEBUG_LOGGING does to the worker's root logger
    root.addHandler(records)
    yield records
    root.removeHandler(records)
    root.setLevel(level)


def test_http_client_request_logging_is_off_even_with_the_root_logger_at_debug(root_at_debug: Records) -> None:
    import function_app  # noqa: F401 - what the worker imports first

    url = "http://ehr.example/api/FHIR/R4/Appointment/e-appt-002"
    logging.getLogger("httpx").info('HTTP Request: GET %s "HTTP/1.1 200 OK"', url)
    logging.getLogger("httpcore.http11").debug("send_request_headers.started request=%s", url)
    logging.getLogger("urllib3.connectionpool").debug('%s "GET /x?ExternalID=e-pat-patel HTTP/1.1" 200', url)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: %r", url)
    logging.getLogger("msal.token_cache").debug("event=%s", {"username": "dr.smith@contoso.example"})
    assert root_at_debug.messages == []


def test_what_the_http_libraries_still_log_loses_paths_and_queries(root_at_debug: Records) -> None:
    telemetry.protect_logs()
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying (%r) after connection broken by '%r': %s",
        "Retry(total=2)",
        "ReadTimeoutError()",
        "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus?ConferenceID=1000002&ExternalID=e-pat-patel",
    )
    logging.getLogger("httpx.child").error("Failed: https://ehr.example/api/FHIR/R4/Patient/e-pat-patel?x=1")
    (_, retry), (_, failed) = root_at_debug.messages
    assert "1000002" not in retry and "e-pat-patel" not in retry and "Retrying" in retry
    assert failed == "Failed: https://ehr.example/[redacted]"


def test_our_own_loggers_are_left_alone(root_at_debug: Records) -> None:
    telemetry.protect_logs()
    logging.getLogger("shared.writeback.worker").debug("Event %s written", "abc123")
    assert root_at_debug.messages == [("shared.writeback.worker", "Event abc123 written")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET https://h.example:8443/a/b?c=d HTTP/1.1", "GET https://h.example:8443/[redacted] HTTP/1.1"),
        ('"POST /oauth2/token HTTP/1.1" 200', '"POST /[redacted] HTTP/1.1" 200'),
        ("no url here", "no url here"),
        ("query only ?ConferenceID=1", "query only ?[redacted]"),
    ],
)
def test_redact_urls(text: str, expected: str) -> None:
    assert telemetry.redact_urls(text) == expected


def test_dependency_spans_keep_only_scheme_and_host_of_their_url() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(telemetry.redacted_url_spans())
    provider.add_span_processor(SimpleSpanProcessor(exported))
    url = (
        "https://ehr.example/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus?ExternalID=e-pat-patel"
    )
    with provider.get_tracer("test").start_as_current_span("GET", attributes={"url.full": url, "url.query": "a=b"}):
        pass
    (span,) = exported.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["url.full"] == "https://ehr.example/[redacted]"
    assert span.attributes["url.query"] == "[redacted]"
