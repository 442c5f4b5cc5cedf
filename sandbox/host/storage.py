"""Queue clients for binding connections, and the queue extension's message encoding."""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient

from sandbox.host.config import HostConfigurationError

_WHITESPACE = str.maketrans("", "", " \t\r\n")


class UndecodableMessage(ValueError):
    """A message that is not valid Base64 while ``messageEncoding`` is base64."""


def encode(body: bytes, encoding: str) -> str:
    """The text stored in the queue for a message body."""
    if encoding == "base64":
        return base64.b64encode(body).decode("ascii")
    return body.decode("utf-8")


def decode(content: str, encoding: str) -> bytes:
    """The message body the function sees, from the text stored in the queue."""
    if encoding == "base64":
        try:
            return base64.b64decode(content.translate(_WHITESPACE), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UndecodableMessage("message is not valid Base64") from exc
    return content.encode("utf-8")


def message_bodies(value: Any) -> list[bytes]:
    """What an output binding was set to, as message bodies (str, bytes, QueueMessage or a list of them)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.encode("utf-8")]
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, func.QueueMessage):
        return [value.get_body()]
    if isinstance(value, Iterable):
        bodies: list[bytes] = []
        for item in value:
            if not isinstance(item, str | bytes | bytearray | func.QueueMessage):
                raise TypeError(f"invalid data type in output queue message list: {type(item).__name__}")
            bodies += message_bodies(item)
        return bodies
    raise TypeError(f"unsupported queue output value: {type(value).__name__}")


class QueueClients:
    """One QueueServiceClient per connection setting; remembers which queues exist."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        self._created: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._shared_transport: Any = None
        self.on_enqueue: list[Callable[[str, str], None]] = []

    def service(self, connection: str) -> QueueServiceClient:
        with self._lock:
            if connection not in self._services:
                self._services[connection] = self._build(connection)
            return self._services[connection]

    def _transport(self) -> Any:
        """One requests session for every connection, built as the app's storage session is.

        The Functions host is a .NET process: it does not scan the Python environment for proxies and certificate
        bundles on every queue call, nor merge session settings and cookies into each request, as a default
        requests session does (~30 % of a message's CPU); ``shared.http.outbound.storage_session`` does neither.
        """
        if self._shared_transport is None:
            from azure.core.pipeline.transport import RequestsTransport

            from shared.http.outbound import storage_session

            # Every function's output and every queue listener share it: a pool as large as the invocations in flight.
            session = storage_session(pool_size=64)
            self._shared_transport = RequestsTransport(session=session, session_owner=False, use_env_settings=False)
        return self._shared_transport

    def _build(self, connection: str) -> QueueServiceClient:
        value = self._environ.get(connection)
        if value:
            return QueueServiceClient.from_connection_string(value, transport=self._transport())
        account_url = self._environ.get(f"{connection}__queueServiceUri") or self._environ.get(
            f"{connection}__serviceUri"
        )
        if account_url:
            from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

            client_id = self._environ.get(f"{connection}__clientId")
            credential: Any = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
            return QueueServiceClient(account_url, credential=credential, transport=self._transport())
        raise HostConfigurationError(
            f"connection '{connection}' has no connection string and no {connection}__queueServiceUri setting"
        )

    def queue(self, connection: str, queue_name: str) -> QueueClient:
        """One client per queue, kept: the host builds a queue's client (and its pipeline) once, not per message."""
        key = (connection, queue_name)
        client = self._queues.get(key)
        if client is None:
            service = self.service(connection)
            with self._lock:
                client = self._queues.setdefault(key, service.get_queue_client(queue_name))
        return client

    def ensure_queue(self, connection: str, queue_name: str) -> QueueClient:
        client = self.queue(connection, queue_name)
        if (connection, queue_name) not in self._created:
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._created.add((connection, queue_name))
        return client

    def send(self, connection: str, queue_name: str, contents: list[str]) -> None:
        """Enqueue already-encoded contents, creating the queue first (as the output binding does)."""
        if not contents:
            return
        client = self.ensure_queue(connection, queue_name)
        for content in contents:
            client.send_message(content)
        for listener in self.on_enqueue:
            listener(connection, queue_name)
