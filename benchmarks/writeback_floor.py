"""The floor of one writeback event: the work no event can avoid, done with the same libraries, in a process of its own.

    python -m benchmarks.writeback_floor --queue NAME --visit GEOGRAPHY PK RK --fhir URL --client-id ID
        --mode epic|fhir-auditevent --call-args CSN EXTERNAL_ID [--concurrency 24]

Run by ``benchmarks.writeback`` as a child process with the app's settings in its environment, kept up during the
run so that it is measured in short rounds between the host's (the CPU a given piece of work costs on this shared
machine moves by up to ~1.7x from one ten seconds to the next: each round of the host's events is compared with the
floor measured right after it). Per event:

* the queue message: received in batches of 16 (production host.json ``batchSize``), invisible for 10 minutes as
  the host's listener asks, and deleted, with azure-storage-queue (the local host's listener does the same in the
  host process);
* one Table point read of the visit row and one etag-guarded Table update of it (its presence);
* the EHR call through the checked transport with the Backend Services token kept (``BackendServices``):
  Epic's ``SetExternalConnectionStatus`` GET, or a FHIR ``AuditEvent`` conditional-create POST;
* for Epic only, the ledger's claim and done mark: one conditional Table create and one etag-guarded Table
  update of a small row. ``SetExternalConnectionStatus`` has no idempotency key, so without them a redelivered
  message (at least once, whatever the queue) calls Epic twice: for a non-idempotent adapter they are part of
  the unavoidable work (README "Performance and cost"). An idempotent adapter (AuditEvent) has none.

After a warm-up it prints ``{"ready": true}`` and answers each line on stdin with one JSON line:

* ``events N C``: N events, C at once (``C`` 1: one at a time, in the main thread; or ``--concurrency``: on as
  many threads, each on a visit row of its own, as the host runs the messages it has in flight), each event's
  steps in the worker's order (receive; read the visit; for Epic, claim; the EHR call; for Epic, the done mark;
  write the presence; delete the message): CPU milliseconds per event in total (``time.process_time``), each
  step's share (``time.thread_time`` around it) and the process's user and system CPU, page faults and context
  switches;
* ``tight N``: each step alone, N times in a row: warmer than any event finds it (between an event's steps other
  work runs and the EHR keeps the thread waiting, 50 ms in ``benchmarks.writeback``);
* ``quit``.

The queue must hold a message for every event and every ``tight`` run asked for (the warm-up takes
3 + ``--concurrency``).
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
VISIBILITY = 600  # seconds: as the local host's listener receives (its PROCESSING_VISIBILITY)
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
    parser.add_argument("--concurrency", type=int, default=24, help="the most events ``events`` runs at once")
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
                received.extend(
                    queue.receive_messages(messages_per_page=BATCH, max_messages=BATCH, visibility_timeout=VISIBILITY)
                )
            if not received:  # an empty receive would make the floor look cheaper than an event is
                raise SystemExit("the floor's queue ran out of messages: fill it with more")
            return received.pop()

    def delete(message: QueueMessage) -> None:
        queue.delete_message(message)

    # One visit row per thread (copies of the given one, the main thread's too), so concurrent events never race
    # for one etag, nor with the host's events between rounds.
    original = table.get_entity(args.visit[1], args.visit[2])
    rows = [f"{args.visit[2]}-floor-{n}" for n in range(args.concurrency + 1)]
    for row_key in rows:
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

    def events(pool: ThreadPoolExecutor, runs: int, concurrency: int) -> dict[str, object]:
        spent.clear()
        failures.clear()
        used_before = usage()
        started = time.process_time()
        if concurrency == 1:
            for _ in range(runs):
                one_event()
        else:
            list(pool.map(lambda _: one_event(), range(runs)))
        total = (time.process_time() - started) / runs * 1000
        resources = usage_per(used_before, usage(), runs)
        steps = {label: used / runs * 1000 for label, used in spent.items()}
        return {"runs": runs, "total_ms": total, "steps_ms": steps, "usage": resources, "failures": failures[:3]}

    def tight_steps(runs: int) -> dict[str, object]:
        figures: dict[str, float] = {}
        for label, step in tight.items():
            started = time.process_time()
            for _ in range(runs):
                step()
            figures[label] = (time.process_time() - started) / runs * 1000
        return {"runs": runs, "tight_steps_ms": figures, "tight_total_ms": sum(figures.values())}

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
        ledger.delete_table()
        for row_key in rows:
            table.delete_entity(args.visit[1], row_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
