"""Writeback targets from approved configurations (table ``Configurations`` in the app's account).

Reads the portal's rows (PartitionKey tenant, RowKey configuration id; ``FhirBaseUrl``,
``ProviderClientId``, ``WritebackMode``, ``Status``) by configuration id alone, since an event
carries no tenant. Cached per process for a few minutes so a busy queue costs no extra reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.configurations.model import WritebackMode
from shared.kernel.errors import NotFound
from shared.storage.accounts import StorageAccount, storage_errors
from shared.writeback.model import WritebackTarget

TABLE = "Configurations"
CACHE_SECONDS = 300.0


class ConfigurationTargets:
    def __init__(
        self, account: StorageAccount, *, ttl: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._account = account
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, WritebackTarget]] = {}
        self._lock = threading.Lock()

    def target_for(self, configuration_id: str) -> WritebackTarget:
        with self._lock:
            cached = self._cache.get(configuration_id)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        with storage_errors(self._account.name):
            rows = list(
                self._account.table(TABLE).query_entities(
                    "RowKey eq @id",
                    parameters={"id": configuration_id},
                    select=["FhirBaseUrl", "ProviderClientId", "WritebackMode", "Status"],
                )
            )
        if len(rows) != 1 or rows[0].get("Status") != "approved":
            raise NotFound("There is no approved configuration for this event.")
        row = rows[0]
        try:
            target = WritebackTarget(
                mode=WritebackMode(str(row.get("WritebackMode"))),
                fhir_base_url=str(row["FhirBaseUrl"]),
                client_id=str(row["ProviderClientId"]),
            )
        except (KeyError, ValueError):
            raise NotFound("The configuration has no usable writeback settings.") from None
        with self._lock:
            self._cache[configuration_id] = (self._clock(), target)
        return target
