"""Writeback targets from approved configurations, found by configuration id alone (an event carries no tenant).

Cached per process for a few minutes so a busy queue costs no extra reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.configurations.repository import ConfigurationRepository
from shared.ehr.vendors import profile_for
from shared.kernel.errors import NotFound, StoredDataError
from shared.kernel.single_flight import SingleFlight
from shared.writeback.model import WritebackTarget

CACHE_SECONDS = 300.0


class ConfigurationTargets:
    def __init__(
        self,
        configurations: ConfigurationRepository,
        *,
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configurations = configurations
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, WritebackTarget]] = {}
        self._lock = threading.Lock()
        self._loading: SingleFlight[str, WritebackTarget] = SingleFlight()

    def target_for(self, configuration_id: str) -> WritebackTarget:
        """The kept target while fresh, else read: one read for the threads that ask meanwhile."""
        return self._loading.run(
            configuration_id, lambda: self._load(configuration_id), kept=lambda: self._kept(configuration_id)
        )

    def _kept(self, configuration_id: str) -> WritebackTarget | None:
        with self._lock:
            cached = self._cache.get(configuration_id)
        return cached[1] if cached is not None and self._clock() - cached[0] < self._ttl else None

    def _load(self, configuration_id: str) -> WritebackTarget:
        try:
            config = self._configurations.find_approved(configuration_id)
        except StoredDataError:
            raise NotFound("The configuration has no usable writeback settings.") from None
        if config is None:
            raise NotFound("There is no approved configuration for this event.")
        refusal = profile_for(config.vendor).writeback_refusal(config.writeback_mode)
        if refusal is not None:  # stored before the portal checked it: never sent to an EHR that has no such API
            raise NotFound(f"The configuration's writeback mode is not offered for its EHR. {refusal}")
        target = WritebackTarget(
            mode=config.writeback_mode,
            fhir_base_url=config.fhir_base_url,
            client_id=config.provider_client_id,
            ehr_vendor=config.vendor,
        )
        with self._lock:
            self._cache[configuration_id] = (self._clock(), target)
        return target
