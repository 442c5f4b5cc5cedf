"""Writeback and notification figures on the local Functions host, Azurite and the sandbox EHR / Entra ID.

    python -m benchmarks.writeback [--events 2000] [--latency-ms 50] [--burst 1000] [--reliability 10000]

Prints:
0. host CPU per event against the floor measured in the same run (target <= 1.1): the floor's steps
   (``benchmarks.writeback_floor.FloorSteps``: the visit read, for Epic the ledger's claim, the EHR call, the done
   mark and, on as many events as the host's that ended a meeting, the ledger's pending query, which the privacy
   promise needs there; the presence write) as the queue function of a second local host with the same host.json, so
   that the host's own work per message (receive, dispatch to the worker's threads, delete: in Azure the Functions
   host's, not the app's) is in the floor as it is in the host's figure, as the launch floor has the host's work on
   its requests (the headline: the host's events and the floor host's in turn, in 6 rounds); a second estimate with
   as many events sent to both hosts at the same moment, so that the machine's speed, which moves between seconds
   here, is the same for both; with, for information, three floors in a bare process (the steps and the queue's
   receive and delete alone): as many events at a time as the host has in flight, one event at a time (its steps in
   the worker's order), and each step alone back to back; and Table operations per event, for Epic (through the
   ledger) and FHIR AuditEvents (idempotent): the host in a process of its own with the production host.json
   (batchSize 16, newBatchThreshold 8);
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
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from azure.storage.queue import QueueClient

from benchmarks.host_process import HostProcess, ServedChild, usage_per
from benchmarks.table_operations import TableOperations
from benchmarks.writeback_floor import ENDED as ENDED_STEP
from benchmarks.writeback_floor import MEETING_ENDED, FloorSpec
from benchmarks.writeback_load import CLIENT_ID, WritebackLoad
from sandbox import azurite
from sandbox.entra.signing import graph_validation_token
from sandbox.graph.crypto import EncryptionCertificate, encrypt_content
from sandbox.local_settings import local_values
from sandbox.server import free_port
from shared.configurations.model import WritebackMode
from shared.kernel.settings import Geography
from shared.microsoft.notifications import ClientStates, NotificationCertificate, SubscriptionTarget
from shared.visits.events import EventKind, Role, VisitEvent
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


ROUNDS = 6  # the host's events and the floor alternate in this many rounds (even: each goes first as often)
ENDED_QUERY = "WritebackLedger.query_entities"  # the host's pending query when a meeting has ended (Epic)


def cpu_per_event(
    env: dict[str, str], events: int, latency_ms: int, *, per_visit: float = 8.0, phases: bool = False
) -> None:
    """Host CPU per event. ``per_visit`` events land on each visit (benchmarks.cost assumes 8: two launches and six
    Graph facts), so the once-per-visit work at a meeting's end (the ledger's pending query, the context's release)
    weighs on each event as it does in a real visit.

    The events run in ``ROUNDS`` rounds, each compared with the floors measured right beside it (the machine's
    speed moves between minutes): the floor's steps as the function of a host of their own (kept up) run as many
    events, before the host's in every other round and after them in the others; then as many again are sent to
    both hosts at the same moment (a second estimate, the machine's speed the same for both); then the floor process
    (kept up) runs as many 24 at a time, as many one at a time and each step alone as many times."""
    from shared.reports.preferences import ReportPreferences, ReportPreferenceStore

    # Visit 0 belongs to the pending configuration; the host runs each round's events twice (after or before the
    # floor's host, and at the same moment as it): ``per_visit`` of them in all on each visit.
    visits = 1 + max(1, round(2 * events / per_visit))
    per_round = max(1, events // ROUNDS)
    events = per_round * ROUNDS
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
            # Made at once, so that no two are the same fact (an event's id is its visit, role, kind and time), and
            # run in the order made, so that each visit's facts arrive in their order (a fact older than the visit's
            # latest writes nothing): each round's first part in turn with the floor's host, its second part at the
            # same moment as it.
            made = load.events(2 * events)
            parts = [made[k * per_round : (k + 1) * per_round] for k in range(2 * ROUNDS)]
            host.ops()
            counted: Counter[str] = Counter()  # the host's Table operations
            ends = MeetingEnds()
            ends.count(warm)
            expected = [ends.count(events) for events in parts]  # each part's meeting ends, in the host's order
            measured: list[int] = []  # the host's own count of them (its pending queries), part by part
            if phases:
                host.phases()
            rounds: list[Round] = []
            with WritebackFloor(load, mode) as floor:
                for n in range(ROUNDS):
                    part = parts[2 * n]
                    hosted = floor.hosted(per_round, expected[2 * n]) if n % 2 else {}
                    used_before = host.usage()
                    before = host.cpu()
                    _run(load, part)
                    cpu_ms = (host.cpu() - before) / per_round * 1000
                    used = usage_per(used_before, host.usage(), per_round)
                    measured.append(_counted(counted, host.ops()).get(ENDED_QUERY, 0))
                    hosted = hosted or floor.hosted(per_round, expected[2 * n])
                    together = _together(load, parts[2 * n + 1], floor, expected[2 * n + 1])
                    measured.append(_counted(counted, host.ops()).get(ENDED_QUERY, 0))
                    crowded = floor.events(per_round, in_flight(), expected[2 * n])
                    single = floor.events(per_round, 1, expected[2 * n + 1])
                    tight = floor.tight(per_round)
                    # The meeting-end query, measured alone once per run of the steps, counts at the round's rate.
                    rate = (expected[2 * n] + expected[2 * n + 1]) / (2 * per_round)
                    tight["tight_total_ms"] += rate * tight["tight_steps_ms"].get(ENDED_STEP, 0.0)
                    rounds.append(Round(cpu_ms, used, hosted, together, crowded, single, tight))
            spent = host.phases() if phases else {}
            memory = host.rss()
            counted.update(host.ops())
            ops = counted
            worker = {name: n / (2 * events) for name, n in sorted(ops.items())}
            _print_rounds(mode, analytics, events, visits - 1, idle, rounds)
            if mode is WritebackMode.EPIC:
                alone = statistics.median(float(r.tight["tight_steps_ms"][ENDED_STEP]) for r in rounds)
                without = statistics.median(
                    r.host_ms / (r.hosted["total_ms"] - r.hosted["meeting_ends"] / per_round * alone) for r in rounds
                )
                print(f"   Meeting ends (the ledger's pending query, in the floor since 6 December 2026): "
                      f"{sum(expected) / (2 * events):.3f} per event in the floor's host, part by part as many as the "
                      f"host's events that end a meeting ({sum(measured) / (2 * events):.3f} asked by the host, "
                      f"{sum(a != b for a, b in zip(expected, measured, strict=True))} of {len(parts)} parts "
                      f"counting otherwise); the query alone {alone:.2f} ms; the ratio against the floor less their "
                      f"cost alone {without:.2f}")  # fmt: skip
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
                    print(f"     {label}: {total / (2 * events) * 1000:.3f} ms ({count / (2 * events):.2f} calls)")


def _counted(counted: Counter[str], ops: dict[str, int]) -> dict[str, int]:
    """``ops`` added to ``counted``, and returned."""
    counted.update(ops)
    return ops


class MeetingEnds:
    """Which of the host's events end their visit's meeting while it still holds its context: those whose presence
    write asks the ledger whether anything is pending (Epic) and releases the context (``shared.visits.lifetime``:
    every role seen in the meeting has left; the load's events are a provider's and a patient's Graph facts, no
    launch restores a context). Counted ahead for each part of the host's events, in the order sent, so that the
    floor's part paired with it asks as many times (``MEETING_ENDED``); the host's own count is printed beside."""

    def __init__(self) -> None:
        self._states: dict[str, dict[Role, EventKind]] = {}
        self._released: set[str] = set()

    def count(self, events: Iterable[VisitEvent]) -> int:
        ended = 0
        for event in events:
            states = self._states.setdefault(event.visit_key, {})
            states[event.role] = event.kind
            if event.visit_key not in self._released and all(k is EventKind.DISCONNECTED for k in states.values()):
                self._released.add(event.visit_key)
                ended += 1
        return ended


def _run(load: WritebackLoad, events: list[VisitEvent]) -> None:
    """Send ``events`` to the host and wait until each is written and the queue is empty."""
    load.enqueue([e.to_json() for e in events])
    load.wait_until_written(events, timeout=max(180, len(events)))
    load.wait_until_queue_empty(timeout=60)


def _together(
    load: WritebackLoad, events: list[VisitEvent], floor: WritebackFloor, meeting_ends: int
) -> tuple[float, float]:
    """The host's events and as many of the floor's host, sent at the same moment: each host's CPU per event (ms)
    until its own queue is drained. Whatever the machine's speed does meanwhile, it does to both."""
    floor_side: dict[str, Any] = {}
    failed: list[BaseException] = []

    def run_floor() -> None:
        try:
            floor_side.update(floor.hosted(len(events), meeting_ends))
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the benchmark's thread
            failed.append(exc)

    thread = threading.Thread(target=run_floor, name="floor-together")
    before = load.host.cpu()
    thread.start()
    try:
        _run(load, events)
        host_ms = (load.host.cpu() - before) / len(events) * 1000
    finally:
        thread.join()  # the floor's host is measured (and may fail) whatever became of the host's events
    if failed:
        raise failed[0]
    return host_ms, float(floor_side["total_ms"])


@dataclasses.dataclass(frozen=True)
class Round:
    """One round: the host's CPU per event, its resource usage, and the floors measured right beside it."""

    host_ms: float
    usage: dict[str, float]
    hosted: dict[str, Any]  # the floor's steps as the function of a host of their own
    together: tuple[float, float]  # the host's and the floor host's CPU per event, their events sent at once
    crowded: dict[str, Any]  # ``in_flight()`` events at a time
    single: dict[str, Any]  # one event at a time
    tight: dict[str, Any]  # each step alone, back to back

    @property
    def lowest_ms(self) -> float:
        """The lowest of the three floors measured in a bare process (none has the host's own work per message)."""
        return float(min(self.crowded["total_ms"], self.single["total_ms"], self.tight["tight_total_ms"]))


def _print_rounds(
    mode: WritebackMode, analytics: bool, events: int, visits: int, idle: float, rounds: list[Round]
) -> None:
    def median(values: Iterable[float]) -> float:
        return float(statistics.median(values))

    def spread(values: list[float]) -> str:
        return f"{median(values):.2f} (rounds {min(values):.2f}-{max(values):.2f})"

    host = [r.host_ms for r in rounds]
    hosted = [float(r.hosted["total_ms"]) for r in rounds]
    report = "usage report on" if analytics else "usage report off"
    print(f"0. {mode.value}, {report}, {events} events (and as many sent with the floor host's) over {visits} visits "
          f"in {len(rounds)} rounds: host CPU per "
          f"event {sum(host) / len(host):.2f} ms (rounds {min(host):.2f}-{max(host):.2f}; host idle "
          f"{idle * 1000:.2f} ms/s, not subtracted); the floor, its steps as the function of the same local host "
          f"with the same host.json: {median(hosted):.2f} ms; ratio to the floor of its round "
          f"{spread([h / f for h, f in zip(host, hosted, strict=True)])} (target <= 1.1); of the run's medians "
          f"{median(host) / median(hosted):.2f}, of its totals {sum(host) / sum(hosted):.2f}")  # fmt: skip
    together_host = [r.together[0] for r in rounds]
    together_floor = [r.together[1] for r in rounds]
    print(f"   The host's events and the floor host's sent at the same moment (the machine's speed the same for both): "
          f"host {median(together_host):.2f} ms, floor {median(together_floor):.2f} ms per event; ratio "
          f"{spread([h / f for h, f in zip(together_host, together_floor, strict=True)])}, of the run's medians "
          f"{median(together_host) / median(together_floor):.2f}, of its totals "
          f"{sum(together_host) / sum(together_floor):.2f}")  # fmt: skip
    print(f"   In a bare process (no host's work per message but the receive and delete): ratio to the lowest of the "
          f"three floors below {spread([r.host_ms / r.lowest_ms for r in rounds])}")  # fmt: skip
    crowded = [float(r.crowded["total_ms"]) for r in rounds]
    single = [float(r.single["total_ms"]) for r in rounds]
    tight = [float(r.tight["tight_total_ms"]) for r in rounds]
    to_crowded = [h / f for h, f in zip(host, crowded, strict=True)]
    print(f"   Floor, {in_flight()} events at a time (the messages the host has in flight): "
          f"{median(crowded):.2f} ms; host / that: {spread(to_crowded)}")  # fmt: skip
    steps = {k: median(float(r.single["steps_ms"].get(k, 0.0)) for r in rounds) for k in rounds[0].single["steps_ms"]}
    print(f"   Floor, one event at a time, its steps in the worker's order: {median(single):.2f} ms "
          f"({', '.join(f'{k} {v:.2f} ms' for k, v in steps.items())}); "
          f"host / that: {spread([h / f for h, f in zip(host, single, strict=True)])}")  # fmt: skip
    alone = {k: median(float(r.tight["tight_steps_ms"][k]) for r in rounds) for k in rounds[0].tight["tight_steps_ms"]}
    print(f"   Each step alone, back to back (warmer than any event runs it): {median(tight):.2f} ms "
          f"({', '.join(f'{k} {v:.2f} ms' for k, v in alone.items())}); "
          f"host / that: {spread([h / f for h, f in zip(host, tight, strict=True)])}")  # fmt: skip
    host_usage = {k: median(r.usage[k] for r in rounds) for k in rounds[0].usage}
    floor_usage = {k: median(float(r.crowded["usage"][k]) for r in rounds) for k in rounds[0].crowded["usage"]}
    hosted_usage = {k: median(float(r.hosted["usage"][k]) for r in rounds) for k in rounds[0].hosted["usage"]}
    print(f"   Per event (medians), host / floor in a host / {in_flight()} at a time: {_usage(host_usage)} / "
          f"{_usage(hosted_usage)} / {_usage(floor_usage)}")  # fmt: skip


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


class WritebackFloor:
    """The floors of a case, kept up for its rounds: ``benchmarks.writeback_floor`` in a process of its own (the
    bare-process floors), and the same steps as the queue function of a second local host (``hosted``: the
    headline floor), each on a queue of its own that this fills with a message for every event and step it is
    asked to run. A floor whose EHR call failed, or whose host poisoned a message, is not a floor: it raises."""

    def __init__(self, load: WritebackLoad, mode: WritebackMode) -> None:
        self._load = load
        self._queue = load.queue(f"{load.queue_name}-floor")
        self._hosted_queue = load.queue(f"{load.queue_name}-hosted")
        self._poison = load.queue(f"{self._hosted_queue.queue_name}-poison")
        concurrency = in_flight()
        warm_ends = 1 if mode is WritebackMode.EPIC else 0  # the pending query warms up too
        self._fill(self._queue, 3 + concurrency, warm_ends)  # its warm-up
        key, csn = load.visit_keys[1]
        external_id = f"floor-{load.run}"
        load.ehr.state.link_launch({csn}, external_id)
        row = load.storage.for_geography(Geography.AMERICAS).table("Visits").get_entity(Geography.AMERICAS.value, key)
        spec = FloorSpec(
            Geography.AMERICAS.value, str(row["PartitionKey"]), str(row["RowKey"]), load.ehr.config.fhir_base,
            CLIENT_ID, "epic" if mode is WritebackMode.EPIC else "fhir-auditevent", csn, external_id,
        )  # fmt: skip
        command = [
            sys.executable, "-m", "benchmarks.writeback_floor", "--queue", self._queue.queue_name,
            "--spec", spec.to_json(), "--concurrency", str(concurrency),
        ]  # fmt: skip
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **load.environ}
        self._host: HostProcess | None = None
        self._child = ServedChild(command, environ, name="the writeback floor process")  # ready: warmed up
        try:
            # The same steps as the function of a second local host (its own process, queue and port): the host's
            # receive, dispatch and delete of each message in the floor too, with the production host.json.
            settings = {**load.environ, "WRITEBACK_QUEUE_NAME": self._hosted_queue.queue_name}
            self._host = HostProcess(settings, free_port(), writeback_floor=spec.to_json()).start()
            self.hosted(3 + concurrency, warm_ends)  # its warm-up
        except BaseException:
            self.close()
            raise

    def hosted(self, runs: int, meeting_ends: int = 0) -> dict[str, Any]:
        """``runs`` events through the floor's host, ``meeting_ends`` of them ending a meeting: its CPU per event,
        and its resource usage per event."""
        host = self._host
        assert host is not None
        used_before = host.usage()
        before = host.cpu()
        self._fill(self._hosted_queue, runs, meeting_ends)
        deadline = time.monotonic() + max(180, runs)
        # Azurite counts a message until it is deleted, which the host does once its invocation has returned.
        while self._hosted_queue.get_queue_properties().approximate_message_count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the floor's host did not drain its queue: {host.log_tail()}")
            time.sleep(0.1)
        total = (host.cpu() - before) / runs * 1000
        used = usage_per(used_before, host.usage(), runs)
        failures = host.floor_failures()
        if failures or self._poison.get_queue_properties().approximate_message_count:
            raise AssertionError(f"the floor's host failed ({failures[:3]}): {host.log_tail()}")
        return {"runs": runs, "total_ms": total, "usage": used, "meeting_ends": meeting_ends}

    def __enter__(self) -> WritebackFloor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self, runs: int, concurrency: int, meeting_ends: int = 0) -> dict[str, Any]:
        self._fill(self._queue, runs, meeting_ends)
        answer = self._child.ask(f"events {runs} {concurrency}")
        if answer.get("failures"):
            raise AssertionError(f"the floor's EHR calls failed: {answer['failures']}")
        return answer

    def tight(self, runs: int) -> dict[str, Any]:
        self._fill(self._queue, runs)  # the queue step alone takes one message per run
        return self._child.ask(f"tight {runs}")

    def close(self) -> None:
        try:
            self._child.close()
        finally:
            if self._host is not None:
                self._host.stop()
            for queue in (self._queue, self._hosted_queue, self._poison):
                with contextlib.suppress(Exception):
                    queue.delete_queue()

    def _fill(self, queue: QueueClient, count: int, meeting_ends: int = 0) -> None:
        """As ``WritebackLoad.enqueue`` sends the host's: 8 at a time; ``meeting_ends`` of them, spread evenly,
        flagged as ending their visit's meeting (``MEETING_ENDED``)."""
        bodies = [e.to_json() for e in self._load.events(count)]
        for n in range(count):
            if (n + 1) * meeting_ends // count > n * meeting_ends // count:
                bodies[n] = json.dumps({**json.loads(bodies[n]), MEETING_ENDED: True}, separators=(",", ":"))
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(queue.send_message, bodies))


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
            **trust_env(tls),  # the host process trusts the sandbox Entra ID's certificate
        }
        # The host in a process of its own, so that its CPU per notification is measurable alone.
        with WritebackLoad(env, visits=10, extra_settings=extra, separate_host=True) as load:
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

                for body in bodies[1:4]:  # warm: the keys are fetched, each worker thread has run once
                    client.post(url, json=body)
                cpu_before = load.host.cpu()
                started = time.monotonic()
                with ThreadPoolExecutor(max_workers=concurrency) as pool:
                    results = list(pool.map(post, bodies))
                wall = time.monotonic() - started
                cpu_each = (load.host.cpu() - cpu_before) / burst
            times = sorted(t for t, _ in results)
            statuses = Counter(s for _, s in results)
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(
                f"3. webhook time to 202, burst of {burst} ({concurrency} concurrent): "
                f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms; "
                f"statuses {dict(statuses)}; {burst / wall:.0f} notifications/s; host CPU {cpu_each * 1000:.1f} ms "
                f"per notification (its decryption, checks and queue message)"
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
    parser.add_argument("--cpu-events", type=int, default=600, help="events for the CPU-per-event figure (0: skip)")
    parser.add_argument("--events", type=int, default=2000, help="events for the drain-rate figure (0: skip)")
    parser.add_argument("--latency-ms", type=int, default=50, help="fixed EHR latency L")
    parser.add_argument("--burst", type=int, default=1000, help="notifications in the webhook burst (0: skip)")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent webhook requests")
    parser.add_argument("--reliability", type=int, default=10_000, help="events for the reliability figure (0: skip)")
    parser.add_argument("--phases", action="store_true", help="print where an event's CPU goes, phase by phase")
    parser.add_argument("--events-per-visit", type=float, default=8.0, help="events per visit in the CPU figure")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.CRITICAL)  # the faults make the host log every retry with its traceback
    with azurite_env() as env:
        if args.cpu_events:
            cpu_per_event(env, args.cpu_events, args.latency_ms, per_visit=args.events_per_visit, phases=args.phases)
        if args.events:
            drain(env, args.events, args.latency_ms)
        if args.burst:
            webhook_burst(env, args.burst, args.concurrency)
        if args.reliability:
            reliability(env, args.reliability)
    return 0


if __name__ == "__main__":
    sys.exit(main())
