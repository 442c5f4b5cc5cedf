"""The writeback queue worker: at-least-once delivery in, an EHR effect per event out.

For one queue message, when the adapter needs the ledger (Epic's SetExternalConnectionStatus: Table
operations in the normal case: 4)::

    parse ──invalid──▶ failure row + copy to <queue>-poison, complete
      │
    read the visit row (1) ──gone──▶ failure row + poison, complete
      │
    the adapter skips it (a launch, lobby or staff event for Epic) ──▶ presence (2), complete
      │
    claim the event in the ledger: create-if-absent (2) ──done──▶ presence, complete (duplicate)
      │                                                  └─live claim elsewhere──▶ raise (retry later)
    adapter call (retried inline a few times; Retry-After honoured up to a cap)
      │  retryable failure ──▶ release the claim (pending, claimable at once), raise: retried, then poisoned
      │  permanent failure ──▶ mark failed (no longer pending), failure row + poison, presence, complete
    mark done: one etag-guarded write, the first thing after the EHR's answer (3)
    presence on the visit row, "newer fact wins", queued per visit in this process (4; none for an older fact);
      once the meeting has ended, the context's release rides in this write (after one ledger query: nothing
      pending), so an older fact may still write it

When the adapter is idempotent (FHIR AuditEvent, a conditional create on the event's tag) or skips the
event, there is nothing for a claim to guard: a repeated delivery repeats a call that has the effect of one.
Such an event costs **2** Table operations: the visit read (1) and its presence write (2). Its retries then
need no ledger row to keep the visit's context either: in those modes the context is kept until
``RETRY_SPAN`` after the meeting ended (longer than the queue's retries last, ``is_pending`` below), then
released by the next event or the upkeep timer's scan — never a query per event.

Events carry no EHR identifier in clear (``shared.visits.events``): a launch event's sealed references are
opened here, a Graph event's come from the visit's sealed context; a value that does not open (tampered
with, or sealed under a retired key) is a permanent failure. After an event is done the visit's context
is released once its meeting has ended and no event of the visit is pending (in the ledger: claimed, or
released for its retry; ``shared.visits.lifetime``). Poison messages and ``WritebackFailures`` rows hold
no clear identifier and expire after 7 days.

A claim is a lease (``shared.writeback.ledger``): a worker that dies between claim and done leaves a claim
that expires, so the redelivered message can claim again. The EHR effect is therefore at least once, and
repeated only when the EHR has acted but its done mark is not stored: the worker died after sending the
request and before (3) (the EHR may act on a request whose sender is already dead), or (3) kept failing
for ``DONE_MARK_PATIENCE``, or the call failed on our side (a timeout) after the EHR had acted, or it
outlived the lease while a duplicate delivery took over. AuditEvents close that window by their conditional
create; Epic's SetExternalConnectionStatus has no idempotency key, so there it stays: the EHR call itself
plus one Table write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
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
    StorageUnavailable,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamUnavailable,
)
from shared.kernel.identifiers import log_id
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.storage.accounts import StorageAccount, insert_row, storage_errors
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.lifetime import log_release, meeting_ended, release_context_when_done, release_when_done
from shared.visits.members import GroupMembers
from shared.visits.model import Colleague, Visit, compose, has_context, with_launch_context
from shared.visits.presence import PresenceRecorder
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event, seal_event
from shared.writeback.ledger import RETRY_SPAN, Claim, WritebackLedger
from shared.writeback.model import WritebackAdapter, WritebackTarget, Written, is_idempotent, skips

logger = logging.getLogger(__name__)

FAILURES_TABLE = "WritebackFailures"
# How long a done mark is retried through storage failures (well within the claim's 60 s lease): the EHR has
# acted, so every second spent here is better than the repeated call that giving up would cause.
DONE_MARK_PATIENCE = 20.0
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
    # The event's usage-report facts are on a visit row (folded into its presence write), or belong to no visit
    # the queued body names (a group's fact): a failed event's facts are recorded from its body only when False.
    facts_kept: bool = False


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
                insert_row(
                    self._account.table(FAILURES_TABLE),
                    {
                        "PartitionKey": now.strftime("%Y-%m-%d"),
                        "RowKey": row_key,
                        "Code": code,
                        "Configuration": log_id(configuration_id) if configuration_id else "",
                        "At": now,
                        "ExpiresAt": now + FAILURE_LIFETIME,
                    },
                )


@dataclass(frozen=True)
class RetryPolicy:
    """Inline retries of one adapter call before handing the message back to the queue."""

    attempts: int = 3
    base_delay: float = 0.2
    max_retry_after: float = 2.0  # a longer Retry-After goes back to the queue instead of blocking a worker


class WritebackWorker:
    def __init__(
        self,
        visits: VisitRepository,
        ledger: WritebackLedger,
        resolver: TargetResolver,
        adapters: Mapping[WritebackMode, WritebackAdapter],
        failures: FailureLog,
        *,
        sealer: Sealer,
        members: GroupMembers,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        report: Callable[[VisitEvent], Callable[[Visit], Visit | None] | None] | None = None,
    ) -> None:
        self._visits = visits
        self._ledger = ledger
        self._presence = PresenceRecorder(visits)
        self._resolver = resolver
        self._adapters = adapters
        self._failures = failures
        self._sealer = sealer
        self._members = members
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        # The usage report's facts of an event, folded into the presence write (``shared.reports.fold``).
        self._report = report

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
        if visit.is_group:
            return self._group_fact(visit, event)
        if visit.in_group and visit.group_key and (clinician := _launched_by(event)) is not None:
            # A clinician's launch in a group ties their Teams account to their visit (the launch did too; this
            # repairs a tie that failed there).
            group = self._visits.get(visit.geography, visit.group_key)
            if group is not None and group.is_group:
                self._members.tie(self._visits, group, visit.key, clinician.hint)
        return self._write(queued, event, visit)

    def _group_fact(self, group: Visit, event: VisitEvent) -> Outcome:
        """A group meeting's Teams fact: onto the group's panel, then written for the participant's own visit.

        The group's row is nobody's CSN. A call leg tied to a member's visit (``shared.visits.members``: a patient's
        visit number in their Teams name, a clinician's mapped account) is that member's: its fact is handled as
        a fact of their own visit, with their own claim, context and writeback. Untied call legs (a name without
        the number, an interpreter) are written for nobody.
        """
        seen = group.attendees.get(event.attendee) if event.attendee else None
        newly_tied = seen is None or seen.member is None
        member_key = seen.member if seen is not None and seen.member else self._member_of(group, event)
        member = self._visits.get(group.geography, member_key) if member_key else None
        if member is not None and member.group_key != group.key:
            member = None  # a visit that left this group meanwhile (another conference id) is not this one's
        colleague = _colleague(event, member) if member is not None else None
        group = self._presence.record(
            group,
            event.role,
            event.kind,
            event.occurred_at,
            source=event.source,
            attendee=event.attendee,
            interpreter=event.interpreter or bool(colleague and colleague.interpreter),
            member=member.key if member is not None else None,
        )
        if event.role is not Role.PATIENT and not (event.interpreter or (colleague and colleague.interpreter)):
            self._report_to_members(group, event, besides=member.key if member is not None else None)
        if member is None:
            launch = event.source is Source.LAUNCH
            return Outcome("skipped", event.id, visit=group, source_is_launch=launch, facts_kept=True)
        if event.role is Role.PATIENT and newly_tied:
            member = self._with_clinicians_so_far(group, member, event)
        own = replace(event, visit_key=member.key, id="")  # its own id: a fact of the member's visit
        return replace(self._write(own, own, member), facts_kept=True)  # the body names the group: not a visit

    def _with_clinicians_so_far(self, group: Visit, member: Visit, event: VisitEvent) -> Visit:
        """A patient's call just tied to their visit: the report facts of the clinicians already in the group's
        meeting go into it too (only later clinician facts would otherwise reach it). From the group row's
        roster: when each was first seen, and when they left if they have. Once per tie; merging is idempotent."""
        if self._report is None:
            return member
        changes = []
        for leg, clinician in group.attendees.items():
            if clinician.role is Role.PATIENT or clinician.interpreter:
                continue
            facts = [(EventKind.CONNECTED, clinician.first_seen)]
            if clinician.entry.state is EventKind.DISCONNECTED:
                facts.append((EventKind.DISCONNECTED, clinician.entry.since))
            for kind, at in facts:
                fact = replace(
                    event, visit_key=member.key, role=clinician.role, kind=kind, occurred_at=at, attendee=leg
                )
                change = self._report(replace(fact, id="", member_hint=None))
                if change is None:
                    return member  # analytics off
                changes.append(change)
        return self._visits.update(member, compose(*changes)) if changes else member

    def _report_to_members(self, group: Visit, event: VisitEvent, *, besides: str | None) -> None:
        """A group's clinicians see every patient: their presence goes into each member visit's usage report facts
        (the report's rows are per visit, i.e. per CSN), not into anyone's writeback. The member whose visit the
        clinician launched gets it through its own write."""
        if self._report is None:
            return
        for member_key in sorted(set(group.members.values()) - {besides}):
            change = self._report(replace(event, visit_key=member_key, id=""))
            if change is None:
                return  # analytics off (or the fact older than the report keeps): the same for every member
            row = self._visits.get(group.geography, member_key)
            if row is not None and row.group_key == group.key:
                self._visits.update(row, change)

    def _member_of(self, group: Visit, event: VisitEvent) -> str | None:
        """The member visit a call not yet tied names by its hint (a visit number, a clinician's account)."""
        if event.source is not Source.GRAPH or event.interpreter:
            return None
        member = self._members.member(group.members, group.key, event.member_hint)
        if member is not None and event.role is Role.PATIENT and _number_in_use(group, member, event.attendee):
            # Another call that gave this number is still in the meeting: a second one naming it (someone who
            # read it in the roster) ties nothing; a patient who comes back after leaving is tied again.
            logger.warning("Group %s: a second call gave a visit number in use; written for nobody", log_id(group.key))
            return None
        return member

    def _write(self, queued: VisitEvent, event: VisitEvent, visit: Visit) -> Outcome:
        geography = visit.geography
        launch = event.source is Source.LAUNCH
        # The visit's context names what the event does not: a Graph event names no visit reference (and a sealed
        # event may name only its participant). Without that context the event waits (ContextMissing), never fails.
        needs_visit_context = not (event.csn or event.appointment or event.encounter)
        if needs_visit_context and visit.unreadable_context is not None:
            return self._unopenable(queued, "the visit's sealed context")
        event = _with_visit_context(event, visit)
        try:
            target = self._resolver.target_for(event.configuration_id)
        except NotFound:
            return self._fail(queued, "configuration_gone")
        # A launch's references fill (or restore) the visit's context, in the same write as its presence.
        # Sealed: from a launch the EHR confirmed; a legacy event's clear references are not.
        also = (
            with_launch_context(
                event.role, event.references, confirmed=bool(queued.sealed), colleague=_launched_by(event)
            )
            if launch
            else None
        )
        report = self._report(event) if self._report is not None else None
        if report is not None:
            also = report if also is None else compose(also, report)
        adapter = self._adapters[target.mode]
        context_missing = needs_visit_context and not has_context(visit)
        if target.mode is WritebackMode.NONE or (not context_missing and skips(adapter, event)):
            visit = self._record_and_release(visit, event, also, mode=target.mode)
            return Outcome("skipped", event.id, visit=visit, source_is_launch=launch)
        if is_idempotent(adapter):
            return self._write_idempotent(adapter, queued, event, visit, target, also, launch=launch)
        try:
            claim = self._ledger.claim(geography, visit.key, event.id, expires_at=visit.expires_at)
        except AlreadyWritten:
            logger.info("Event %s already written; duplicate delivery completed", log_id(event.id))
            # The first delivery may have died before its presence and the context's release.
            visit = self._record_and_release(visit, event, also, mode=target.mode)
            return Outcome("duplicate", event.id, visit=visit, source_is_launch=launch)
        except ClaimedElsewhere:
            raise ClaimHeld("Another worker holds this event's claim.") from None
        if context_missing:
            # Released after the meeting ended (someone rejoined without launching again): keep the presence,
            # let the queue retry (a launch restores the context), then the poison queue keeps it for replay.
            logger.info(
                "Event %s: visit %s has no launch context (released); retry", log_id(event.id), log_id(visit.key)
            )
            self._ledger.release(claim)  # pending and claimable at once: the retry finds the context or not
            self._record_presence(visit, event, also)
            raise ContextMissing("The visit's launch context is not there; a launch restores it.")
        try:
            written = self._call(adapter, event, target)
        except UpstreamRejected as exc:
            self._ledger.mark_failed(claim)
            self._record_presence(visit, event, also)
            return replace(self._fail(queued, exc.code), facts_kept=True)
        except Exception as exc:
            # Retryable (UpstreamUnavailable / UpstreamThrottled) or unexpected: give the claim back, pending,
            # so the queue's retry may claim at once (rather than after the lease) and the context stays.
            code = exc.code if isinstance(exc, ConnectorError) else type(exc).__name__
            logger.info("Event %s: %s; the queue will retry", log_id(event.id), code)
            self._ledger.release(claim)
            self._keep_presence(visit, event, also)
            raise
        self._mark_done(claim)  # first: the window of a repeated EHR effect ends here
        visit = self._record_and_release(visit, event, also, mode=target.mode)
        logger.info("Event %s %s (%s, %s)", log_id(event.id), written.value, event.role.value, event.kind.value)
        return Outcome(written.value, event.id, visit=visit, source_is_launch=launch)

    def _write_idempotent(
        self,
        adapter: WritebackAdapter,
        queued: VisitEvent,
        event: VisitEvent,
        visit: Visit,
        target: WritebackTarget,
        also: Callable[[Visit], Visit | None] | None,
        *,
        launch: bool,
    ) -> Outcome:
        """An idempotent adapter's event: no claim, no done mark; the visit read and its presence write."""
        if not (event.csn or event.appointment or event.encounter) and not has_context(visit):
            logger.info(
                "Event %s: visit %s has no launch context (released); retry", log_id(event.id), log_id(visit.key)
            )
            self._record_presence(visit, event, also)
            raise ContextMissing("The visit's launch context is not there; a launch restores it.")
        try:
            written = self._call(adapter, event, target)
        except UpstreamRejected as exc:
            self._record_presence(visit, event, also)
            return replace(self._fail(queued, exc.code), facts_kept=True)
        except Exception as exc:
            code = exc.code if isinstance(exc, ConnectorError) else type(exc).__name__
            logger.info("Event %s: %s; the queue will retry", log_id(event.id), code)
            self._keep_presence(visit, event, also)
            raise
        visit = self._record_and_release(visit, event, also, mode=target.mode)
        logger.info("Event %s %s (%s, %s)", log_id(event.id), written.value, event.role.value, event.kind.value)
        return Outcome(written.value, event.id, visit=visit, source_is_launch=launch)

    def _mark_done(self, claim: Claim) -> None:
        """Store the done mark, holding on through a storage hiccup: giving up now means a repeated EHR call."""
        deadline = time.monotonic() + DONE_MARK_PATIENCE
        attempt = 0
        while True:
            try:
                self._ledger.mark_done(claim)
                return
            except StorageUnavailable:
                attempt += 1
                if time.monotonic() >= deadline:
                    raise
                logger.warning("Event %s: done mark not stored (attempt %d)", log_id(claim.event_id), attempt)
                self._sleep(min(2.0, self._retry.base_delay * 2**attempt))

    def _record_presence(
        self, visit: Visit, event: VisitEvent, also: Callable[[Visit], Visit | None] | None = None
    ) -> Visit:
        # A single visit keeps its further clinicians and a guest interpreter apart (the panel's "Clinician 2",
        # "Interpreter"); patients need no more than their role there, and each rejoin is a new call leg, so only
        # those call legs are kept. An interpreter's facts are not the patient's: the patient's row ignores them.
        graph = event.source is Source.GRAPH
        kept = graph and (event.role is Role.STAFF or event.interpreter)
        return self._presence.record(
            visit,
            event.role,
            event.kind,
            event.occurred_at,
            source=event.source,
            also=also,
            attendee=event.attendee if kept else None,
            interpreter=graph and event.interpreter,
            role_facts=not (graph and event.interpreter),
        )

    def _record_and_release(
        self,
        visit: Visit,
        event: VisitEvent,
        also: Callable[[Visit], Visit | None] | None,
        *,
        mode: WritebackMode,
    ) -> Visit:
        """The event's presence write, releasing the context in the same write when the meeting has ended and nothing
        of the visit is pending (``release_context_when_done``'s rule): the end costs one write, not two.

        The pending question is asked inside the write: storage failing to answer it counts as pending (logged),
        so the event's presence and report facts are stored all the same and the upkeep timer asks again."""
        if visit.in_group and visit.group_key:
            # A group visit's participant: the group's row says whether the meeting has ended; it is read, and the
            # context released, after this write (``release_context_when_done``).
            visit = self._record_presence(visit, event, also)
            return self.release_context_when_done(visit, mode=mode)
        asked, _ = self._pending(visit, mode)  # the visit's own row says whether its meeting has ended

        def pending(current: Visit) -> bool:
            try:
                return asked(current)
            except StorageUnavailable:
                logger.warning("Visit %s: the ledger did not answer; its context is kept for now", log_id(visit.key))
                return True

        release = release_when_done(pending)
        stored = self._record_presence(visit, event, release if also is None else compose(also, release))
        log_release(visit, stored)
        return stored

    def release_context_when_done(self, visit: Visit, *, mode: WritebackMode | None = None) -> Visit:
        """Release the launch context once the meeting has ended and none of the visit's events is pending.

        Folded into each event's presence write (``_record_and_release``; a group visit's participant: right after
        it), and called by the upkeep timer for every live visit (``shared.visits.subscriptions``): an event that
        stopped being pending without an event after it (poisoned) still ends the context.
        Pending: in the ledger when the configuration's adapter uses it; with no writeback, never; with an
        idempotent adapter, for ``RETRY_SPAN`` after the meeting ended (its retries keep no ledger rows).
        """
        pending, ended = self._pending(visit, mode)
        return release_context_when_done(self._visits, visit, pending=pending, ended=ended)

    def _pending(self, visit: Visit, mode: WritebackMode | None) -> tuple[Callable[[Visit], bool], bool | None]:
        """Whether an event of the visit is still pending (asked only once its meeting has ended), and whether the
        meeting has ended when another row says (a group visit's participant; None: the visit's own row)."""
        ended = None
        group: Visit | None = None
        if visit.in_group and visit.group_key and (has_context(visit) or visit.unreadable_context):
            # A group visit's participant: the group's row holds the Teams facts that say the meeting has ended.
            group = self._visits.get(visit.geography, visit.group_key)
            ended = group is None or meeting_ended(group)
        if mode is None:
            try:
                mode = self._resolver.target_for(visit.configuration_id).mode
            except NotFound:
                mode = None  # no approved configuration: ask the ledger, as for any adapter that uses it
        adapter = self._adapters.get(mode) if mode is not None else None
        if mode is WritebackMode.NONE:
            return _never, ended
        if adapter is not None and is_idempotent(adapter):
            now = self._ledger.now()
            return (lambda current: _within_retry_span(group or current, now)), ended
        return (lambda current: self._ledger.pending(current.geography, current.key)), ended

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

    def _keep_presence(self, visit: Visit, event: VisitEvent, also: Callable[[Visit], Visit | None] | None) -> None:
        """Before a retry: the Teams fact and its report facts are kept now (a newer fact wins, so writing it again
        on the retry changes nothing), so an EHR down for longer than the queue's retries loses neither. A storage
        failure here must not hide the EHR's, which the queue retries."""
        try:
            self._record_presence(visit, event, also)
        except Exception as exc:  # noqa: BLE001 - the original error is raised by the caller
            logger.warning("Event %s: presence not kept before the retry (%s)", log_id(event.id), type(exc).__name__)

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


def _never(visit: Visit) -> bool:
    return False


def _within_retry_span(visit: Visit, now: datetime) -> bool:
    """The meeting ended less than ``RETRY_SPAN`` ago: an idempotent event's retry may still need the context."""
    ended_at = max((p.at for p in visit.presence.values()), default=None)
    return ended_at is not None and now - ended_at < RETRY_SPAN


def _is_sealed_invalid(body: str) -> bool:
    """An unparseable body this log sealed before (replayed and refused again): kept as it is."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and set(data) == {"invalid"} and isinstance(data["invalid"], str)


def _number_in_use(group: Visit, member: str, attendee: str | None) -> bool:
    """Another patient call tied to ``member`` is still in the lobby or the meeting."""
    return any(
        key != attendee
        and a.member == member
        and a.role is Role.PATIENT
        and a.entry.state is not EventKind.DISCONNECTED
        for key, a in group.attendees.items()
    )


def _launched_by(event: VisitEvent) -> Colleague | None:
    """A clinician's launch event names them by their Teams account too: a relaunch restores them (their entry
    goes with the context once the meeting has ended)."""
    if event.role is not Role.PROVIDER or not event.member_hint or not event.participant:
        return None
    return Colleague(event.member_hint, event.participant, event.interpreter)


def _colleague(event: VisitEvent, visit: Visit) -> Colleague | None:
    """The clinician a Graph fact of a tenant user names, if they launched this visit."""
    if event.source is not Source.GRAPH or event.role is Role.PATIENT:
        return None
    return visit.context.colleague(event.member_hint)


def _with_visit_context(event: VisitEvent, visit: Visit) -> VisitEvent:
    """Fill the EHR references a Graph event cannot know from the visit's launch context (ids only)."""
    context = visit.context
    participant = event.participant
    interpreter = event.interpreter
    colleague = _colleague(event, visit)
    if colleague is not None:
        # A clinician Teams names by the account their launch was mapped to: themselves, whoever organizes
        # (Teams' role stays: the organizer is the provider on the panel, the others colleagues).
        interpreter = colleague.interpreter
        participant = colleague.reference
    elif participant is None and not event.interpreter:  # a guest interpreter is not the visit's patient
        participant = {Role.PROVIDER: context.provider, Role.PATIENT: context.patient}.get(event.role)
        if event.role is Role.PROVIDER and event.source is Source.GRAPH and context.colleagues:
            # The organizer never launched this visit (another clinician did, and the appointment's primary
            # performer organizes): the visit's provider is someone else, so this names nobody.
            participant = None
    return event.with_context(
        participant=participant,
        interpreter=interpreter,
        csn=event.csn or context.csn,
        appointment=event.appointment or context.appointment,
        encounter=event.encounter or context.encounter,
    )
