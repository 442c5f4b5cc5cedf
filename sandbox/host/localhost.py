"""``LocalHost``: the whole local Functions host (HTTP, queues, timers) as one start/stop object."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import azure.functions as func

from sandbox.host.config import HostConfigurationError, HostJson, apply_settings
from sandbox.host.http_server import HttpFrontend
from sandbox.host.index import IndexedFunction, index_functions
from sandbox.host.invocation import Invoker
from sandbox.host.keys import HostKeys
from sandbox.host.queues import QueueListener
from sandbox.host.storage import QueueClients
from sandbox.host.timers import TimerRunner
from sandbox.server import ServerThread

logger = logging.getLogger(__name__)


def _app_directory(app: func.FunctionRegister | ModuleType | str) -> Path:
    """The function app root: where the app module lives (without importing it), else the cwd."""
    if isinstance(app, ModuleType):
        return Path(app.__file__).resolve().parent if app.__file__ else Path.cwd()
    if isinstance(app, str):
        spec = importlib.util.find_spec(app)
        if spec is None or spec.origin is None:
            raise HostConfigurationError(f"app module {app!r} not found")
        return Path(spec.origin).resolve().parent
    return Path.cwd()


def _load_app(app: func.FunctionRegister | ModuleType | str) -> func.FunctionRegister:
    """The FunctionApp, importing the module now (after the settings are in the environment)."""
    module = importlib.import_module(app) if isinstance(app, str) else app
    if isinstance(module, ModuleType):
        found = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
        if len(found) != 1:
            raise HostConfigurationError(f"{module.__name__} must define exactly one FunctionApp (found {len(found)})")
        return found[0]
    if not isinstance(module, func.FunctionRegister):
        raise TypeError(f"not a FunctionApp: {module!r}")
    return module


def is_disabled(function_name: str, environ: Mapping[str, str]) -> bool:
    """``AzureWebJobs.<name>.Disabled`` set to true (or 1) disables a function, as in Azure."""
    value = environ.get(f"AzureWebJobs.{function_name}.Disabled", "")
    return value.strip().lower() in ("true", "1")


class LocalHost:
    """Run a function app's HTTP, queue and timer functions on 127.0.0.1.

    ``settings`` are copied into ``os.environ`` on start like ``func start`` does (a variable
    already set and non-empty wins) and removed again on stop. ``host_json`` is a path or the
    parsed document (default: ``host.json`` beside the app). Keys come from ``keys_path``
    (created with random keys when missing) or are generated in memory.
    """

    def __init__(
        self,
        app: func.FunctionRegister | ModuleType | str,
        settings: Mapping[str, str] | None = None,
        *,
        port: int = 0,
        host_json: Path | Mapping[str, Any] | None = None,
        app_dir: Path | None = None,
        keys_path: Path | None = None,
        display_host: str = "127.0.0.1",
    ) -> None:
        self._app_spec = app
        self.app: func.FunctionRegister | None = None
        self.app_dir = app_dir or _app_directory(app)
        self.settings = dict(settings or {})
        if isinstance(host_json, Mapping):
            self.host_json = HostJson.from_json(host_json)
        else:
            self.host_json = HostJson.load(host_json or self.app_dir / "host.json")
        self.keys = HostKeys.load_or_create(keys_path) if keys_path else HostKeys.generate()
        self.port = port
        self.display_host = display_host
        self.functions: list[IndexedFunction] = []
        self._previous_env: dict[str, str | None] = {}
        self._server: ServerThread | None = None
        self._invoker: Invoker | None = None
        self._listeners: list[QueueListener] = []
        self._timers: list[TimerRunner] = []

    # --- what tests and the demo need -------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the host is not running")
        return self._server.url

    @property
    def function_key(self) -> str:
        return self.keys.default_function_key

    @property
    def master_key(self) -> str:
        return self.keys.master_key

    def function_url(self, entry: IndexedFunction, base: str | None = None) -> str:
        assert entry.route is not None
        prefix = f"/{self.host_json.route_prefix}" if self.host_json.route_prefix else ""
        route = f"/{entry.route.template}" if entry.route.template else ""
        return f"{base or self.url}{prefix}{route}"

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> LocalHost:
        before = dict(os.environ)
        apply_settings(self.settings)
        self._previous_env = {key: before.get(key) for key in os.environ if before.get(key) != os.environ[key]}
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # As the worker does: the settings are in the environment before the app is imported.
        self.app = _load_app(self._app_spec)
        try:
            self.functions = index_functions(self.app, os.environ)
        except ValueError as exc:
            if "unique function name" in str(exc):
                raise HostConfigurationError(
                    f"{exc} (app.get_functions() may be called only once per app object: pass a fresh app)"
                ) from exc
            raise
        disabled = [f.name for f in self.functions if is_disabled(f.name, os.environ)]
        for name in disabled:
            logger.info("Function %s is disabled (AzureWebJobs.%s.Disabled).", name, name)
        self.functions = [f for f in self.functions if f.name not in disabled]
        clients = QueueClients(os.environ)
        threads = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
        max_workers = int(threads) if threads.isdigit() and int(threads) > 0 else None  # the worker's default
        self._invoker = Invoker(clients, self.host_json.queues.message_encoding, self.app_dir, max_workers)
        self._invoker.start()
        frontend = HttpFrontend(self.functions, self.keys, self._invoker, self.host_json.route_prefix)
        self._server = ServerThread(frontend, port=self.port).start()
        self.port = self._server.port
        self._timers = [TimerRunner(f, self._invoker) for f in self.functions if f.trigger_type == "timerTrigger"]
        self._listeners = [
            QueueListener(f, self.host_json.queues, clients, self._invoker)
            for f in self.functions
            if f.trigger_type == "queueTrigger"
        ]
        self._log_functions()
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()

    def _log_functions(self) -> None:
        base = f"http://{self.display_host}:{self.port}"
        lines = ["", "Functions:", ""]
        for entry in self.functions:
            if entry.route is not None:
                methods = ",".join(entry.methods)
                lines.append(f"\t{entry.name}: [{methods}] {self.function_url(entry, base)}")
            else:
                lines.append(f"\t{entry.name}: {entry.trigger_type}")
            lines.append("")
        logger.info("\n".join(lines))

    def stop(self) -> None:
        for timer in self._timers:
            timer.stop()
        for listener in self._listeners:
            listener.stop()
        if self._server is not None:
            self._server.stop()
        if self._invoker is not None:
            self._invoker.stop()
        for key, value in self._previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._timers, self._listeners, self._previous_env = [], [], {}
        self._invoker = None

    def __enter__(self) -> LocalHost:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
