"""Typed, immutable settings read lazily from environment variables.

``get_settings()`` reads the environment once, on first use (never at import), and raises
one ``ConfigurationError`` naming every missing or invalid key. Every key here is
documented in ``local.settings.sample.json`` and set by ``infra/app/api.bicep``; a test
keeps the three lists equal.

Storage connections follow the Functions host convention: ``NAME`` holds a connection
string (Azurite: ``UseDevelopmentStorage=true``), or ``NAME__tableServiceUri`` and
``NAME__queueServiceUri`` (+ ``NAME__clientId`` for a user-assigned identity) select
identity-based access in Azure.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.kernel.errors import ConfigurationError
from shared.kernel.sealing import parse_keys


class Geography(enum.StrEnum):
    """Where a configuration's durable personal data (the EHR user mapping) lives."""

    AMERICAS = "americas"
    EMEA = "emea"
    APAC = "apac"

    @classmethod
    def parse(cls, value: str) -> Geography:
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(g.value for g in cls)
            raise ValueError(f"unknown geography {value!r}; expected one of {allowed}") from None


class Secret:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class StorageConnection:
    """How to reach one storage account's Table and Queue services."""

    setting: str
    connection_string: Secret | None = None
    table_endpoint: str | None = None
    queue_endpoint: str | None = None
    client_id: str | None = None

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


STORAGE_SETTING_BY_GEOGRAPHY: Mapping[Geography, str] = {
    Geography.AMERICAS: "STORAGE_AMERICAS",
    Geography.EMEA: "STORAGE_EMEA",
    Geography.APAC: "STORAGE_APAC",
}
APP_STORAGE_SETTING = "AzureWebJobsStorage"


@dataclass(frozen=True)
class Settings:
    app_storage: StorageConnection
    geography_storage: Mapping[Geography, StorageConnection]
    public_base_url: str
    entra_authority_host: str
    entra_tenant_id: str
    entra_client_id: str
    entra_client_secret: Secret
    entra_allowed_tenant_ids: frozenset[str]
    graph_base_url: str
    graph_client_state: Secret
    graph_encryption_certificate: Secret
    signing_keys: Secret
    connector_secret: Secret
    sealing_keys: Secret
    writeback_queue_name: str
    outbound_allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    http_timeout_seconds: float = 10.0
    applicationinsights_connection_string: Secret | None = None
    # How long past the appointment's start (or the patient's arrival, if later) the waiting room waits
    # before telling the patient to call their clinic; it keeps checking afterwards.
    waiting_room_give_up_minutes: float = 15.0
    telemetry_sampling_ratio: float = 0.1  # read by connector/telemetry.py before the settings exist

    @property
    def geographies(self) -> tuple[Geography, ...]:
        return tuple(g for g in Geography if g in self.geography_storage)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        reader = _Reader(environ)
        app_storage = reader.storage(APP_STORAGE_SETTING, required=True) or StorageConnection(APP_STORAGE_SETTING)
        geography_storage = {
            geo: conn
            for geo, name in STORAGE_SETTING_BY_GEOGRAPHY.items()
            if (conn := reader.storage(name, required=False)) is not None
        }
        if not geography_storage:
            reader.problem(
                "STORAGE_AMERICAS|STORAGE_EMEA|STORAGE_APAC",
                "at least one geography's storage must be configured",
            )
        tenant_id = reader.text("ENTRA_TENANT_ID")
        allowed = reader.csv("ENTRA_ALLOWED_TENANT_IDS")
        settings = cls(
            app_storage=app_storage,
            geography_storage=geography_storage,
            public_base_url=reader.url("PUBLIC_BASE_URL", local_http_ok=True),
            entra_authority_host=reader.url("ENTRA_AUTHORITY_HOST", local_http_ok=False),
            entra_tenant_id=tenant_id,
            entra_client_id=reader.text("ENTRA_CLIENT_ID"),
            entra_client_secret=reader.secret("ENTRA_CLIENT_SECRET"),
            entra_allowed_tenant_ids=frozenset(allowed) or frozenset({tenant_id}),
            graph_base_url=reader.url("GRAPH_BASE_URL", local_http_ok=True),
            graph_client_state=reader.secret("GRAPH_CLIENT_STATE", min_length=32),
            graph_encryption_certificate=reader.pem("GRAPH_ENCRYPTION_CERTIFICATE"),
            signing_keys=reader.pem("SIGNING_KEYS"),
            connector_secret=reader.secret("CONNECTOR_SECRET", min_length=32),
            sealing_keys=reader.sealing_keys("SEALING_KEYS"),
            writeback_queue_name=reader.queue_name("WRITEBACK_QUEUE_NAME"),
            outbound_allowed_hosts=frozenset(h.lower() for h in reader.csv("OUTBOUND_ALLOWED_HOSTS")),
            http_timeout_seconds=reader.number("HTTP_TIMEOUT_SECONDS", default=10.0, low=1, high=60),
            applicationinsights_connection_string=reader.optional_secret("APPLICATIONINSIGHTS_CONNECTION_STRING"),
            waiting_room_give_up_minutes=reader.number("WAITING_ROOM_GIVE_UP_MINUTES", default=15.0, low=1, high=240),
            telemetry_sampling_ratio=reader.number("TELEMETRY_SAMPLING_RATIO", default=0.1, low=0, high=1),
        )
        reader.raise_if_problems()
        return settings


