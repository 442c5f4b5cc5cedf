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

Prints one JSON line: CPU milliseconds per event, per step and in total (``time.process_time``, after a warm-up).

``--concurrency N`` (default 1: the floor) runs each step on N threads at once, each on a visit row of its own,
as the host runs its messages in flight (production host.json: 24): what the same steps cost when that many
share the process. ``benchmarks.writeback`` prints it beside the floor, for information; the ratio stays the
floor's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable

BATCH = 16


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writeback_floor")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--visit", nargs=3, metavar=("GEOGRAPHY", "PK", "RK"), required=True)
    parser.add_argument("--fhir", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--mode", choices=("epic", "fhir-auditevent"), required=True)
    parser.add_argument("--call-args", nargs=2, metavar=("CSN", "EXTERNAL_ID"), required=True)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1, help="threads running each step at once")
    args = parser.parse_args(argv)
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode
    from azure.storage.queue import QueueMessage

    from shared.ehr.backend_services import BackendServices
    from shared.ehr.epic_writeback import PATH, interconnect_base
    from shared.ehr.smart import smart_client_for
    from shared.http.outbound import HttpResult, SafeHttp, outbound_policy
    from shared.kernel.settings import Geography, get_settings
    from shared.storage.accounts import Storage

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

    def queue_message() -> None:
        with receiving:
            if not received:
                received.extend(queue.receive_messages(messages_per_page=BATCH, max_messages=BATCH))
            message = received.pop() if received else None
        if message is not None:
            queue.delete_message(message)

    # One visit row per thread (copies of the given one), so concurrent steps never race for one etag.
    original = table.get_entity(args.visit[1], args.visit[2])
    rows = [args.visit[2]] + [f"{args.visit[2]}-floor-{n}" for n in range(1, args.concurrency + 1)]  # + main
    for row_key in rows[1:]:
        table.upsert_entity({**original, "RowKey": row_key})
    mine = threading.local()
    assigned = iter(rows)

    def visit_read_and_write() -> None:
        if not hasattr(mine, "row"):
            with receiving:
                mine.row = next(assigned)
        row = table.get_entity(args.visit[1], mine.row)
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

    def claim_and_done_mark() -> None:
        entity = {"PartitionKey": args.visit[1], "RowKey": uuid.uuid4().hex, "State": "claimed", "Attempt": 1}
        metadata = ledger.create_entity(entity)
        entity["State"] = "done"
        ledger.update_entity(
            entity, mode=UpdateMode.REPLACE, etag=metadata["etag"], match_condition=MatchConditions.IfNotModified
        )

    failures: list[str] = []
    steps: dict[str, Callable[[], None]] = {
        "queue receive + delete": queue_message,
        "visit read + presence write": visit_read_and_write,
        "EHR call": ehr_call,
    }
    if args.mode == "epic":
        steps["ledger claim + done mark"] = claim_and_done_mark
    for step in steps.values():  # warm-up: connections, the Backend Services token
        for _ in range(3):
            step()
    figures: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        if args.concurrency > 1:  # each thread's connections too
            for step in steps.values():
                list(pool.map(lambda _, step=step: step(), range(args.concurrency)))
        for name, step in steps.items():
            started = time.process_time()
            if args.concurrency == 1:
                for _ in range(args.runs):
                    step()
            else:
                list(pool.map(lambda _, step=step: step(), range(args.runs)))
            figures[name] = (time.process_time() - started) / args.runs * 1000
    ledger.delete_table()
    for row_key in rows[1:]:
        table.delete_entity(args.visit[1], row_key)
    print(
        json.dumps(
            {"runs": args.runs, "steps_ms": figures, "total_ms": sum(figures.values()), "failures": failures[:3]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
