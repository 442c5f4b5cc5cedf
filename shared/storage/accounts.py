"""Table and Queue clients, one storage account per geography plus the app's own.

The only module that builds azure-data-tables / azure-storage-queue clients. A connection
string (Azurite) or an endpoint plus managed identity (Azure) is chosen by settings alone.
Transient failures are retried by the SDK's exponential retry policy, never by hand;
what still fails surfaces as ``StorageUnavailable``.

Tables are created on first use, once per process.

Every client of every account shares one HTTP transport per process (``shared.http.outbound.storage_transport``):
one ``requests`` session, its connection pools sized for the worker's threads, and no per-call scan of the
environment for proxies and certificate bundles.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient

from shared.http.outbound import storage_transport as shared_transport
from shared.kernel.errors import BadRequest, StorageUnavailable
from shared.kernel.i18n import N_
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store
from shared.kernel.settings import Geography, Settings, StorageConnection

if TYPE_CHECKING:  # azure-storage-queue costs ~0.2 s to import; only queue users pay for it
    from azure.storage.queue import QueueClient, QueueServiceClient

# What the Functions host itself keeps in the app's account (AzureWebJobsStorage); none of it is ours to write.
INVENTORY = (
    Store(
        "azure-webjobs-hosts",
        Kind.BLOBS,
        Account.APP,
        "the Functions host's leases and locks (one listener per queue and timer across instances)",
        (Field("blobs", Classification.OPERATIONAL, Protection.CLEAR, "host id, function names, lease state"),),
        "while the app exists",
        "the Functions host",
    ),
    Store(
        "azure-webjobs-secrets",
        Kind.BLOBS,
        Account.APP,
        "function and host keys (the x-functions-key of /api/ready and the timers' admin calls)",
        (Field("blobs", Classification.CREDENTIAL, Protection.HOST, "host and function keys"),),
        "while the app exists; rotated in the portal",
        "the Functions host",
    ),
    Store(
        "app-package-<app>-<token>",
        Kind.BLOBS,
        Account.APP,
        "the deployed code package (Flex Consumption deployment storage, infra/main.bicep)",
        (Field("blobs", Classification.OPERATIONAL, Protection.CLEAR, "the app's zip package"),),
        "until the next deployment replaces it",
        "azd deploy; azd down",
    ),
)

# SDK retry policy: a few quick exponential retries keep a request within its budget.
_CLIENT_OPTIONS: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.4,
    "retry_backoff_max": 4,
    "connection_timeout": 5,
    "read_timeout": 15,
}


class StorageAccount:
    """Clients for one account; tables are created the first time they are asked for."""

    def __init__(self, connection: StorageConnection, credential: TokenCredential | None = None) -> None:
        self.connection = connection
        self._credential = credential
        self._tables: dict[str, TableClient] = {}
        self._queues: dict[str, QueueClient] = {}
        self._lock = threading.Lock()
        self._table_service: TableServiceClient | None = None
        self._queue_service: QueueServiceClient | None = None

    @property
    def name(self) -> str:
        return self.connection.setting

    def table_service(self) -> TableServiceClient:
        if self._table_service is None:
            conn = self.connection
            if conn.connection_string is not None:
                self._table_service = TableServiceClient.from_connection_string(
                    conn.connection_string.reveal(), transport=shared_transport(), **_CLIENT_OPTIONS
                )
            else:
                self._table_service = TableServiceClient(
                    endpoint=str(conn.table_endpoint),
                    credential=self._identity(),
                    transport=shared_transport(),
                    **_CLIENT_OPTIONS,
                )
        return self._table_service

    def queue_service(self) -> QueueServiceClient:
        if self._queue_service is None:
            from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

            conn = self.connection
            # The Functions queue extension decodes base64 by default (host.json messageEncoding).
            options: dict[str, Any] = {
                **_CLIENT_OPTIONS,
                "message_encode_policy": TextBase64EncodePolicy(),
                "transport": shared_transport(),
            }
            if conn.connection_string is not None:
                self._queue_service = QueueServiceClient.from_connection_string(
                    conn.connection_string.reveal(), **options
                )
            else:
                self._queue_service = QueueServiceClient(
                    account_url=str(conn.queue_endpoint), credential=self._identity(), **options
                )
        return self._queue_service

    def table(self, name: str) -> TableClient:
        """A client for table ``name``, creating the table on first use."""
        client = self._tables.get(name)
        if client is not None:
            return client
        with self._lock, storage_errors(self.name):
            client = self._tables.get(name)
            if client is None:
                client = self.table_service().get_table_client(name)
                with suppress(ResourceExistsError):
                    client.create_table()
                self._tables[name] = client
        return client

    def queue(self, name: str) -> QueueClient:
        """A client for queue ``name`` (Base64 text messages, as the queue extension expects), created on first use."""
        client = self._queues.get(name)
        if client is not None:
            return client
        with self._lock, storage_errors(self.name):
            client = self._queues.get(name)
            if client is None:
                from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

                # get_queue_client does not pass the service's encode policy on: name it per queue.
                client = self.queue_service().get_queue_client(
                    name, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy()
                )
                with suppress(ResourceExistsError):
                    client.create_queue()
                self._queues[name] = client
        return client

    def _identity(self) -> TokenCredential:
        if self._credential is None:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            client_id = self.connection.client_id
            self._credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
        return self._credential

    def check(self) -> None:
        """Reachability probe used by /api/ready: one cheap call per service."""
        with storage_errors(self.name):
            next(iter(self.table_service().list_tables(results_per_page=1).by_page()), None)
            self.queue_service().get_service_properties()


class Storage:
    """The app's own account plus one account per configured geography."""

    def __init__(self, settings: Settings) -> None:
        self.app = StorageAccount(settings.app_storage)
        self._geographies = {geo: StorageAccount(conn) for geo, conn in settings.geography_storage.items()}

    @property
    def geographies(self) -> tuple[Geography, ...]:
        return tuple(self._geographies)

    def for_geography(self, geography: Geography) -> StorageAccount:
        try:
            return self._geographies[geography]
        except KeyError:
            raise BadRequest(
                N_("Geography %(value)s is not configured in this deployment.", value=repr(geography.value))
            ) from None


@contextmanager
def storage_errors(account: str) -> Iterator[None]:
    """Turn what the SDK could not retry away into ``StorageUnavailable``."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError, ClientAuthenticationError) as exc:
        raise StorageUnavailable(N_("Storage %(account)s is unreachable.", account=account)) from exc
    except HttpResponseError as exc:
        if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code in (408, 429)):
            raise StorageUnavailable(N_("Storage %(account)s is unavailable.", account=account)) from exc
        raise


def insert_row(table: TableClient, entity: Mapping[str, Any]) -> dict[str, Any]:
    """Create a row, failing with ``ResourceExistsError`` when its key is taken; returns its metadata (``etag``).

    Sent with ``Prefer: return-no-content``: the service answers 204 with the etag and does not echo the row back,
    which no caller reads, so nothing is sent, parsed or converted for it.
    """
    return dict(table.create_entity(entity, response_preference="return-no-content"))
