"""The writeback port: what an EHR writeback adapter is given and what it answers.

Adapters (``shared.ehr.epic_writeback``, ``shared.ehr.fhir_writeback``) implement
``WritebackAdapter.write(event, target)``; the worker picks one by the configuration's writeback mode.
They raise the connector's upstream errors: ``UpstreamUnavailable`` / ``UpstreamThrottled`` are
retryable, ``UpstreamRejected`` is permanent. Claims and done marks are the worker's job
(``shared.writeback.worker``, ``shared.writeback.ledger``); adapters make one attempt each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from shared.configurations.model import Vendor, WritebackMode
from shared.visits.events import VisitEvent


@dataclass(frozen=True)
class WritebackTarget:
    """Where and how a configuration's events are written back."""

    mode: WritebackMode
    fhir_base_url: str
    client_id: str  # the backend-services client id registered with the EHR
    vendor_name: str = "Microsoft Teams"
    ehr_vendor: Vendor = Vendor.EPIC  # decides the headers that name our client (``shared.ehr.vendors``)


class Written(enum.StrEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"  # nothing to write for this event in this mode (e.g. lobby for Epic)


class WritebackAdapter(Protocol):
    def write(self, event: VisitEvent, target: WritebackTarget) -> Written: ...


class LedgerFree(Protocol):
    """What an adapter may add so the worker can leave the ledger out (``shared.writeback.worker``).

    ``idempotent``: writing an event twice has the effect of writing it once (a FHIR conditional create), so
    no claim or done mark is needed. ``skips(event)``: the adapter would answer ``Written.SKIPPED`` without a
    call, so the event needs neither. An adapter without these attributes goes through the ledger.
    """

    idempotent: bool

    def skips(self, event: VisitEvent) -> bool: ...


def is_idempotent(adapter: object) -> bool:
    return getattr(adapter, "idempotent", False) is True


def skips(adapter: object, event: VisitEvent) -> bool:
    check = getattr(adapter, "skips", None)
    return bool(check(event)) if callable(check) else False
