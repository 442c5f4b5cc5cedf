"""The writeback queue worker: at-least-once delivery in, exactly-once effect in the EHR.

For one queue message (storage transactions in the normal case: 3)::

    parse ──invalid──▶ failure row + copy to <queue>-poison, complete
      │
    read the visit row (1) ──gone──▶ failure row + poison, complete
      │
    claim the event on the row, etag-guarded (2) ──already done──▶ complete (duplicate)
      │                                          └─claimed by a live worker──▶ raise (retry later)
    adapter call (retried inline a few times; Retry-After honoured up to a cap)
      │  retryable failure ──▶ release the claim, raise: the host retries with back-off, then poisons
      │  permanent failure ──▶ failure row + poison, release, complete
    mark done + record presence in one write (3)

Events carry no EHR identifier in clear (``shared.visits.events``): a launch event's sealed references are
opened here, a Graph event's come from the visit's sealed context; a value that does not open (tampered
with, or sealed under a retired key) is a permanent failure. After an event is done the visit's context
is released once its meeting has ended and nothing is pending (``shared.visits.lifetime``). Poison
messages and ``WritebackFailures`` rows hold no clear identifier and expire after 7 days.

A claim is a lease: a worker that dies between claim and done leaves a claim that expires, so
the redelivered message can claim again. The only window for a repeated EHR effect is a crash
after the EHR answered and before (3) — for AuditEvents the conditional create closes it too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from azure.core.exceptions import ResourceExistsError

from shared.configurations.model import WritebackMode
from shared.kernel.errors import (
    AlreadyWritten,
    ClaimedElsewhere,
    ConnectorError,
    InvalidEvent,
    NotFound,
    SealedValueInvalid,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamUnavailable,
)
from shared.kernel.identifiers import log_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.storage.accounts import StorageAccount, storage_errors
from shared.visits.events import Role, Source, VisitEvent
from shared.visits.lifetime import release_context_when_done
from shared.visits.model import (
    Visit,
    claim_writeback,
    has_context,
    mark_written,
    release_claim,
    with_launch_context,
    with_presence,
)
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event, seal_event
from shared.writeback.model import WritebackAdapter, WritebackTarget, Written

logger = logging.getLogger(__name__)

FAILURES_TABLE = "WritebackFailures"
FAILURE_LIFETIME = timedelta(days=7)  # as long as the poison queue keeps a message (its default time to live)
INVALID_PURPOSE = "writeback-invalid"

INVENTORY = (
    Store(
        FAILURES_TABLE,
        Kind.TABLE,
        Account.APP,
        "one row per permanently failed event, for operators (the message itself goes to the poison queue)",
        (
            key("PartitionKey", "UTC date"),
            Field("RowKey", Classification.OPERATIONAL, Protection.HASHED, "event id, or a fingerprint of the message"),
            Field("Code", Classification.OPERATIONAL, Protection.CLEAR, "why it failed"),
            Field("Configuration", Classification.TENANT, Protection.HASHED, "fingerprint of the configuration id"),
            *operational("At", "ExpiresAt"),
        ),
        "until ExpiresAt (as long as its poison message can be replayed)",
        "the sweep timer after ExpiresAt",
    ),
)


class ContextMissing(ConnectorError):
    """A Graph event needs the visit's launch context, which was released (or not yet restored by a launch)."""

    status = 503
    code = "writeback_context_missing"
    retryable = True


class ClaimHeld(ConnectorError):
    """Another worker is writing this event right now: try again after its lease."""

    status = 503
    code = "writeback_claim_held"
    retryable = True


class TargetResolver(Protocol):
    """The writeback target of a configuration; raises ``NotFound`` for an unknown configuration."""

    def target_for(self, configuration_id: str) -> WritebackTarget: ...


@dataclass(frozen=True)
class Outcome:
    status: str  # written | skipped | duplicate | failed
    event_id: str | None = None
    code: str | None = None
    visit: Visit | None = None  # the visit row as last written (lets the caller subscribe without a read)
    source_is_launch: bool = False


