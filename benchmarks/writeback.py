"""Writeback and notification figures on the local Functions host, Azurite and the sandbox EHR / Entra ID.

    python -m benchmarks.writeback [--events 2000] [--latency-ms 50] [--burst 1000] [--reliability 10000]

Prints:
0. host CPU per event against the floor measured in the same run (``benchmarks.writeback_floor``; target
   <= 1.1): the lowest of one event at a time (its steps in the worker's order), as many events at a time as
   the host has in flight, and each step alone back to back, all three printed; with Table operations per
   event, for Epic (through the ledger) and FHIR AuditEvents (idempotent):
   the host in a process of its own with the production host.json (batchSize 16, newBatchThreshold 8);
1. drain rate: events per second one worker process (one host) writes into the sandbox EHR answering
   every call after a fixed latency L;
2. storage transactions per event: Table operations the worker makes per event (Visits + WritebackLedger),
   plus the queue operations the host makes (receive + delete);
3. notification webhook time to 202: p50 / p99 under a burst of encrypted rich notifications
   (validationTokens checked against the sandbox Entra ID's keys), Graph's budget being 3 s;
4. reliability: N events through 30 % 5xx, 429 + Retry-After, timeouts and an outage window —
   lost, duplicated (EHR calls beyond one per event) and poisoned counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from benchmarks.host_process import usage_per
from benchmarks.table_operations import TableOperations
from benchmarks.writeback_load import CLIENT_ID, WritebackLoad
from sandbox import azurite
from sandbox.entra.signing import graph_validation_token
from sandbox.graph.crypto import EncryptionCertificate, encrypt_content
from sandbox.local_settings import local_values
from shared.configurations.model import WritebackMode
from shared.kernel.settings import Geography
from shared.microsoft.notifications import ClientStates, NotificationCertificate, SubscriptionTarget
from shared.visits.repository import VisitRepository

ROOT = Path(__file__).resolve().parent.parent
RELIABILITY_FAULTS = {
    "error_rate": 0.30,
    "throttle_rate": 0.05,
    "retry_after": 1,
    "timeout_rate": 0.01,
    "hang_seconds": 3.0,
    "seed": 11,
}


@contextlib.contextmanager
def azurite_env() -> Iterator[dict[str, str]]:
    base = azurite.free_port_base()
    process = azurite.start(base)
    try:
        yield local_values(base)
    finally:
        process.terminate()
        process.wait(timeout=10)


# (mode, the usage report's analytics on): the report (issue #15) records each event's facts in a Table row of its
# own, so both are measured; analytics is on by default for a configuration.
CPU_CASES = (
    (WritebackMode.FHIR_AUDIT_EVENT, False),
    (WritebackMode.FHIR_AUDIT_EVENT, True),
    (WritebackMode.EPIC, False),
    (WritebackMode.EPIC, True),
)


def cpu_per_event(
    env: dict[str, str], events: int, latency_ms: int, *, per_visit: float = 8.0, phases: bool = False
) -> None:
    """Host CPU per event. ``per_visit`` events land on each visit (benchmarks.cost assumes 8: two launches and six
    Graph facts), so the once-per-visit work at a meeting's end (the ledger's pending query, the context's release)
    weighs on each event as it does in a real visit."""
    from shared.reports.preferences import ReportPreferences, ReportPreferenceStore

    visits = 1 + max(1, round(events / per_visit))  # visit 0 belongs to the pending configuration
    for mode, analytics in CPU_CASES:
        with WritebackLoad(
            env, visits=visits, ehr_latency_ms=latency_ms, mode=mode, separate_host=True, phases=phases
        ) as load:
            ReportPreferenceStore(load.storage.app).save(load.configuration_id, ReportPreferences(analytics=analytics))
            host = load.host
            warm = load.events(50)
            load.enqueue([e.to_json() for e in warm])  # tokens, discovery and configuration cache warm up
            load.wait_until_written(warm, timeout=120)
            load.wait_until_queue_empty(timeout=60)
            idle = _idle_cpu(host)
            batch = load.events(events)
            host.ops()
            if phases:
                host.phases()
            used_before = host.usage()
            before = host.cpu()
            load.enqueue([e.to_json() for e in batch])
            load.wait_until_written(batch, timeout=max(180, events))
            load.wait_until_queue_empty(timeout=60)
            cpu = (host.cpu() - before) / events
            used = usage_per(used_before, host.usage(), events)
            spent = host.phases() if phases else {}
            memory = host.rss()
            ops = host.ops()
            worker = {name: n / events for name, n in sorted(ops.items())}
            floor = _floor(load, mode, runs=min(events, 300))
            crowded = _floor(load, mode, runs=min(events, 300), concurrency=in_flight())
            steps = ", ".join(f"{k} {v:.2f} ms" for k, v in floor["steps_ms"].items())
            tight = ", ".join(f"{k} {v:.2f} ms" for k, v in floor["tight_steps_ms"].items())
            lowest = min(floor["total_ms"], crowded["total_ms"], floor["tight_total_ms"])
            report = "usage report on" if analytics else "usage report off"
            print(f"0. {mode.value}, {report}, {events} events over {visits - 1} visits: host CPU per event "
                  f"{cpu * 1000:.2f} ms (host idle {idle * 1000:.2f} ms/s, not subtracted); floor {lowest:.2f} ms, "
                  f"the lowest of three; ratio {cpu * 1000 / lowest:.2f} (target <= 1.1)")  # fmt: skip
            print(f"   Floor, one event at a time, its steps in the worker's order: {floor['total_ms']:.2f} ms "
                  f"({steps}); host / that: {cpu * 1000 / floor['total_ms']:.2f}")  # fmt: skip
            print(f"   Floor, {in_flight()} events at a time (the messages the host has in flight): "
                  f"{crowded['total_ms']:.2f} ms; host / that: {cpu * 1000 / crowded['total_ms']:.2f}")  # fmt: skip
            print(f"   Each step alone, back to back (warmer than any event runs it): {floor['tight_total_ms']:.2f} ms "
                  f"({tight}); host / that: {cpu * 1000 / floor['tight_total_ms']:.2f}")  # fmt: skip
            print(f"   Per event, host / {in_flight()} at a time: {_usage(used)} / {_usage(crowded['usage'])}")
            print(f"   Host resident memory after draining (24 messages in flight): {memory['rss_mb']:.0f} MB, "
                  f"peak {memory['peak_rss_mb']:.0f} MB")  # fmt: skip
            print(f"   Table operations per event: {sum(worker.values()):.2f} {worker} "
                  "(+ the host's queue receive and delete)")  # fmt: skip
            if analytics:
                ops_per_visit, cpu_per_visit = _report_copy(load, visits - 1)
                print(f"   The report's copy of these visits' facts into ReportVisits (the timers' work, once per "
                      f"visit): {ops_per_visit:.2f} Table operations and {cpu_per_visit * 1000:.2f} ms of CPU per "
                      "visit")  # fmt: skip
            if phases:
                print("   Phases per event (host CPU, inclusive; --phases adds its own timing):")
                for label in sorted(spent):
                    total, count = spent[label]
                    print(f"     {label}: {total / events * 1000:.3f} ms ({count / events:.2f} calls)")


def _usage(used: dict[str, float]) -> str:
    return (
        f"user {used['user']:.2f} ms, system {used['system']:.2f} ms, {used['minor_faults']:.1f} page faults, "
        f"{used['voluntary_switches']:.1f} + {used['involuntary_switches']:.1f} context switches"
    )


def _report_copy(load: WritebackLoad, visits: int) -> tuple[float, float]:
    """What ``report_upkeep`` does with the drained visits (``ReportFlush``), here: Table operations and CPU."""
    from shared.reports.days import ReportDays
    from shared.reports.fold import ReportFlush
    from shared.reports.preferences import ReportPreferenceStore
    from shared.reports.store import ReportFacts

    facts = ReportFacts(load.storage, load.sealer)
    flush = ReportFlush(
        VisitRepository(load.storage, load.sealer), facts, ReportDays(load.storage, facts),
        ReportPreferenceStore(load.storage.app), secret=load.settings.connector_secret.reveal(), sealer=load.sealer,
    )  # fmt: skip
    with TableOperations().installed() as operations:
        started = time.process_time()
        flush.flush(Geography.AMERICAS)
        cpu = time.process_time() - started
        counts = operations.take()
    return sum(counts.values()) / visits, cpu / visits


def _idle_cpu(host: Any, seconds: float = 4.0) -> float:
    before = host.cpu()
    time.sleep(seconds)
    return float(host.cpu() - before) / seconds


def in_flight() -> int:
    """Messages the production host.json lets one instance process at once: batchSize + newBatchThreshold."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    batch = int(queues.get("batchSize", 16))
    return batch + int(queues.get("newBatchThreshold", batch // 2))  # the extension's default: half the batch


def _floor(load: WritebackLoad, mode: WritebackMode, runs: int, *, concurrency: int = 1) -> dict[str, Any]:
    """``benchmarks.writeback_floor`` in a fresh process, on a queue of its own with a message for every event it
    runs (warm-up, the timed events and, one at a time, the queue step alone)."""
    queue_name = f"{load.queue_name}-floor{concurrency}"
    queue = load.queue(queue_name)
    with ThreadPoolExecutor(max_workers=8) as pool:
        # The events, their warm-up and, at concurrency 1, the queue step run back to back (for information).
        list(pool.map(queue.send_message, [e.to_json() for e in load.events(2 * runs + 20 + 2 * concurrency)]))
    key, csn = load.visit_keys[1]
    external_id = f"floor-{load.run}"
    load.ehr.state.link_launch({csn}, external_id)
    row = load.storage.for_geography(Geography.AMERICAS).table("Visits").get_entity(Geography.AMERICAS.value, key)
    command = [
        sys.executable, "-m", "benchmarks.writeback_floor", "--queue", queue_name,
        "--visit", Geography.AMERICAS.value, str(row["PartitionKey"]), str(row["RowKey"]),
        "--fhir", load.ehr.config.fhir_base, "--client-id", CLIENT_ID,
        "--mode", "epic" if mode is WritebackMode.EPIC else "fhir-auditevent",
        "--call-args", csn, external_id, "--runs", str(runs), "--concurrency", str(concurrency),
    ]  # fmt: skip
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **load.environ}
    out = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def drain(env: dict[str, str], events: int, latency_ms: int) -> None:
    with WritebackLoad(env, visits=200, ehr_latency_ms=latency_ms, http_timeout=10) as load:
        batch = load.events(events)
        warm = load.events(50)
        load.enqueue([e.to_json() for e in warm])  # tokens, discovery and configuration cache warm up
        load.wait_until_written(warm, timeout=60)
        with TableOperations().installed() as operations:
            started = time.monotonic()
            load.enqueue([e.to_json() for e in batch])
            enqueue_seconds = time.monotonic() - started
            seconds = load.wait_until_written(batch, timeout=max(120, events)) + enqueue_seconds
            load.wait_until_queue_empty(timeout=60)
            counts = operations.take()
        worker_tables = ("Visits.", "WritebackLedger.")
        per_worker = sum(n for name, n in counts.items() if name.startswith(worker_tables))
        print(f"1. drain rate, one worker process, EHR latency {latency_ms} ms: {events / seconds:.1f} events/s")
        print(f"   ({events} events in {seconds:.1f} s; host batchSize 32, newBatchThreshold 16)")
        print(
            f"2. storage transactions per event: {per_worker / events:.2f} Table operations on Visits + WritebackLedger"
        )
        for name, n in sorted(counts.items()):
            print(f"   {name}: {n / events:.2f} per event")
        print("   + 2 queue operations per delivery made by the host (receive, delete)")


def webhook_burst(env: dict[str, str], burst: int, concurrency: int) -> None:
    from sandbox.entra import start_entra
    from sandbox.seed import CONNECTOR_CLIENT_ID, CONTOSO
    from sandbox.tls import ensure_tls, trust_env

    tls = ensure_tls(ROOT / ".sandbox" / "tls")
    entra = start_entra(tls).start()
    previous = {key: os.environ.get(key) for key in trust_env(tls)}
    os.environ.update(trust_env(tls))
    try:
        # The endpoint alone: the queue trigger is off, so draining does not compete for the two cores.
        extra = {
            "ENTRA_AUTHORITY_HOST": entra.issuer_host,
            "ENTRA_CLIENT_ID": CONNECTOR_CLIENT_ID,
            "AzureWebJobs.writeback_events.Disabled": "true",
        }
        with WritebackLoad(env, visits=10, extra_settings=extra) as load:
            certificate = NotificationCertificate.from_pem(load.settings.graph_encryption_certificate.reveal())
            states = ClientStates(load.settings.graph_client_state.reveal())
            key, _ = load.visit_keys[1]
            state = states.issue(SubscriptionTarget(Geography.AMERICAS, key, str(uuid.uuid4()), load.configuration_id))
            token = graph_validation_token(entra.issuer, tenant_id=CONTOSO.id, app_id=CONNECTOR_CLIENT_ID)
            bodies = [_notification(certificate, state, CONTOSO.id, token, n) for n in range(burst)]
            url = f"{load.host.url}/api/graph/notifications"
            with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
                client.post(url, json=bodies[0])  # first request builds the decoder and fetches the keys

                def post(body: dict[str, Any]) -> tuple[float, int]:
                    started = time.perf_counter()
                    status = client.post(url, json=body).status_code
                    return time.perf_counter() - started, status

                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    results = list(pool.map(post, bodies))
                wall = time.monotonic() - started
            times = sorted(t for t, _ in results)
            statuses = Counter(s for _, s in results)
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"3. webhook time to 202, burst of {burst} ({concurrency} concurrent): "
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms; "
                f"statuses {dict(statuses)}; {burst / wall:.0f} notifications/s"
            )
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        entra.stop()


