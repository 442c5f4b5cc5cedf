"""Per-process objects of the events feature, built from settings on first use (never at import)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import httpx

from shared.configurations.model import WritebackMode
from shared.configurations.repository import ConfigurationRepository
from shared.ehr.backend_services import BackendServices
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.ehr.fhir_writeback import FhirAuditEvents, NoWriteback
from shared.jose.jwks import JwksCache
from shared.kernel.settings import Settings, get_settings
from shared.microsoft.entra import EntraDocuments
from shared.microsoft.notifications import (
    ClientStates,
    NotificationCertificate,
    NotificationDecoder,
    ValidationTokens,
    notification_certificates,
)
from shared.storage.accounts import Storage, get_storage
from shared.visits.repository import VisitRepository
from shared.visits.subscriptions import CallEventSubscriber, CallEventSubscriptions
from shared.writeback.targets import ConfigurationTargets
from shared.writeback.worker import FailureLog, WritebackWorker

ENTRA_KEYS_PATH = "/common/discovery/v2.0/keys"
T = TypeVar("T")

_objects: dict[str, object] = {}
_lock = threading.Lock()


def _once(name: str, build: Callable[[], T]) -> T:
    found = _objects.get(name)
    if found is None:
        with _lock:
            found = _objects.get(name)
            if found is None:
                found = build()
                _objects[name] = found
    return found  # type: ignore[return-value]


def reset() -> None:
    """Forget every built object (tests; settings changes)."""
    with _lock:
        _objects.clear()


def decoder() -> NotificationDecoder:
    return _once("decoder", lambda: build_decoder(get_settings()))


def worker() -> WritebackWorker:
    return _once("worker", lambda: build_worker(get_settings(), get_storage()))


def subscriptions() -> CallEventSubscriptions:
    return _once("subscriptions", lambda: build_subscriptions(get_settings(), get_storage()))


def notification_certificate(settings: Settings) -> NotificationCertificate:
    return NotificationCertificate.from_pem(settings.graph_encryption_certificate.reveal())


def build_decoder(settings: Settings) -> NotificationDecoder:
    certificates = notification_certificates(settings.graph_encryption_certificate.reveal())
    return NotificationDecoder(
        ClientStates(settings.graph_client_state.reveal()),
        ValidationTokens(
            JwksCache(EntraDocuments().get, min_refetch_seconds=300),  # an unknown kid: at most every 5 min
            jwks_uri=settings.entra_authority_host.rstrip("/") + ENTRA_KEYS_PATH,
            client_id=settings.entra_client_id,
        ),
        {certificate.certificate_id: certificate.private_key for certificate in certificates},
    )


def build_worker(settings: Settings, storage: Storage) -> WritebackWorker:
    from shared.ehr.smart import get_smart_client

    http = httpx.Client(timeout=settings.http_timeout_seconds, follow_redirects=False)
    backend = BackendServices(get_smart_client())
    adapters = {
        WritebackMode.EPIC: EpicConnectionStatus(http, backend),
        WritebackMode.FHIR_AUDIT_EVENT: FhirAuditEvents(http, backend),
        WritebackMode.NONE: NoWriteback(),
    }
    return WritebackWorker(
        VisitRepository(storage),
        ConfigurationTargets(ConfigurationRepository(storage.app)),
        adapters,
        FailureLog(storage.app, settings.writeback_queue_name),
    )


def build_subscriptions(settings: Settings, storage: Storage) -> CallEventSubscriptions:
    from shared.microsoft.app_credentials import AppOnlyCredentials
    from shared.microsoft.teams import TeamsClient

    credentials = AppOnlyCredentials(
        settings.entra_authority_host, settings.entra_client_id, settings.entra_client_secret.reveal()
    )
    clients: dict[str, TeamsClient] = {}
    clients_lock = threading.Lock()

    def subscriber_for_tenant(tenant_id: str) -> CallEventSubscriber:
        with clients_lock:
            if tenant_id not in clients:
                clients[tenant_id] = TeamsClient(
                    settings.graph_base_url, credentials.for_tenant(tenant_id), timeout=settings.http_timeout_seconds
                )
            return clients[tenant_id]

    return CallEventSubscriptions(
        VisitRepository(storage),
        subscriber_for_tenant,
        ClientStates(settings.graph_client_state.reveal()),
        notification_certificate(settings),
        settings.public_base_url,
    )
