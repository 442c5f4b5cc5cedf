"""The writeback ledger: one row per event, so a busy visit neither contends nor forgets.

Table ``WritebackLedger`` in the visit's geography account. PartitionKey = visit key (an HMAC: it
reveals no EHR identifier), RowKey = event id (a hash of the event). Every lookup is a point read
(PartitionKey + RowKey, the cheapest Table operation); visits spread the rows over partitions (a
partition serves ~2,000 operations/s, far more than one visit produces); and one partition query
answers whether a visit's writebacks are done (its pending rows only). Rows carry no EHR identifier.

A row is a lease, then a fact::

    claim:   create-if-absent {State: claimed, ClaimedAt}          → ours
             exists → read it: done                                → AlreadyWritten (complete, no EHR call)
                               claimed less than ``lease`` ago     → ClaimedElsewhere (retry later)
                               claimed longer ago (a dead worker),
                               released or failed                  → take over: etag-guarded update → ours
    done:    etag-guarded update {State: done}, the first write after the EHR's answer
    release: etag-guarded update {State: released} after a retryable failure: the retry may claim at once,
             and the event is still pending (the visit keeps the launch context its retry needs)
    failed:  etag-guarded update {State: failed} after a permanent failure: no longer pending (the message
             is in the poison queue); a replayed message may claim it again

When a row reached its state is its ``Timestamp``, which the service sets on every write: no column of ours.

Pending (``is_pending``): claimed or released, for at most ``RETRY_SPAN``. The visit's launch context is
released only once none of its rows is pending (``shared.visits.lifetime``). Each event has a row of its
own, so events of one visit never race for one etag and nothing is evicted. Rows expire with their visit
(an event of a gone visit is refused before the ledger) and the ``sweep_expired_state`` timer deletes them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.kernel.clock import utcnow
from shared.kernel.errors import AlreadyWritten, ClaimedElsewhere
from shared.kernel.identifiers import log_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, operational
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage, insert_row, storage_errors

logger = logging.getLogger(__name__)

TABLE = "WritebackLedger"
LEASE = timedelta(seconds=60)  # longer than a claim's worst case: 3 EHR attempts + a token request + back-off
CLAIMED = "claimed"
DONE = "done"
RELEASED = "released"  # a retryable failure: pending, claimable at once
FAILED = "failed"  # a permanent failure: not pending; a replay may claim it
PENDING = frozenset({CLAIMED, RELEASED})
# How long a claimed or released row keeps its event pending. The queue retries a message 5 times, 30 s apart
# (host.json), and a killed host's messages stay locked for up to 10 minutes first; an event still claimed or
# released after this was either taken over meanwhile (the row says so) or moved to the poison queue, and its
# visit need not keep the launch context for it (a replay after a relaunch finds the context again).
RETRY_SPAN = timedelta(minutes=20)
_ATTEMPTS = 3  # a row swept between our create and our read: create again, a few times
# A visit's rows in a pending state, which the service selects (spaces around the parentheses: the SDK substitutes
# a parameter only as a word of its own), and the columns ``is_pending`` reads of them.
PENDING_FILTER = "PartitionKey eq @pk and ( State eq @claimed or State eq @released )"
PENDING_COLUMNS = ["State", "ClaimedAt"]


def pending_parameters(visit_key: str) -> dict[str, str]:
    return {"pk": visit_key, "claimed": CLAIMED, "released": RELEASED}


INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "one row per writeback event id: claimed, then done, released (to retry) or failed (create-if-absent; "
        "busy visits neither contend nor evict)",
        (
            Field("PartitionKey", Classification.EHR_ID, Protection.HMAC, "the visit key"),
            Field("RowKey", Classification.OPERATIONAL, Protection.HASHED, "event id"),
            *operational("State", "ClaimedAt", "Attempt", "ExpiresAt"),
        ),
        "until ExpiresAt (the visit's), as long as a redelivered event may still arrive",
        "the sweep timer after ExpiresAt",
    ),
)


@dataclass(frozen=True)
class LedgerEntry:
    """One event's row as stored."""

    visit_key: str
    event_id: str
    state: str  # claimed | done | released | failed
    claimed_at: datetime
    attempt: int  # 1 for the first claim, +1 per takeover
    expires_at: datetime
    etag: str | None = None