class FailureLog:
    """Permanent failures: a small row (hashed ids, code, ``ExpiresAt``: swept) and the message copied to
    ``<queue>-poison``: an event as it was queued (no clear identifier; a legacy event's references sealed),
    an unparseable body sealed whole, so nothing it might hold is readable there."""

    def __init__(self, account: StorageAccount, queue_name: str, sealer: Sealer) -> None:
        self._account = account
        self._sealer = sealer
        self.poison_queue = f"{queue_name}-poison"

    def record_event(self, event: VisitEvent, *, code: str) -> None:
        self._record(seal_event(self._sealer, event).to_json(), code, event.id, event.configuration_id)

    def record_invalid(self, body: str) -> None:
        if not _is_sealed_invalid(body):
            body = json.dumps({"invalid": self._sealer.seal(body, purpose=INVALID_PURPOSE)}, separators=(",", ":"))
        self._record(body, "invalid_event", None, None)

    def _record(self, body: str, code: str, event_id: str | None, configuration_id: str | None) -> None:
        now = datetime.now(UTC)
        row_key = event_id or log_id(body) + "-" + now.strftime("%H%M%S%f")
        with storage_errors(self._account.name):
            self._account.queue(self.poison_queue).send_message(body)
            with contextlib.suppress(ResourceExistsError):
                self._account.table(FAILURES_TABLE).create_entity(
                    {
                        "PartitionKey": now.strftime("%Y-%m-%d"),
                        "RowKey": row_key,
                        "Code": code,
                        "Configuration": log_id(configuration_id) if configuration_id else "",
                        "At": now,
                        "ExpiresAt": now + FAILURE_LIFETIME,
                    }
                )


@dataclass(frozen=True)
class RetryPolicy:
    """Inline retries of one adapter call before handing the message back to the queue."""

    attempts: int = 3
    base_delay: float = 0.2
    max_retry_after: float = 2.0  # a longer Retry-After goes back to the queue instead of blocking a worker


def compose(*changes: Callable[[Visit], Visit | None]) -> Callable[[Visit], Visit | None]:
    """Apply changes in order; None when none of them changed anything."""

    def change(visit: Visit) -> Visit | None:
        current, changed = visit, False
        for step in changes:
            result = step(current)
            if result is not None:
                current, changed = result, True
        return current if changed else None

    return change