def _notification(certificate: NotificationCertificate, state: str, tenant: str, token: str, n: int) -> dict[str, Any]:
    payload = {
        "@odata.type": "#microsoft.graph.callevent",
        "id": str(uuid.uuid4()),
        "eventType": "rosterUpdated",
        "eventDateTime": f"2026-11-25T15:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z",
        "participants@delta": [
            {"id": str(n), "info": {"identity": {"guest": {"id": "g", "displayName": "P"}}}, "isInLobby": n % 2 == 0}
        ],
    }
    content = encrypt_content(
        payload, EncryptionCertificate(certificate.certificate_base64), certificate.certificate_id
    )
    item = {
        "subscriptionId": "bench",
        "clientState": state,
        "changeType": "updated",
        "tenantId": tenant,
        "resource": "communications/onlineMeetings(joinWebUrl='x')/meetingCallEvents",
        "resourceData": {"@odata.type": "#microsoft.graph.callevent", "id": payload["id"]},
        "encryptedContent": content,
    }
    return {"value": [item], "validationTokens": [token]}


def reliability(env: dict[str, str], events: int) -> None:
    with WritebackLoad(env, faults=RELIABILITY_FAULTS, visits=max(100, events // 40)) as load:
        batch = load.events(events)
        outage = threading.Timer(3.0, lambda: load.ehr.faults.update({"outage_seconds": 5.0}))
        outage.start()
        started = time.monotonic()
        load.enqueue([e.to_json() for e in batch])
        load.wait_until_written(batch, timeout=max(300, events / 5))
        seconds = time.monotonic() - started  # from the first message enqueued
        outage.cancel()
        load.wait_until_queue_empty(timeout=60)
        written = load.written()
        duplicates = sum(1 for n in written.values() if n > 1)
        lost = events - len(written)
        print(
            f"4. reliability: {events} events, {load.ehr.faults.injected} injected EHR faults (30 % 5xx, 429, "
            f"timeouts, 5 s outage): written in {seconds:.1f} s ({events / seconds:.1f}/s), "
            f"lost {lost}, duplicated {duplicates}, poison {len(load.poison())}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.writeback", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-events", type=int, default=500, help="events for the CPU-per-event figure")
    parser.add_argument("--events", type=int, default=2000, help="events for the drain-rate figure (0: stop)")
    parser.add_argument("--latency-ms", type=int, default=50, help="fixed EHR latency L")
    parser.add_argument("--burst", type=int, default=1000, help="notifications in the webhook burst")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent webhook requests")
    parser.add_argument("--reliability", type=int, default=10_000, help="events for the reliability figure (0: skip)")
    parser.add_argument("--phases", action="store_true", help="print where an event's CPU goes, phase by phase")
    parser.add_argument("--events-per-visit", type=float, default=8.0, help="events per visit in the CPU figure")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)  # the faults make the host log every retry with its traceback
    with azurite_env() as env:
        cpu_per_event(env, args.cpu_events, args.latency_ms, per_visit=args.events_per_visit, phases=args.phases)
        if not args.events:
            return 0
        drain(env, args.events, args.latency_ms)
        webhook_burst(env, args.burst, args.concurrency)
        if args.reliability:
            reliability(env, args.reliability)
    return 0


if __name__ == "__main__":
    sys.exit(main())
