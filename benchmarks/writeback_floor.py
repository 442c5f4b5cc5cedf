"""The floor of one writeback event: the work no event can avoid, done with the same libraries, in a process of its own.

    python -m benchmarks.writeback_floor --queue NAME --spec FLOOR_SPEC_JSON [--concurrency 24]

Run by ``benchmarks.writeback`` as a child process with the app's settings in its environment, kept up during the
run so that it is measured in short rounds beside the host's (the CPU a given piece of work costs on this shared
machine moves by up to ~1.7x from one ten seconds to the next: each round of the host's events is compared with the
floors measured beside it). Per event:

* the queue message: received in batches of 16 (production host.json ``batchSize``), invisible for 10 minutes as
  the host's listener asks, and deleted, with azure-storage-queue (the local host's listener does the same in the
  host process);
* one Table point read of the visit row and one etag-guarded Table update of it (its presence);
* the EHR call through the checked transport with the Backend Services token kept (``BackendServices``):
  Epic's ``SetExternalConnectionStatus`` GET, or a FHIR ``AuditEvent`` conditional-create POST;
* for Epic only, the ledger's claim and done mark: one conditional Table create and one etag-guarded Table
  update of a small row, in a partition per visit as the app's. ``SetExternalConnectionStatus`` has no
  idempotency key, so without them a redelivered message (at least once, whatever the queue) calls Epic twice:
  for a non-idempotent adapter they are part of the unavoidable work (README "Performance and cost"). An
  idempotent adapter (AuditEvent) has none;
* for Epic only, on an event whose message says so (``MEETING_ENDED``: as many as the host's events ended a
  meeting), the ledger's "is anything of this visit pending?" partition query (``shared.writeback.ledger``'s).
  With a ledger, a visit's sealed context may go once its meeting has ended only when none of its events is
  pending (the privacy promise: removed when the meeting has ended and its writebacks are done), and the ledger
  is the only record that can say so: the meeting's end costs this one query.

After a warm-up it prints ``{"ready": true}`` and answers each line on stdin with one JSON line:

* ``events N C``: N events, C at once (``C`` 1: one at a time, in the main thread; or ``--concurrency``: on as
  many threads, each on a visit row of its own, as the host runs the messages it has in flight), each event's
  steps in the worker's order (receive; read the visit; for Epic, claim; the EHR call; for Epic, the done mark
  and, at a meeting's end, the pending query; write the presence; delete the message): CPU milliseconds per
  event in total (``time.process_time``), each step's share (``time.thread_time`` around it) and the process's
  user and system CPU, page faults and context switches;
* ``tight N``: each step alone, N times in a row: warmer than any event finds it (between an event's steps other
  work runs and the EHR keeps the thread waiting, 50 ms in ``benchmarks.writeback``);
* ``quit``.

The queue must hold a message for every event and every ``tight`` run asked for (the warm-up takes
3 + ``--concurrency``).

The same steps but the queue's (``FloorSteps.event_in_host``) are also the function of a second local host
(``benchmarks.host_process --writeback-floor``): the floor ``benchmarks.writeback``'s ratio is against, the host
receiving, dispatching and deleting each message there as it does the app's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from azure.data.tables import TableEntity
    from azure.storage.queue import QueueMessage

BATCH = 16
VISIBILITY = 600  # seconds: as the local host's listener receives (its PROCESSING_VISIBILITY)
QUEUE, VISIT = "queue receive + delete", "visit read + presence write"
EHR, LEDGER, ENDED = "EHR call", "ledger claim + done mark", "meeting-end pending query"
MEETING_ENDED = "floorMeetingEnded"  # a floor message's flag: its event ends its visit's meeting (Epic: the query)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class FloorSpec:
    """What the floor's steps work on: a visit row to copy, the EHR and its client, the writeback mode."""

    geography: str
    partition_key: str
    row_key: str
    fhir: str
    client_id: str
    mode: str  # epic | fhir-auditevent
    csn: str
    external_id: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FloorSpec:
        return cls(**json.loads(text))


