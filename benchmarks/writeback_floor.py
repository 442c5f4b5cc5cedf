"""The floor of one writeback event: the work no event can avoid, done with the same libraries, in a fresh process.

    python -m benchmarks.writeback_floor --queue NAME --visit GEOGRAPHY PK RK --fhir URL --client-id ID
        --mode epic|fhir-auditevent --call-args CSN EXTERNAL_ID [--runs 200]

Run by ``benchmarks.writeback`` as a child process with the app's settings in its environment. Per event:

* the queue message: received in batches of 16 (production host.json ``batchSize``) and deleted, with
  azure-storage-queue (the local host's queue listener does the same in the host process);
* one Table point read of the visit row and one etag-guarded Table update of it (its presence);
* the EHR call through the checked transport with the Backend Services token kept (``BackendServices``):
  Epic's ``SetExternalConnectionStatus`` GET, or a FHIR ``AuditEvent`` conditional-create POST;
* for Epic only, the ledger's claim and done mark: one conditional Table create and one etag-guarded Table
  update of a small row. ``SetExternalConnectionStatus`` has no idempotency key, so without them a redelivered
  message (at least once, whatever the queue) calls Epic twice: for a non-idempotent adapter they are part of
  the unavoidable work (README "Performance and cost"). An idempotent adapter (AuditEvent) has none.

Its figure is **one event at a time, its steps in the worker's order** (receive; read the visit; for Epic, claim;
the EHR call; for Epic, the done mark; write the presence; delete the message), as every event runs them: between
an event's steps other work runs and the EHR keeps the thread waiting (50 ms in ``benchmarks.writeback``), so no
step finds the caches as warm as when it repeats back to back. Each step alone, run ``--runs`` times in a row, is
printed too (``tight_steps_ms``, ``tight_total_ms``): warmer than any event finds them (in one process, one
event at a time, the app's own Visits read cost 0.56 ms in such a loop and 0.75 ms within events; README
"Performance and cost"). ``benchmarks.writeback`` takes the lowest of these figures and the next as the floor.

Prints one JSON line: CPU milliseconds per event in total (``time.process_time``, after a warm-up), each step's
share (``time.thread_time`` around it) and the back-to-back figures.

``--concurrency N`` (default 1: one event at a time) runs N events at once on as many threads, each on a visit row
of its own, as the host runs its messages in flight (production host.json: 24): what the same events cost when
that many share the process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

BATCH = 16
QUEUE, VISIT = "queue receive + delete", "visit read + presence write"
EHR, LEDGER = "EHR call", "ledger claim + done mark"
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writeback_floor")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--visit", nargs=3, metavar=("GEOGRAPHY", "PK", "RK"), required=True)
    parser.add_argument("--fhir", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--mode", choices=("epic", "fhir-auditevent"), required=True)
    parser.add_argument("--call-args", nargs=2, metavar=("CSN", "EXTERNAL_ID"), required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1, help="events run at once, each on a thread")
    args = parser.parse_args(argv)
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from azure.core import MatchConditions
    from azure.data.tables import TableEntity, UpdateMode
    from azure.storage.queue import QueueMessage

    from benchmarks.host_process import usage, usage_per
    from shared.ehr.backend_services import BackendServices
    from shared.ehr.epic_writeback import PATH, interconnect_base
    from shared.ehr.smart import smart_client_for
    from shared.http.outbound import HttpResult, SafeHttp, outbound_policy
    from shared.kernel.settings import Geography, get_settings
    from shared.storage.accounts import Storage, insert_row

    settings = get_settings()
    storage = Storage(settings)
    queue = storage.app.queue(args.queue)
    table = storage.for_geography(Geography(args.visit[0])).table("Visits")
    http = SafeHttp(outbound_policy(settings))
    backend = BackendServices(smart_client_for(settings))
    csn, external_id = args.call_args
    scope = "system/Encounter.write" if args.mode == "epic" else "system/AuditEvent.write"

    def epic(token: str) -> HttpResult:
        params = {"ConferenceID": csn, "ExternalID": external_id, "ExternalIDType": "1",
                  "VendorName": "Microsoft Teams", "ConnectionStatus": "1"}  # fmt: skip
        headers = {"Authorization": f"Bearer {token}", "Epic-Client-ID": args.client_id, "Accept": "application/json"}
        return http.request("GET", interconnect_base(args.fhir) + PATH, params=params, headers=headers)

    def audit_event(token: str) -> HttpResult:
        tag = uuid.uuid4().hex
        body = json.dumps(
            {
                "resourceType": "AuditEvent",
                "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
                "recorded": "2026-11-25T15:00:00Z",
                "agent": [{"who": {"reference": f"Practitioner/{external_id}"}, "requestor": True}],
                "source": {"observer": {"display": "Microsoft Teams"}},
                "meta": {"tag": [{"system": "urn:floor", "code": tag}]},
            }
        )
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/fhir+json",
            "If-None-Exist": f"_tag=urn:floor|{tag}",
            "Epic-Client-ID": args.client_id,
            "Prefer": "return=minimal",
        }
        return http.post_json(f"{args.fhir}/AuditEvent", body, content_type="application/fhir+json", headers=headers)

    call = epic if args.mode == "epic" else audit_event
    received: list[QueueMessage] = []
    receiving = threading.Lock()

    def receive() -> QueueMessage:
        with receiving:
            if not received:
                received.extend(queue.receive_messages(messages_per_page=BATCH, max_messages=BATCH))
            if not received:  # an empty receive would make the floor look cheaper than an event is
                raise SystemExit("the floor's queue ran out of messages: fill it with more")
            return received.pop()

    def delete(message: QueueMessage) -> None:
        queue.delete_message(message)

    # One visit row per thread (copies of the given one), so concurrent events never race for one etag.
    original = table.get_entity(args.visit[1], args.visit[2])
    rows = [args.visit[2]] + [f"{args.visit[2]}-floor-{n}" for n in range(1, args.concurrency + 1)]  # + main
    for row_key in rows[1:]:
        table.upsert_entity({**original, "RowKey": row_key})
    mine = threading.local()
    assigned = iter(rows)

    def read_visit() -> TableEntity:
        if not hasattr(mine, "row"):
            with receiving:
                mine.row = next(assigned)
        return table.get_entity(args.visit[1], mine.row)

    def write_presence(row: TableEntity) -> None:
        row["FloorAt"] = time.time()
        table.update_entity(
            row, mode=UpdateMode.REPLACE, etag=row.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )

    def ehr_call() -> None:
        try:
            backend.send(args.fhir, args.client_id, scope, call)
        except Exception as exc:  # noqa: BLE001 - the floor counts the call's CPU, whatever the EHR answers
            failures.append(type(exc).__name__)

    ledger = storage.for_geography(Geography(args.visit[0])).table(f"FloorLedger{uuid.uuid4().hex[:12]}")

    def claim() -> tuple[dict[str, object], str]:
        entity: dict[str, object] = {"PartitionKey": args.visit[1], "RowKey": uuid.uuid4().hex}
        entity.update({"State": "claimed", "Attempt": 1})
        return entity, str(insert_row(ledger, entity)["etag"])

    def mark_done(claimed: tuple[dict[str, object], str]) -> None:
        entity, etag = claimed
        entity["State"] = "done"
        ledger.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)

    failures: list[str] = []
    epic_mode = args.mode == "epic"
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
        message = timed(QUEUE, receive)
        row = timed(VISIT, read_visit)
        claimed = timed(LEDGER, claim) if epic_mode else None
        timed(EHR, ehr_call)
        if claimed is not None:
            timed(LEDGER, mark_done, claimed)
        timed(VISIT, write_presence, row)
        timed(QUEUE, delete, message)

    # Each step alone, run many times in a row: warmer than any event runs it (for information).
    tight: dict[str, Callable[[], None]] = {
        QUEUE: lambda: delete(receive()),
        VISIT: lambda: write_presence(read_visit()),
        EHR: ehr_call,
    }
    if epic_mode:
        tight[LEDGER] = lambda: mark_done(claim())
    for _ in range(3):  # warm-up: connections, the Backend Services token
        one_event()
    spent.clear()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        if args.concurrency > 1:  # each thread's connections too
            list(pool.map(lambda _: one_event(), range(args.concurrency)))
            spent.clear()
        used_before = usage()
        started = time.process_time()
        if args.concurrency == 1:
            for _ in range(args.runs):
                one_event()
        else:
            list(pool.map(lambda _: one_event(), range(args.runs)))
        total = (time.process_time() - started) / args.runs * 1000
        resources = usage_per(used_before, usage(), args.runs)
    steps = {label: used / args.runs * 1000 for label, used in spent.items()}
    tight_figures: dict[str, float] = {}
    if args.concurrency == 1:
        for label, step in tight.items():
            started = time.process_time()
            for _ in range(args.runs):
                step()
            tight_figures[label] = (time.process_time() - started) / args.runs * 1000
    ledger.delete_table()
    for row_key in rows[1:]:
        table.delete_entity(args.visit[1], row_key)
    figures = {
        "runs": args.runs,
        "total_ms": total,
        "steps_ms": steps,
        "tight_steps_ms": tight_figures,
        "tight_total_ms": sum(tight_figures.values()),
        "usage": resources,
        "failures": failures[:3],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
