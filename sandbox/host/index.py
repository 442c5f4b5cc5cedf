"""Index a FunctionApp the way the Python worker does: ``app.get_functions()``, once per app object."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from sandbox.host.config import HostConfigurationError, resolve
from sandbox.host.routing import RouteTemplate

ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE")
DEFAULT_CONNECTION = "AzureWebJobsStorage"
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")


@dataclass(frozen=True)
class QueueBinding:
    """A queue trigger or queue output: the resolved queue name and the connection setting's name."""

    name: str  # the parameter name (or "$return")
    queue_name: str
    connection: str


@dataclass
class IndexedFunction:
    name: str
    function: Callable[..., Any]
    trigger_type: str
    trigger: dict[str, Any]
    outputs: list[QueueBinding] = field(default_factory=list)
    wants_context: bool = False
    # httpTrigger
    route: RouteTemplate | None = None
    methods: tuple[str, ...] = ()
    auth_level: str = "FUNCTION"
    # queueTrigger
    queue: QueueBinding | None = None
    # timerTrigger
    schedule: str = ""
    run_on_startup: bool = False
    use_monitor: bool = False

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)


def _queue_binding(binding: Mapping[str, Any], environ: Mapping[str, str]) -> QueueBinding:
    queue_name = resolve(str(binding.get("queueName", "")), environ).strip()
    if not _QUEUE_NAME.match(queue_name):
        raise HostConfigurationError(
            f"queue name {queue_name!r} is invalid: 3-63 lowercase letters, digits and single hyphens, "
            "starting and ending with a letter or digit"
        )
    connection = str(binding.get("connection") or DEFAULT_CONNECTION)
    return QueueBinding(name=str(binding["name"]), queue_name=queue_name, connection=connection)


def index_functions(app: func.FunctionRegister, environ: Mapping[str, str]) -> list[IndexedFunction]:
    """Every function of ``app`` with resolved bindings; unsupported bindings stop the host."""
    indexed = []
    for fn in app.get_functions():
        name = fn.get_function_name() or fn.get_user_function().__name__
        bindings = json.loads(fn.get_function_json())["bindings"]
        user_function = fn.get_user_function()
        triggers = [b for b in bindings if str(b["type"]).endswith("Trigger")]
        if len(triggers) != 1:
            raise HostConfigurationError(f"function {name} must have exactly one trigger")
        trigger = triggers[0]
        entry = IndexedFunction(
            name=name,
            function=user_function,
            trigger_type=str(trigger["type"]),
            trigger=trigger,
            wants_context="context" in inspect.signature(user_function).parameters,
        )
        for binding in bindings:
            if binding is trigger:
                continue
            kind, direction = str(binding["type"]), str(binding.get("direction", "")).upper()
            if kind == "http" and direction == "OUT" and entry.trigger_type == "httpTrigger":
                continue
            if kind == "queue" and direction == "OUT":
                entry.outputs.append(_queue_binding(binding, environ))
                continue
            raise HostConfigurationError(
                f"function {name}: binding {kind} ({direction}) is not supported by the local host"
            )
        if entry.trigger_type == "httpTrigger":
            entry.route = RouteTemplate(str(trigger.get("route") or name))
            methods = trigger.get("methods") or ALL_METHODS
            entry.methods = tuple(str(m).upper() for m in methods)
            entry.auth_level = str(trigger.get("authLevel") or "FUNCTION").upper()
        elif entry.trigger_type == "queueTrigger":
            entry.queue = _queue_binding(trigger, environ)
        elif entry.trigger_type == "timerTrigger":
            entry.schedule = resolve(str(trigger["schedule"]), environ)
            entry.run_on_startup = bool(trigger.get("runOnStartup", False))
            entry.use_monitor = bool(trigger.get("useMonitor", True))
        else:
            raise HostConfigurationError(f"function {name}: trigger {entry.trigger_type} is not supported")
        indexed.append(entry)
    return indexed