class WritebackWorker:
    def __init__(
        self,
        visits: VisitRepository,
        resolver: TargetResolver,
        adapters: Mapping[WritebackMode, WritebackAdapter],
        failures: FailureLog,
        *,
        sealer: Sealer,
        lease: timedelta = timedelta(seconds=60),
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._visits = visits
        self._resolver = resolver
        self._adapters = adapters
        self._failures = failures
        self._sealer = sealer
        self._lease = lease
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def handle(self, body: str) -> Outcome:
        """Process one message. Returns normally to complete it; raises a retryable error to retry it."""
        try:
            event = VisitEvent.from_json(body)
            geography = Geography(event.geography)
        except (InvalidEvent, ValueError):
            logger.warning("Invalid writeback message %s moved to the poison queue (sealed)", log_id(body))
            self._failures.record_invalid(body)
            return Outcome("failed", code="invalid_event")
        queued = event
        visit = self._visits.get(geography, event.visit_key)
        if visit is None:
            return self._fail(queued, "visit_gone")
        try:
            event = open_event(self._sealer, event)
        except SealedValueInvalid:
            return self._unopenable(queued, "the event's sealed launch context")
        launch = event.source is Source.LAUNCH
        needs_visit_context = not (queued.sealed or queued.references)  # Graph events: the visit names them
        if needs_visit_context and visit.unreadable_context is not None:
            return self._unopenable(queued, "the visit's sealed context")
        event = _with_visit_context(event, visit)
        try:
            target = self._resolver.target_for(event.configuration_id)
        except NotFound:
            return self._fail(queued, "configuration_gone")
        presence = with_presence(event.role, event.kind, event.occurred_at)
        if launch:  # the launch's references fill (or restore) the visit's context
            confirmed = bool(queued.sealed)  # sealed: from a launch the EHR confirmed; legacy clear ones are not
            presence = compose(presence, with_launch_context(event.role, event.references, confirmed=confirmed))
        if target.mode is WritebackMode.NONE:
            visit = self._visits.update(visit, presence)
            visit = release_context_when_done(self._visits, visit)
            return Outcome("skipped", event.id, visit=visit, source_is_launch=launch)
        now = datetime.now(UTC)
        try:
            visit = self._visits.update(visit, claim_writeback(event.id, lease=self._lease, now=now))
        except AlreadyWritten:
            logger.info("Event %s already written; duplicate delivery completed", log_id(event.id))
            return Outcome("duplicate", event.id, visit=visit, source_is_launch=launch)
        except ClaimedElsewhere:
            raise ClaimHeld("Another worker holds this event's claim.") from None
        if needs_visit_context and not has_context(visit):
            # Released after the meeting ended (someone rejoined without launching again): keep the presence,
            # let the queue retry (a launch restores the context), then the poison queue keeps it for replay.
            logger.info(
                "Event %s: visit %s has no launch context (released); retry", log_id(event.id), log_id(visit.key)
            )
            self._visits.update(visit, compose(release_claim(event.id), presence))
            raise ContextMissing("The visit's launch context is not there; a launch restores it.")
        adapter = self._adapters[target.mode]
        try:
            written = self._call(adapter, event, target)
        except UpstreamRejected as exc:
            self._visits.update(visit, compose(release_claim(event.id), presence))
            return self._fail(queued, exc.code)
        except (UpstreamUnavailable, UpstreamThrottled) as exc:
            logger.info("Event %s: %s; the queue will retry", log_id(event.id), exc.code)
            self._visits.update(visit, release_claim(event.id))
            raise
        visit = self._visits.update(visit, compose(mark_written(event.id), presence))
        visit = release_context_when_done(self._visits, visit)
        logger.info("Event %s %s (%s, %s)", log_id(event.id), written.value, event.role.value, event.kind.value)
        return Outcome(written.value, event.id, visit=visit, source_is_launch=launch)

    def _call(self, adapter: WritebackAdapter, event: VisitEvent, target: WritebackTarget) -> Written:
        for attempt in range(1, self._retry.attempts + 1):
            try:
                return adapter.write(event, target)
            except UpstreamThrottled as exc:
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                if attempt == self._retry.attempts or wait > self._retry.max_retry_after:
                    raise
                self._sleep(wait)
            except UpstreamUnavailable:
                if attempt == self._retry.attempts:
                    raise
                self._sleep(self._backoff(attempt))
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return float(self._retry.base_delay * (2 ** (attempt - 1)) * (0.5 + random.random()))  # noqa: S311

    def _fail(self, event: VisitEvent, code: str) -> Outcome:
        logger.warning(
            "Event %s for visit %s failed permanently (%s); moved to the poison queue",
            log_id(event.id),
            log_id(event.visit_key),
            code,
        )
        self._failures.record_event(event, code=code)
        return Outcome("failed", event.id, code)

    def _unopenable(self, event: VisitEvent, what: str) -> Outcome:
        logger.error(
            "Event %s for visit %s: %s cannot be opened (tampered with, or sealed under a key no longer in "
            "SEALING_KEYS); failed permanently, moved to the poison queue",
            log_id(event.id),
            log_id(event.visit_key),
            what,
        )
        self._failures.record_event(event, code=SealedValueInvalid.code)
        return Outcome("failed", event.id, SealedValueInvalid.code)


def _is_sealed_invalid(body: str) -> bool:
    """An unparseable body this log sealed before (replayed and refused again): kept as it is."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and set(data) == {"invalid"} and isinstance(data["invalid"], str)


def _with_visit_context(event: VisitEvent, visit: Visit) -> VisitEvent:
    """Fill the EHR references a Graph event cannot know from the visit's launch context (ids only)."""
    context = visit.context
    participant = event.participant
    if participant is None:
        participant = {Role.PROVIDER: context.provider, Role.PATIENT: context.patient}.get(event.role)
    return event.with_context(
        participant=participant,
        csn=event.csn or context.csn,
        appointment=event.appointment or context.appointment,
        encounter=event.encounter or context.encounter,
    )