class FloorSteps:
    """The unavoidable steps of one writeback event, with the app's own clients and settings (environment).

    Each thread that runs them works on a visit row of its own (a copy of the given one, made here for up to
    ``threads`` threads), so concurrent events never race for one etag, nor with the host's events."""

    def __init__(self, spec: FloorSpec, *, threads: int, queue_name: str | None = None) -> None:
        from shared.ehr.backend_services import BackendServices
        from shared.ehr.smart import smart_client_for
        from shared.http.outbound import SafeHttp, outbound_policy
        from shared.kernel.settings import Geography, get_settings
        from shared.storage.accounts import Storage

        settings = get_settings()
        storage = Storage(settings)
        self.spec = spec
        self.epic = spec.mode == "epic"
        self._queue = storage.app.queue(queue_name) if queue_name else None
        self._table = storage.for_geography(Geography(spec.geography)).table("Visits")
        self._ledger = storage.for_geography(Geography(spec.geography)).table(f"FloorLedger{uuid.uuid4().hex[:12]}")
        self._http = SafeHttp(outbound_policy(settings))
        self._backend = BackendServices(smart_client_for(settings))
        self._scope = "system/Encounter.write" if self.epic else "system/AuditEvent.write"
        self._received: list[QueueMessage] = []
        self._lock = threading.Lock()
        self._mine = threading.local()
        original = self._table.get_entity(spec.partition_key, spec.row_key)
        self._rows = [f"{spec.row_key}-floor-{uuid.uuid4().hex[:6]}-{n}" for n in range(threads)]
        for row_key in self._rows:
            self._table.upsert_entity({**original, "RowKey": row_key})
        self._assigned: Iterator[str] = iter(self._rows)
        self.failures: list[str] = []  # the EHR calls that failed (a floor with any is not comparable)

    def close(self) -> None:
        self._ledger.delete_table()
        for row_key in self._rows:
            self._table.delete_entity(self.spec.partition_key, row_key)

    def take_failures(self) -> list[str]:
        with self._lock:
            failures, self.failures = self.failures, []
        return failures

    # --- the queue: in the floor's own process only (in a host, the host receives and deletes) ---------------
    def receive(self) -> QueueMessage:
        assert self._queue is not None, "these steps were made without a queue"
        with self._lock:
            if not self._received:
                self._received.extend(
                    self._queue.receive_messages(
                        messages_per_page=BATCH, max_messages=BATCH, visibility_timeout=VISIBILITY
                    )
                )
            if not self._received:  # an empty receive would make the floor look cheaper than an event is
                raise SystemExit("the floor's queue ran out of messages: fill it with more")
            return self._received.pop()

    def delete(self, message: QueueMessage) -> None:
        assert self._queue is not None, "these steps were made without a queue"
        self._queue.delete_message(message)

    # --- the visit row --------------------------------------------------------------------------------------
    def read_visit(self) -> TableEntity:
        if not hasattr(self._mine, "row"):
            with self._lock:
                self._mine.row = next(self._assigned)  # StopIteration: more threads than rows were made for
        return self._table.get_entity(self.spec.partition_key, self._mine.row)

    def write_presence(self, row: TableEntity) -> None:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        row["FloorAt"] = time.time()
        self._table.update_entity(
            row, mode=UpdateMode.REPLACE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )

    # --- the EHR call ---------------------------------------------------------------------------------------
    def ehr_call(self) -> None:
        call = self._epic if self.epic else self._audit_event
        try:
            self._backend.send(self.spec.fhir, self.spec.client_id, self._scope, call)
        except Exception as exc:  # noqa: BLE001 - the floor counts the call's CPU, whatever the EHR answers
            with self._lock:
                self.failures.append(type(exc).__name__)

    def _epic(self, token: str) -> Any:
        from shared.ehr.epic_writeback import PATH, interconnect_base

        params = {"ConferenceID": self.spec.csn, "ExternalID": self.spec.external_id, "ExternalIDType": "1",
                  "VendorName": "Microsoft Teams", "ConnectionStatus": "1"}  # fmt: skip
        headers = {
            "Authorization": f"Bearer {token}",
            "Epic-Client-ID": self.spec.client_id,
            "Accept": "application/json",
        }
        return self._http.request("GET", interconnect_base(self.spec.fhir) + PATH, params=params, headers=headers)

    def _audit_event(self, token: str) -> Any:
        tag = uuid.uuid4().hex
        body = json.dumps(
            {
                "resourceType": "AuditEvent",
                "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
                "recorded": "2026-11-25T15:00:00Z",
                "agent": [{"who": {"reference": f"Practitioner/{self.spec.external_id}"}, "requestor": True}],
                "source": {"observer": {"display": "Microsoft Teams"}},
                "meta": {"tag": [{"system": "urn:floor", "code": tag}]},
            }
        )
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/fhir+json",
            "If-None-Exist": f"_tag=urn:floor|{tag}",
            "Epic-Client-ID": self.spec.client_id,
            "Prefer": "return=minimal",
        }
        url = f"{self.spec.fhir}/AuditEvent"
        return self._http.post_json(url, body, content_type="application/fhir+json", headers=headers)

    # --- the ledger (Epic only) -----------------------------------------------------------------------------
    def claim(self, visit_key: str) -> tuple[dict[str, object], str]:
        from shared.storage.accounts import insert_row

        entity: dict[str, object] = {"PartitionKey": visit_key, "RowKey": uuid.uuid4().hex}
        entity.update({"State": "claimed", "Attempt": 1})
        return entity, str(insert_row(self._ledger, entity)["etag"])

    def mark_done(self, claimed: tuple[dict[str, object], str]) -> None:
        from azure.core import MatchConditions
        from azure.data.tables import UpdateMode

        entity, etag = claimed
        entity["State"] = "done"
        self._ledger.update_entity(
            entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
        )

    def pending_query(self, visit_key: str) -> bool:
        """The app's query for a visit's pending rows (its filter and columns), answered as the app reads it."""
        from shared.writeback.ledger import PENDING_COLUMNS, PENDING_FILTER, pending_parameters

        rows = self._ledger.query_entities(
            PENDING_FILTER, parameters=pending_parameters(visit_key), select=PENDING_COLUMNS
        )
        return any(row["State"] for row in rows)

    # --- an event -------------------------------------------------------------------------------------------
    def event_in_host(self, body: str) -> None:
        """One event's unavoidable work as a host's queue function does it (the host receives and deletes):
        the message's JSON parsed, the visit read, for Epic the claim, the EHR call, the done mark and, at a
        meeting's end, the pending query; presence."""
        visit_key, ended = message_facts(body)
        row = self.read_visit()
        claimed = self.claim(visit_key) if self.epic else None
        self.ehr_call()
        if claimed is not None:
            self.mark_done(claimed)
            if ended:
                self.pending_query(visit_key)
        self.write_presence(row)