class Decision(enum.StrEnum):
    DONE = "done"  # the effect is recorded: complete without calling the EHR
    HELD = "held"  # a live claim of another worker: retry after its lease
    TAKE_OVER = "take_over"  # released, failed, or a claim older than the lease (its worker died): claim it


def decide(entry: LedgerEntry, *, now: datetime, lease: timedelta) -> Decision:
    """What a worker that finds ``entry`` already present does. Done is final, whatever the clock says."""
    if entry.state == DONE:
        return Decision.DONE
    if entry.state == CLAIMED and now - entry.claimed_at < lease:
        return Decision.HELD
    return Decision.TAKE_OVER


def is_pending(entry: LedgerEntry, *, now: datetime) -> bool:
    """The event may still be written: claimed, or released for its retry, within ``RETRY_SPAN``.

    Done and failed are not; nor is a row its queue has given up on (poisoned after a retryable failure or a
    dead worker), so that the visit's context does not wait for the row's expiry, 24 hours later.
    """
    return _pending(entry.state, entry.claimed_at, now=now)


def _pending(state: str, claimed_at: datetime, *, now: datetime) -> bool:
    return state in PENDING and now - claimed_at < RETRY_SPAN


@dataclass(frozen=True)
class Claim:
    """A claim this worker holds; ``etag`` guards its done mark and its release."""

    geography: Geography
    visit_key: str
    event_id: str
    claimed_at: datetime
    attempt: int
    expires_at: datetime
    etag: str | None