# Every key the settings object reads (storage connections by their base name). Host-only
# keys such as FUNCTIONS_WORKER_RUNTIME are not ours and are listed in HOST_KEYS.
SETTING_KEYS: frozenset[str] = frozenset(
    {
        APP_STORAGE_SETTING,
        *STORAGE_SETTING_BY_GEOGRAPHY.values(),
        "PUBLIC_BASE_URL",
        "ENTRA_AUTHORITY_HOST",
        "ENTRA_TENANT_ID",
        "ENTRA_CLIENT_ID",
        "ENTRA_CLIENT_SECRET",
        "ENTRA_ALLOWED_TENANT_IDS",
        "GRAPH_BASE_URL",
        "GRAPH_CLIENT_STATE",
        "GRAPH_ENCRYPTION_CERTIFICATE",
        "SIGNING_KEYS",
        "CONNECTOR_SECRET",
        "SEALING_KEYS",
        "WRITEBACK_QUEUE_NAME",
        "OUTBOUND_ALLOWED_HOSTS",
        "HTTP_TIMEOUT_SECONDS",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "WAITING_ROOM_GIVE_UP_MINUTES",
        "TELEMETRY_SAMPLING_RATIO",
    }
)
HOST_KEYS: frozenset[str] = frozenset(
    {
        "FUNCTIONS_WORKER_RUNTIME",
        "AzureWebJobsFeatureFlags",
        # The worker's thread pool: every function is a plain def, and each invocation holds a thread while it waits.
        "PYTHON_THREADPOOL_THREAD_COUNT",
        # Read by the Functions host and the Azure Monitor exporter, not by the settings object.
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
        "PYTHON_ENABLE_OPENTELEMETRY",
    }
)
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


class _Reader:
    """Reads keys, collecting every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env = environ
        self._problems: dict[str, str] = {}

    def problem(self, key: str, why: str) -> None:
        self._problems[key] = why

    def raise_if_problems(self) -> None:
        if self._problems:
            raise ConfigurationError(self._problems)

    def _get(self, key: str) -> str | None:
        value = self._env.get(key)
        if value is None or not value.strip():
            return None
        return value.strip()

    def text(self, key: str) -> str:
        value = self._get(key)
        if value is None:
            self.problem(key, "missing")
            return ""
        return value

    def secret(self, key: str, *, min_length: int = 1) -> Secret:
        value = self.text(key)
        if value and len(value) < min_length:
            self.problem(key, f"must be at least {min_length} characters")
        return Secret(value)

    def optional_secret(self, key: str) -> Secret | None:
        value = self._get(key)
        return Secret(value) if value is not None else None

    def pem(self, key: str) -> Secret:
        value = self.text(key)
        if value and "-----BEGIN " not in value:
            self.problem(key, "must hold PEM text (-----BEGIN ...-----)")
        return Secret(value.replace("\\n", "\n"))

    def sealing_keys(self, key: str) -> Secret:
        value = self.text(key)
        if value:
            try:
                parse_keys(value)
            except ValueError as exc:
                self.problem(key, str(exc))
        return Secret(value)

    def csv(self, key: str) -> list[str]:
        value = self._get(key) or ""
        return [part.strip() for part in value.split(",") if part.strip()]

    def number(self, key: str, *, default: float, low: float, high: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.problem(key, "must be a number")
            return default
        if not low <= number <= high:
            self.problem(key, f"must be between {low:g} and {high:g}")
        return number

    def url(self, key: str, *, local_http_ok: bool) -> str:
        value = self.text(key)
        if not value:
            return ""
        parts = urlsplit(value)
        is_local = (parts.hostname or "") in LOCAL_HOSTS
        if parts.scheme == "https" or (parts.scheme == "http" and local_http_ok and is_local):
            if not parts.hostname or parts.query or parts.fragment or parts.username:
                self.problem(key, "must be a plain base URL (no credentials, query or fragment)")
            return value.rstrip("/")
        rule = "https (or http on localhost)" if local_http_ok else "https"
        self.problem(key, f"must be an {rule} URL")
        return value

    def queue_name(self, key: str) -> str:
        value = self.text(key)
        valid = 3 <= len(value) <= 63 and value.replace("-", "").isalnum() and value.islower()
        if value and not valid:
            self.problem(key, "must be a valid queue name (3-63 lowercase letters, digits, hyphens)")
        return value

    def storage(self, name: str, *, required: bool) -> StorageConnection | None:
        connection_string = self._get(name)
        table = self._get(f"{name}__tableServiceUri")
        queue = self._get(f"{name}__queueServiceUri")
        client_id = self._get(f"{name}__clientId")
        if connection_string:
            return StorageConnection(setting=name, connection_string=Secret(connection_string))
        if table or queue:
            if not (table and queue):
                self.problem(name, f"set both {name}__tableServiceUri and {name}__queueServiceUri")
            return StorageConnection(setting=name, table_endpoint=table, queue_endpoint=queue, client_id=client_id)
        if required:
            self.problem(name, "missing (connection string, or __tableServiceUri + __queueServiceUri)")
        return None


@functools.cache
def _cached_settings() -> Settings:
    return Settings.from_env(os.environ)


def get_settings() -> Settings:
    """The process-wide settings, read on first call. Raises ``ConfigurationError``."""
    return _cached_settings()


def reset_settings_cache() -> None:
    """Forget the cached settings (tests, and the local host after editing settings)."""
    _cached_settings.cache_clear()