def message_facts(body: str) -> tuple[str, bool]:
    """A floor message's visit key and whether its event ends the meeting (``MEETING_ENDED``)."""
    data = json.loads(body)
    return str(data["visitKey"]), bool(data.get(MEETING_ENDED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writeback_floor")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--spec", required=True, help="a FloorSpec as JSON")
    parser.add_argument("--concurrency", type=int, default=24, help="the most events ``events`` runs at once")
    args = parser.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    from benchmarks.host_process import usage, usage_per

    steps = FloorSteps(FloorSpec.from_json(args.spec), threads=args.concurrency + 1, queue_name=args.queue)
    spent: dict[str, float] = {}
    spent_lock = threading.Lock()

    def timed(label: str, step: Callable[..., T], *step_args: Any) -> T:
        started = time.thread_time()
        try:
            return step(*step_args)
        finally:
            used = time.thread_time() - started
            with spent_lock:
                spent[label] = spent.get(label, 0.0) + used

    def one_event() -> None:
        """One event's unavoidable work, in the order the worker does it."""
        message = timed(QUEUE, steps.receive)
        visit_key, ended = timed(QUEUE, message_facts, message.content)
        row = timed(VISIT, steps.read_visit)
        claimed = timed(LEDGER, steps.claim, visit_key) if steps.epic else None
        timed(EHR, steps.ehr_call)
        if claimed is not None:
            timed(LEDGER, steps.mark_done, claimed)
            if ended:
                timed(ENDED, steps.pending_query, visit_key)
        timed(VISIT, steps.write_presence, row)
        timed(QUEUE, steps.delete, message)

    # Each step alone, run many times in a row: warmer than any event runs it (for information).
    tight: dict[str, Callable[[], object]] = {
        QUEUE: lambda: steps.delete(steps.receive()),
        VISIT: lambda: steps.write_presence(steps.read_visit()),
        EHR: steps.ehr_call,
    }
    if steps.epic:
        tight[LEDGER] = lambda: steps.mark_done(steps.claim(steps.spec.row_key))
        tight[ENDED] = lambda: steps.pending_query(steps.spec.row_key)

    def events(pool: ThreadPoolExecutor, runs: int, concurrency: int) -> dict[str, object]:
        spent.clear()
        steps.take_failures()  # a warm-up's or an earlier command's are not this one's
        used_before = usage()
        started = time.process_time()
        if concurrency == 1:
            for _ in range(runs):
                one_event()
        else:
            list(pool.map(lambda _: one_event(), range(runs)))
        total = (time.process_time() - started) / runs * 1000
        resources = usage_per(used_before, usage(), runs)
        figures = {label: used / runs * 1000 for label, used in spent.items()}
        failures = steps.take_failures()[:3]
        return {"runs": runs, "total_ms": total, "steps_ms": figures, "usage": resources, "failures": failures}

    def tight_steps(runs: int) -> dict[str, object]:
        figures: dict[str, float] = {}
        for label, step in tight.items():
            started = time.process_time()
            for _ in range(runs):
                step()
            figures[label] = (time.process_time() - started) / runs * 1000
        # Per event: each step once, but the meeting-end query, which only a meeting's end asks (the caller adds it
        # at the rate the host's events end meetings).
        total = sum(ms for label, ms in figures.items() if label != ENDED)
        return {"runs": runs, "tight_steps_ms": figures, "tight_total_ms": total}

    modes = {1, args.concurrency}  # one at a time, or on every thread of the pool (its threads stay warm)
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="floor") as pool:
            for _ in range(3):  # warm-up: connections, the Backend Services token
                one_event()
            list(pool.map(lambda _: one_event(), range(args.concurrency)))  # each thread's connections too
            print(json.dumps({"ready": True}), flush=True)
            for line in sys.stdin:
                command = line.split()
                numbers = [int(word) for word in command[1:] if word.isdigit() and int(word) >= 1]
                if command[:1] == ["quit"]:
                    break
                if command[:1] == ["events"] and len(numbers) == 2 == len(command) - 1 and numbers[1] in modes:
                    answer = events(pool, numbers[0], numbers[1])
                elif command[:1] == ["tight"] and len(numbers) == 1 == len(command) - 1:
                    answer = tight_steps(numbers[0])
                else:
                    answer = {"error": f"unknown command {line.strip()!r}"}
                print(json.dumps(answer), flush=True)
    finally:
        steps.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
