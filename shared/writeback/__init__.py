"""EHR writeback adapters: Epic's telehealth status call, FHIR AuditEvent, or none.

One interface, ``WritebackAdapter.write(event, target)``, chosen by the configuration's writeback
mode (``adapter_for``). Adapters raise the connector's upstream errors: ``UpstreamUnavailable`` /
``UpstreamThrottled`` are retryable, ``UpstreamRejected`` is permanent. Exactly-once is the
worker's job (``shared.writeback.worker``); adapters make one attempt each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from shared.configurations import WritebackMode
from shared.events import VisitEvent


@dataclass(frozen=True)
class WritebackTarget:
    """Where and how a configuration's events are written back."""

    mode: WritebackMode
    fhir_base_url: str
    client_id: str  # the backend-services client id registered with the EHR
    vendor_name: str = "Microsoft Teams"


class Written(enum.StrEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"  # nothing to write for this event in this mode (e.g. lobby for Epic)


class WritebackAdapter(Protocol):
    def write(self, event: VisitEvent, target: WritebackTarget) -> Written: ...


__all__ = ["WritebackAdapter", "WritebackMode", "WritebackTarget", "Written"]
