"""Writeback under process crashes: N events, K SIGKILLs of the Functions host, each followed by a restart.

    python -m benchmarks.crash [--events 2000] [--kills 5] [--visits 100] [--latency-ms 50]

The local Functions host runs as its own process (``python -m sandbox.host``, the repository's own
host.json: batchSize 16, visibilityTimeout 30 s, maxDequeueCount 5) against Azurite and the sandbox EHR,
which records every Epic ``SetExternalConnectionStatus`` call. Every event has an ExternalID of its own,
so the record counts each event's effect. The i-th kill comes when i/(K+1) of the events are written (plus
a random 0–300 ms, so it lands anywhere in a message's processing); a new host starts at once. Messages the
killed host held stay invisible for the queue extension's 10 minutes, so with kills the queue empties only
after ~11 min (every event's first effect comes much sooner: both times are printed).

Prints lost / duplicated / poisoned / drain time; the window of a repeated effect as it really was in this
run, measured on every event written once, in two parts: before the EHR acts (claim → EHR recorded the call;
the request is in flight) and after (EHR recorded → ledger row's Timestamp, i.e. the done mark stored); and
for each duplicate whether a kill fell inside that window around its first call: at most the longest
"before" ahead of it (the EHR acted on a request its dead sender had sent) or the longest "after" behind it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from benchmarks.writeback import azurite_env
from benchmarks.writeback_load import CLIENT_ID, seed_configuration, visit_context
from sandbox.ehr import EhrConfig, EhrSandbox, RegisteredClient
from sandbox.server import ServerThread, free_port
from shared.configurations.model import WritebackMode
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography, Settings
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import seal_event
from shared.writeback.ledger import DONE, TABLE

ROOT = Path(__file__).resolve().parent.parent
STARTED_LINE = "Host started on"


@dataclass
class Run:
    events: int
    kills: int
    visits: int
    latency_ms: int
    timeout: float
    seed: int
    logs: Path | None = None  # keep the hosts' logs here (default: a temporary directory, removed)


class HostProcess:
    """``python -m sandbox.host`` as a child process of its own (its own session: a kill reaches it alone)."""

    def __init__(self, port: int, settings_path: Path, workdir: Path) -> None:
        self.port = port
        self.settings_path = settings_path
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None
        self._log_path = workdir / "host-0.log"

    def start(self, timeout: float = 60.0) -> None:
        self.starts += 1
        self._log_path = self.workdir / f"host-{self.starts}.log"
        self._log = self._log_path.open("wb")
        command = [sys.executable, "-m", "sandbox.host", "--port", str(self.port)]
        command += ["--settings", str(self.settings_path), "--keys", str(self.workdir / "host-keys.json")]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if STARTED_LINE in self._log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the host exited at start; see {self._log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"the host did not start within {timeout} s; see {self._log_path}")

    def kill(self) -> float:
        """SIGKILL: no clean-up, no finally, nothing flushed. Returns the moment (time.time())."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        moment = time.time()
        self.process.wait(timeout=10)
        self._close_log()
        return moment

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def warnings(self, text: str) -> int:
        """Lines containing ``text`` over every host process's log."""
        return sum(path.read_text(errors="replace").count(text) for path in sorted(self.workdir.glob("host-*.log")))


@contextlib.contextmanager
def sandbox_ehr(connector_url: str, latency_ms: int) -> Iterator[EhrSandbox]:
    port = free_port()
    client = RegisteredClient(
        CLIENT_ID, (), jwks_url=f"{connector_url}/api/.well-known/jwks.json", grant_types=("client_credentials",)
    )
    ehr = EhrSandbox(EhrConfig(base_url=f"http://127.0.0.1:{port}", clients=(client,)))
    with ServerThread(ehr.app, port=port):
        ehr.faults.update({"latency_ms": latency_ms})
        yield ehr


def seed_visits(
    storage: Storage, sealer: Sealer, ehr: EhrSandbox, run_id: str, count: int
) -> tuple[str, list[tuple[str, str]]]:
    configuration = seed_configuration(storage, ehr.config.fhir_base, CLIENT_ID, WritebackMode.EPIC)
    repository = VisitRepository(storage, sealer)
    visits = []
    for n in range(count):
        seeded = ehr.clinic.visits[n % len(ehr.clinic.visits)]
        key = f"crash-{run_id}-{n}"
        repository.get_or_create(Geography.AMERICAS, key, configuration.id, visit_context(seeded))
        visits.append((key, seeded.csn))
    return configuration.id, visits


