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
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func

logger = logging.getLogger(__name__)

CONNECTION_STRING_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"

_lock = threading.Lock()
_state: str | None = None  # None until the first call, then "configured", "disabled" or "failed"


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
        configure(connection_string=connection_string)
    except Exception as exc:  # noqa: BLE001 - telemetry must never break an invocation
        # The type only: the message could carry the connection string.
        logger.warning("Telemetry export is off: configuring Azure Monitor failed (%s)", type(exc).__name__)
        return "failed"
    return "configured"


def reset_telemetry_state() -> None:
    """Forget the outcome of the first configuration (tests only)."""
    global _state
    with _lock:
        _state = None


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