class WritebackLedger:
    def __init__(self, storage: Storage, *, lease: timedelta = LEASE, clock: Callable[[], datetime] = utcnow) -> None:
        self._storage = storage
        self.lease = lease
        self._clock = clock

    def now(self) -> datetime:
        """The ledger's clock: what "pending" is measured against (``is_pending``)."""
        return self._clock()

    def claim(self, geography: Geography, visit_key: str, event_id: str, *, expires_at: datetime) -> Claim:
        """Claim ``event_id`` of a visit. Raises ``AlreadyWritten`` or ``ClaimedElsewhere`` when it is not ours.

        Normally one create; a duplicate delivery adds a read; a takeover adds an etag-guarded update.
        """
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        with storage_errors(account.name):
            for _ in range(_ATTEMPTS):
                now = self._clock()
                fresh = Claim(geography, visit_key, event_id, now, 1, expires_at, None)
                try:
                    metadata = insert_row(table, _claimed(fresh))
                    return _with_etag(fresh, metadata)
                except ResourceExistsError:
                    pass
                try:
                    entry = _from_entity(table.get_entity(visit_key, event_id))
                except ResourceNotFoundError:
                    continue  # released (or swept) since our create: try the create again
                decision = decide(entry, now=now, lease=self.lease)
                if decision is Decision.DONE:
                    raise AlreadyWritten(event_id)
                if decision is Decision.HELD:
                    raise ClaimedElsewhere(event_id)
                taken = Claim(geography, visit_key, event_id, now, entry.attempt + 1, expires_at, None)
                try:
                    metadata = table.update_entity(
                        _claimed(taken),
                        mode=UpdateMode.REPLACE,
                        etag=entry.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                except ResourceModifiedError:
                    raise ClaimedElsewhere(event_id) from None  # another worker took it over first
                except ResourceNotFoundError:
                    continue
                if entry.state == CLAIMED:
                    logger.warning(
                        "Event %s: took over a claim left for %d s (attempt %d); its worker died or overran its lease",
                        log_id(event_id),
                        int((now - entry.claimed_at).total_seconds()),
                        taken.attempt,
                    )
                else:
                    logger.info(
                        "Event %s: claimed again after it was %s (attempt %d)",
                        log_id(event_id),
                        entry.state,
                        taken.attempt,
                    )
                return _with_etag(taken, metadata)
        raise ClaimedElsewhere(event_id)

    def mark_done(self, claim: Claim) -> bool:
        """Record the EHR effect: one etag-guarded write. False when the claim had been taken over meanwhile.

        The effect happened either way, so a lost claim is marked done regardless: redeliveries must stop.
        """
        account = self._storage.for_geography(claim.geography)
        table = account.table(TABLE)
        entity = _entity(claim, DONE)
        with storage_errors(account.name):
            try:
                table.update_entity(
                    entity, mode=UpdateMode.REPLACE, etag=claim.etag, match_condition=MatchConditions.IfNotModified
                )
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                table.upsert_entity(entity, mode=UpdateMode.REPLACE)
        logger.warning(
            "Event %s: written after its claim was taken over (the EHR call outlived the %d s lease)",
            log_id(claim.event_id),
            int(self.lease.total_seconds()),
        )
        return False

    def release(self, claim: Claim) -> None:
        """Give the claim back after a retryable failure, unless another worker holds it by now.

        The row stays, pending: the retry may claim it at once, and the visit keeps its context meanwhile.
        """
        self._end(claim, _entity(claim, RELEASED))

    def mark_failed(self, claim: Claim) -> None:
        """Record a permanent failure, unless another worker holds the claim by now: no longer pending."""
        self._end(claim, _entity(claim, FAILED))

    def _end(self, claim: Claim, entity: dict[str, Any]) -> None:
        account = self._storage.for_geography(claim.geography)
        with storage_errors(account.name), contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            account.table(TABLE).update_entity(
                entity, mode=UpdateMode.REPLACE, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )

    def pending(self, geography: Geography, visit_key: str) -> bool:
        """Whether any event of the visit is still pending (``is_pending``): one partition query, which the service
        answers with the rows in a pending state only (usually none: the visit's done rows stay at the service)."""
        now = self._clock()
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            rows = account.table(TABLE).query_entities(
                PENDING_FILTER, parameters=pending_parameters(visit_key), select=PENDING_COLUMNS
            )
            return any(_pending(row["State"], row["ClaimedAt"], now=now) for row in rows)

    def entries(self, geography: Geography, visit_key: str) -> list[LedgerEntry]:
        """Every row of a visit (one partition query): what is done, what is still claimed."""
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            rows = account.table(TABLE).query_entities("PartitionKey eq @pk", parameters={"pk": visit_key})
            return [_from_entity(row) for row in rows]


def _entity(claim: Claim, state: str) -> dict[str, Any]:
    return {
        "PartitionKey": claim.visit_key,
        "RowKey": claim.event_id,
        "State": state,
        "ClaimedAt": claim.claimed_at,
        "Attempt": claim.attempt,
        "ExpiresAt": claim.expires_at,
    }


def _claimed(claim: Claim) -> dict[str, Any]:
    return _entity(claim, CLAIMED)


def _with_etag(claim: Claim, metadata: Any) -> Claim:
    """The claim with the etag its write returned (built directly: ``dataclasses.replace`` costs more per event)."""
    return Claim(**(vars(claim) | {"etag": dict(metadata).get("etag")}))


def _from_entity(entity: Any) -> LedgerEntry:
    return LedgerEntry(
        visit_key=entity["PartitionKey"],
        event_id=entity["RowKey"],
        state=entity["State"],
        claimed_at=entity["ClaimedAt"],
        attempt=int(entity.get("Attempt") or 1),
        expires_at=entity["ExpiresAt"],
        etag=entity.metadata.get("etag"),
    )