def make_events(
    sealer: Sealer, ehr: EhrSandbox, configuration_id: str, visits: list[tuple[str, str]], run_id: str, count: int
) -> list[VisitEvent]:
    """Events sealed as they are queued; each made-up participant linked to its visit, as Epic requires."""
    base = datetime.now(UTC).replace(microsecond=0)
    events = []
    for n in range(count):
        key, csn = visits[n % len(visits)]
        provider = n % 3 != 0
        ehr.state.link_launch({csn}, f"crash-{run_id}-{n}")
        event = VisitEvent(
            configuration_id=configuration_id,
            geography=Geography.AMERICAS.value,
            visit_key=key,
            kind=EventKind.CONNECTED if n % 2 == 0 else EventKind.DISCONNECTED,
            role=Role.PROVIDER if provider else Role.PATIENT,
            occurred_at=base + timedelta(milliseconds=n),
            source=Source.GRAPH,
            participant=f"{'Practitioner' if provider else 'Patient'}/crash-{run_id}-{n}",
            csn=csn,
        )
        events.append(seal_event(sealer, event))  # nothing in clear on the queue, as a launch event
    return events


def queue_client(connection_string: str, name: str) -> QueueClient:
    client = QueueClient.from_connection_string(
        connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def records(ehr: EhrSandbox, prefix: str) -> dict[str, list[float]]:
    """ExternalID → the times the EHR recorded a call for it."""
    found: dict[str, list[float]] = defaultdict(list)
    for change in ehr.connection_status_changes():
        if change.external_id.startswith(prefix):
            found[change.external_id].append(change.recorded_at)
    return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50": None, "p99": None, "max": None}
    return {
        "p50": round(statistics.median(seconds) * 1000, 1),
        "p99": round(percentile(seconds, 0.99) * 1000, 1),
        "max": round(max(seconds) * 1000, 1),
    }


def run(env: dict[str, str], spec: Run) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    port = free_port()
    connector = f"http://127.0.0.1:{port}"
    queue_name = f"wb-crash-{run_id}"
    rng = random.Random(spec.seed)
    with contextlib.ExitStack() as stack:
        ehr = stack.enter_context(sandbox_ehr(connector, spec.latency_ms))
        if spec.logs is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="crash-"))
        else:
            spec.logs.mkdir(parents=True, exist_ok=True)
            workdir = str(spec.logs)
        values = {
            **env,
            "PUBLIC_BASE_URL": connector,
            "WRITEBACK_QUEUE_NAME": queue_name,
            "AzureWebJobs.subscription_upkeep.Disabled": "true",
            "AzureWebJobs.sweep_expired_state.Disabled": "true",
        }
        settings_path = Path(workdir) / "local.settings.json"
        settings_path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        settings = Settings.from_env(values)
        storage = Storage(settings)
        sealer = Sealer.from_text(settings.sealing_keys.reveal())
        configuration_id, visits = seed_visits(storage, sealer, ehr, run_id, spec.visits)
        events = make_events(sealer, ehr, configuration_id, visits, run_id, spec.events)
        by_external = {f"crash-{run_id}-{n}": event for n, event in enumerate(events)}
        prefix = f"crash-{run_id}-"
        queue = queue_client(env["AzureWebJobsStorage"], queue_name)
        for event in events:
            queue.send_message(event.to_json())

        host = HostProcess(port, settings_path, Path(workdir))
        thresholds = [spec.events * (i + 1) // (spec.kills + 1) for i in range(spec.kills)]
        kills: list[float] = []
        restarts: list[float] = []
        origin = time.time()
        started = time.monotonic()
        host.start()
        drained: float | None = None
        emptied: float | None = None
        try:
            deadline = started + spec.timeout
            while time.monotonic() < deadline:
                written = len(records(ehr, prefix))
                if thresholds and written >= thresholds[0]:
                    thresholds.pop(0)
                    time.sleep(rng.uniform(0, 0.3))
                    kills.append(host.kill())
                    host.start()
                    restarts.append(time.time())
                    continue
                if written >= spec.events and drained is None:
                    drained = time.monotonic() - started
                if drained is not None and queue.get_queue_properties().approximate_message_count == 0:
                    emptied = time.monotonic() - started
                    break
                time.sleep(0.05)
            time.sleep(1.0)  # a last redelivery, if any, shows up before we count
        finally:
            host.stop()

        found = records(ehr, prefix)
        poison = queue_client(env["AzureWebJobsStorage"], f"{queue_name}-poison")
        poisoned = poison.get_queue_properties().approximate_message_count
        table = storage.for_geography(Geography.AMERICAS).table(TABLE)
        rows: dict[str, Any] = {}
        for key, _ in visits:
            for entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": key}):
                rows[entity["RowKey"]] = entity
        # The window of a repeated effect opens when the request leaves and closes when the done mark is stored.
        # Measured on the events written once: before = claim → EHR recorded (an upper bound on a request's
        # time in flight, as the claim precedes the send), after = EHR recorded → done mark stored (Timestamp).
        before: list[float] = []
        after: list[float] = []
        for external_id, times in found.items():
            row = rows.get(by_external[external_id].id)
            if len(times) == 1 and row is not None and row["State"] == DONE and int(row.get("Attempt") or 1) == 1:
                before.append(times[0] - row["ClaimedAt"].timestamp())
                after.append(row.metadata["timestamp"].timestamp() - times[0])
        longest_before = max(before) if before else 0.0
        longest_after = max(after) if after else 0.0
        duplicates: list[dict[str, Any]] = []
        for external_id, times in sorted(found.items()):
            if len(times) < 2:
                continue
            first = min(times)
            # The kill nearest to the EHR acting: after it (the done mark was not stored yet), or before it (the
            # EHR acted on a request its dead sender had sent).
            offsets = [k - first for k in kills]
            nearest = min(offsets, key=abs) if offsets else None
            row = rows.get(by_external[external_id].id)
            duplicates.append(
                {
                    "event": external_id.removeprefix(prefix),
                    "calls": len(times),
                    "kill_minus_first_call_ms": None if nearest is None else round(nearest * 1000, 1),
                    "in_window": nearest is not None and -longest_before <= nearest <= longest_after,
                    "ledger_attempt": None if row is None else row.get("Attempt"),
                }
            )
        return {
            "events": spec.events,
            "kills": len(kills),
            "lost": spec.events - len(found),
            "duplicated": len(duplicates),
            "extra_calls": sum(d["calls"] - 1 for d in duplicates),
            "poisoned": poisoned,
            "drain_seconds": drained,
            "queue_empty_seconds": emptied,
            "takeovers": sum(1 for row in rows.values() if int(row.get("Attempt") or 1) > 1),
            "not_done": sum(1 for row in rows.values() if row["State"] != DONE),
            "overran_lease": host.warnings("written after its claim was taken over"),
            "window_ms": {"before_ehr": summary(before), "after_ehr": summary(after)},
            "duplicates": duplicates,
            "timeline_s": {
                "kills": [round(k - origin, 3) for k in kills],
                "restarted": [round(r - origin, 3) for r in restarts],
                "first_calls_of_duplicates": sorted(
                    round(min(found[prefix + d["event"]]) - origin, 3) for d in duplicates
                ),
            },
        }


def report(result: dict[str, Any]) -> None:
    drain = result["drain_seconds"]
    window = result["window_ms"]
    print(
        f"{result['events']} events, {result['kills']} SIGKILLs of the host: "
        f"lost {result['lost']}, duplicated {result['duplicated']} ({result['extra_calls']} extra EHR calls), "
        f"poisoned {result['poisoned']}; every event's effect after "
        + (f"{drain:.1f} s" if drain is not None else "— (timeout)")
        + ", queue drained (empty) after "
        + (f"{result['queue_empty_seconds']:.1f} s" if result["queue_empty_seconds"] is not None else "— (timeout)")
    )
    for name, part in (("before", "claim → EHR recorded the call"), ("after", "EHR recorded → done mark stored")):
        w = window[f"{name}_ehr"]
        print(f"  window {name} the EHR acts ({part}): p50 {w['p50']} ms, p99 {w['p99']} ms, max {w['max']} ms")
    print(
        f"  ledger: {result['takeovers']} claims taken over after a kill, {result['not_done']} rows not done, "
        f"{result['overran_lease']} calls that outlived their lease"
    )
    inside = sum(1 for d in result["duplicates"] if d["in_window"])
    if result["duplicates"]:
        print(f"  duplicates inside the window: {inside} of {result['duplicated']}")
        for d in result["duplicates"]:
            print(
                f"    event {d['event']}: {d['calls']} calls; nearest kill {d['kill_minus_first_call_ms']} ms after "
                f"the first; ledger attempt {d['ledger_attempt']}; {'in' if d['in_window'] else 'OUTSIDE'} the window"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crash", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="events to drain (N)")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs of the host during the drain (K)")
    parser.add_argument("--visits", type=int, default=100, help="visits the events are spread over")
    parser.add_argument("--latency-ms", type=int, default=50, help="fixed EHR latency")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds before the run gives up")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print the result as JSON as well")
    parser.add_argument("--logs", type=Path, default=None, help="keep the hosts' logs in this directory")
    args = parser.parse_args(argv)
    spec = Run(args.events, args.kills, args.visits, args.latency_ms, args.timeout, args.seed, args.logs)
    with azurite_env() as env:
        result = run(env, spec)
    report(result)
    if args.json:
        print(json.dumps(result, indent=2))
    ok = result["lost"] == 0 and result["poisoned"] == 0 and all(d["in_window"] for d in result["duplicates"])
    return 0 if ok and (spec.kills or result["duplicated"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
