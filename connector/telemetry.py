"""OpenTelemetry export to Application Insights, configured once per process, lazily.

Importing this module does no I/O: it only registers ``TelemetryExtension`` with the Python
worker (an ``AppExtensionBase``, whose hook runs before every invocation of any trigger). The
first invocation calls ``configure_telemetry()``, which calls ``configure_azure_monitor`` only
when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, so tests and local runs stay quiet.

In Azure, Application Insights has local (key) authentication turned off; the exporter then
authenticates with the app's managed identity named by ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
(``Authorization=AAD;ClientId=...``, set by infra/app/api.bicep). The worker itself only propagates
the host's trace context (``PYTHON_ENABLE_OPENTELEMETRY``); it is not asked to configure a second
exporter. Telemetry never breaks a request: a failure to configure is logged once and ignored.

Sampling (``TELEMETRY_SAMPLING_RATIO``, default 0.1): a fixed share of traces is kept, chosen by trace id
with Application Insights' own sampler, so a kept request keeps all its dependencies and logs and the
portal scales its counts back up. At 50,000 visits a day and ~80 spans a visit, every trace would be ~4 GB
a day of ingestion; 10 % keeps thousands of whole launches a day for diagnosis. Without it the distro
would rate-limit to 5 traces a second, dropping more at the morning peak and less at night. Live Metrics
stays on (it costs a ping every few seconds when no one watches). ``benchmarks/telemetry.py`` measures
what export costs per launch.

Logs and traces carry no EHR identifiers and no user names (see "Logs" in the README). The HTTP
client libraries log every request's URL (httpx at INFO: ``.../Appointment/e-appt-002``,
``SetExternalConnectionStatus?ConferenceID=...&ExternalID=...``; urllib3, under msal and the
storage SDK, at DEBUG; azure-core's ``http_logging_policy`` at INFO), and OpenTelemetry's HTTP
instrumentations put the URL on every dependency span. ``protect_logs()`` runs at import, before any
function does: it raises those loggers to WARNING (a level set on the library's own logger, so it
holds whatever level and handlers the Functions worker gives the root logger), and it redacts paths
and query strings from whatever those libraries still log, through the process's log-record factory
(which every record passes, whichever handler the host adds). Dependency spans keep the scheme and
host of their URL, nothing else (``RedactedUrlSpans``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import azure.functions as func

logger = logging.getLogger(__name__)

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
SAMPLING_SETTING = "TELEMETRY_SAMPLING_RATIO"
# Storage calls are traced once, by azure-core (``azure_sdk``); the requests / urllib3 / urllib instrumentations
# would trace each of them again underneath (only msal's rare token calls are theirs alone).
INSTRUMENTATIONS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {name: MappingProxyType({"enabled": False}) for name in ("requests", "urllib", "urllib3")}
)
DEFAULT_SAMPLING_RATIO = 0.1

_lock = threading.Lock()
_state: str | None = None  # None until the first call, then "configured", "disabled" or "failed"

# Libraries that log request URLs, and their child loggers. Records below WARNING are dropped; the rest
# lose their URLs' paths and queries.
HTTP_CLIENT_LOGGERS = (
    "httpx",
    "httpcore",
    "urllib3",
    "requests",
    "msal",
    "azure.core.pipeline.policies.http_logging_policy",
    "kiota_http",
    "kiota_abstractions",
    "msgraph",
    "msgraph_core",
)
_ABSOLUTE_URL = re.compile(r"\b(https?://[^/\s'\"?#]+)[^\s'\"]*", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w:/.~-])/[^\s'\"]+")  # "/Appointment/e-appt-002?x=1", not "HTTP/1.1"
_QUERY = re.compile(r"\?[^\s'\"]+")
REDACTED = "/[redacted]"


def redact_urls(text: str) -> str:
    """``text`` with every URL cut to its scheme and host, and every bare path or query string removed."""
    text = _ABSOLUTE_URL.sub(lambda m: m.group(1) + REDACTED, text)
    text = _PATH.sub(REDACTED, text)
    return _QUERY.sub("?[redacted]", text)


def _is_http_client(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in HTTP_CLIENT_LOGGERS)


def _redacting_factory(previous: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _is_http_client(record.name):
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is logging's to report, without its args
                message = str(record.msg)
            record.msg, record.args = redact_urls(message), ()
            if record.exc_info or record.exc_text:
                record.exc_info, record.exc_text = None, None  # exception messages of these libraries name URLs
        return record

    factory.redacts_urls = True  # type: ignore[attr-defined]
    return factory


def protect_logs() -> None:
    """Silence the HTTP client libraries' request logging and redact what they still log (idempotent)."""
    for name in HTTP_CLIENT_LOGGERS:
        library = logging.getLogger(name)
        if library.level < logging.WARNING:
            library.setLevel(logging.WARNING)
    with _lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, "redacts_urls", False):
            logging.setLogRecordFactory(_redacting_factory(current))


_URL_ATTRIBUTES = ("url.full", "http.url", "url.path", "url.query", "http.target")


def redacted_url_spans() -> Any:
    """A span processor that cuts the URL attributes of HTTP dependency spans to scheme and host."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RedactedUrlSpans(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            attributes = getattr(span, "attributes", None) or {}
            for key in _URL_ATTRIBUTES:
                value = attributes.get(key)
                if isinstance(value, str):
                    span.set_attribute(key, redact_urls(value) if "://" in value else "[redacted]")

    return RedactedUrlSpans()


def configure_telemetry(
    environ: Mapping[str, str] | None = None,
    configure: Callable[..., None] | None = None,
) -> bool:
    """Turn on export to Application Insights once; True when export is on.

    ``configure`` defaults to ``azure.monitor.opentelemetry.configure_azure_monitor`` (imported
    only when needed: it is heavy and starts exporter threads).
    """
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _configure(os.environ if environ is None else environ, configure)
    return _state == "configured"


def _configure(environ: Mapping[str, str], configure: Callable[..., None] | None) -> str:
    connection_string = (environ.get(CONNECTION_STRING_SETTING) or "").strip()
    if not connection_string:
        return "disabled"
    try:
        if configure is None:
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure = configure_azure_monitor
        configure(
            connection_string=connection_string,
            sampling_ratio=sampling_ratio(environ),
            span_processors=[redacted_url_spans()],
            instrumentation_options=INSTRUMENTATIONS,
        )
    except Exception as exc:  # noqa: BLE001 - telemetry must never break an invocation
        # The type only: the message could carry the connection string.
        logger.warning("Telemetry export is off: configuring Azure Monitor failed (%s)", type(exc).__name__)
        return "failed"
    return "configured"


def sampling_ratio(environ: Mapping[str, str]) -> float:
    """The share of traces kept, 0 to 1 (``Settings.telemetry_sampling_ratio`` reports a bad value at start)."""
    try:
        ratio = float(environ.get(SAMPLING_SETTING) or DEFAULT_SAMPLING_RATIO)
    except ValueError:
        return DEFAULT_SAMPLING_RATIO
    return ratio if 0.0 <= ratio <= 1.0 else DEFAULT_SAMPLING_RATIO


def reset_telemetry_state() -> None:
    """Forget the outcome of the first configuration (tests only)."""
    global _state
    with _lock:
        _state = None


protect_logs()  # at import: before the first invocation logs anything


class TelemetryExtension(func.AppExtensionBase):
    """Worker extension: configures telemetry before the first invocation of any function."""

    @classmethod
    def pre_invocation_app_level(
        cls,
        logger: logging.Logger,
        context: func.Context,
        func_args: dict[str, object] | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        configure_telemetry()
