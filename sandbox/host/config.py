"""host.json and app settings, read the way the Functions host reads them."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


class HostConfigurationError(Exception):
    """host.json, a binding or a setting the host cannot work with (the host refuses to start)."""


def parse_timespan(value: str | int | float) -> timedelta:
    """A .NET TimeSpan string (``[d.]hh:mm:ss[.fffffff]``), as host.json writes durations."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _TIMESPAN.match(value.strip())
    if not match:
        raise HostConfigurationError(f"{value!r} is not a TimeSpan (expected hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    micro = int((fraction or "0").ljust(7, "0")[:7]) / 10
    return timedelta(
        days=int(days or 0), hours=int(hours), minutes=int(minutes), seconds=int(seconds), microseconds=micro
    )


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` with the Queues extension's (v5) defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: timedelta = timedelta(0)
    max_polling_interval: timedelta = timedelta(minutes=1)
    message_encoding: str = "base64"

    @classmethod
    def from_json(cls, section: Mapping[str, Any]) -> QueueOptions:
        lowered = {key.lower(): value for key, value in section.items()}
        batch_size = int(lowered.get("batchsize", 16))
        if not 1 <= batch_size <= 32:
            raise HostConfigurationError("extensions.queues.batchSize must be between 1 and 32")
        threshold = int(lowered.get("newbatchthreshold", batch_size // 2))
        max_dequeue = int(lowered.get("maxdequeuecount", 5))
        if max_dequeue < 1:
            raise HostConfigurationError("extensions.queues.maxDequeueCount must be at least 1")
        polling = parse_timespan(lowered.get("maxpollinginterval", "00:01:00"))
        if polling < timedelta(milliseconds=100):
            raise HostConfigurationError("extensions.queues.maxPollingInterval must be at least 00:00:00.100")
        encoding = str(lowered.get("messageencoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise HostConfigurationError("extensions.queues.messageEncoding must be base64 or none")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_dequeue_count=max_dequeue,
            visibility_timeout=parse_timespan(lowered.get("visibilitytimeout", "00:00:00")),
            max_polling_interval=polling,
            message_encoding=encoding,
        )


@dataclass(frozen=True)
class HostJson:
    route_prefix: str = "api"
    queues: QueueOptions = QueueOptions()
    function_timeout: timedelta | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostJson:
        if str(data.get("version", "2.0")) != "2.0":
            raise HostConfigurationError('host.json must have "version": "2.0"')
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        prefix = str(http.get("routePrefix", "api")).strip("/")
        timeout = data.get("functionTimeout")
        return cls(
            route_prefix=prefix,
            queues=QueueOptions.from_json(extensions.get("queues") or {}),
            function_timeout=parse_timespan(timeout) if timeout else None,
        )

    @classmethod
    def load(cls, path: Path) -> HostJson:
        if not path.exists():
            logger.warning("No host.json at %s; using the host's defaults", path)
            return cls()
        return cls.from_json(json.loads(path.read_text()))


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a local.settings.json (encrypted files are not supported)."""
    data = json.loads(path.read_text())
    if data.get("IsEncrypted"):
        raise HostConfigurationError(f"{path.name} is encrypted; this host reads plain values only")
    values = data.get("Values") or {}
    return {str(key): "" if value is None else str(value) for key, value in values.items()}


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy settings into the environment like ``func start``: a non-empty variable already set wins.

    Returns the names that were skipped (Core Tools prints one warning line for each).
    """
    target = os.environ if environ is None else environ
    skipped = []
    for key, value in values.items():
        if not key:
            continue
        if target.get(key):
            logger.warning(
                "Skipping '%s' from local settings as it's already defined in current environment variables.", key
            )
            skipped.append(key)
        else:
            target[key] = value
    return skipped


def resolve(value: str, environ: Mapping[str, str]) -> str:
    """Resolve ``%SETTING%`` references in a binding property, as the host's name resolver does."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        found = environ.get(name)
        if found is None:
            raise HostConfigurationError(f"'%{name}%' does not resolve to a value (app setting {name} is missing)")
        return found

    return _SETTING_REFERENCE.sub(setting, value)
