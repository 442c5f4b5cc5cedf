"""Usage report benchmark: prints figures (not a timed test).

    python -m benchmarks.report [--days 90] [--visits-per-day 500] [--full-day 50000] [--departments 20]

Seeds a private Azurite (in memory) with report facts: ``--days`` days of ``--visits-per-day`` visits each (a
scaled sample) plus one day of ``--full-day`` visits (the 50,000-a-day tenant), spread over ``--departments``
departments; computes the daily summaries as the report upkeep timer does; then opens the report page (the
function itself, session, template and all) for the 90 days, and exports a day.

Figures: Table transactions (HTTP requests to the table service, each query page counted) and wall/CPU time of
the 90-day page, of the timer's summary of one full day, and of recording one visit's events; with the
arithmetic that carries them from the sample to 90 days x 50,000 visits.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient

from sandbox import azurite
from sandbox.local_settings import local_values
from shared.configurations import model as cfg
from shared.configurations.model import Configuration, ConfigurationInput, Environment, Status, Vendor, WritebackMode
from shared.kernel.settings import Geography
from shared.microsoft.entra import GLOBAL_ADMINISTRATOR, PortalIdentity
from shared.reports.facts import VisitFacts, facts_from_event, merged
from shared.reports.recorder import report_visit_id
from shared.reports.store import TABLE, partition
from shared.visits.events import EventKind, Role, Source, VisitEvent, attendee_key
from shared.visits.sealed_context import seal_event
from tests.functions.portal_support import call

TENANT = "11111111-1111-4111-8111-111111111111"


class Requests:
    """Counts the HTTP requests this process sends to the table service (a query page is one request)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def installed(self, table_port: int) -> Iterator[Requests]:
        original = RequestsTransport.send
        marker = f":{table_port}/"

        def send(transport: RequestsTransport, request: Any, **kwargs: Any) -> Any:
            if marker in request.url:
                with self._lock:
                    self.counts[request.method] += 1
            return original(transport, request, **kwargs)

        RequestsTransport.send = send
        try:
            yield self
        finally:
            RequestsTransport.send = original

    def take(self) -> int:
        with self._lock:
            total, self.counts = sum(self.counts.values()), Counter()
        return total


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    requests: int = 0


@contextmanager
def measured(requests: Requests) -> Iterator[Measure]:
    requests.take()
    result = Measure()
    wall, cpu = time.perf_counter(), time.process_time()
    yield result
    result.wall, result.cpu = time.perf_counter() - wall, time.process_time() - cpu
    result.requests = requests.take()


def visit_events(rng: random.Random, config: str, geography: str, day: date, department: str) -> list[VisitEvent]:
    """One visit as the queue carries it: launches, then the roster (completed, no-show or left the lobby)."""
    key = uuid.uuid4().hex
    start = datetime.combine(day, datetime.min.time(), UTC) + timedelta(seconds=rng.randrange(6 * 3600, 20 * 3600))
    outcome = rng.choices(("completed", "no_show", "abandoned"), weights=(85, 10, 5))[0]

    def event(role: Role, kind: EventKind, seconds: float, source: Source = Source.GRAPH, **extra: Any) -> VisitEvent:
        return VisitEvent(config, geography, key, kind, role, start + timedelta(seconds=seconds), source, **extra)

    events = [
        event(Role.PROVIDER, EventKind.CONNECTED, 0, Source.LAUNCH, participant=f"Practitioner/{rng.randrange(400)}",
              department=department),
        event(Role.PROVIDER, EventKind.CONNECTED, 20, attendee=attendee_key(key + "p")),
    ]  # fmt: skip
    wait = rng.lognormvariate(5, 0.8)  # seconds in the lobby, median ~2.5 minutes
    if outcome != "no_show":
        events.append(event(Role.PATIENT, EventKind.LOBBY, 40, Source.LAUNCH))
        events.append(event(Role.PATIENT, EventKind.LOBBY, 45, attendee=attendee_key(key + "a")))
        if outcome == "completed":
            events.append(event(Role.PATIENT, EventKind.CONNECTED, 45 + wait, attendee=attendee_key(key + "a")))
            events.append(event(Role.PATIENT, EventKind.DISCONNECTED, 45 + wait + rng.uniform(300, 1800),
                                attendee=attendee_key(key + "a")))  # fmt: skip
        else:
            events.append(event(Role.PATIENT, EventKind.DISCONNECTED, 45 + wait, attendee=attendee_key(key + "a")))
    end = max(e.occurred_at for e in events) + timedelta(seconds=30)
    events.append(replace(events[1], kind=EventKind.DISCONNECTED, occurred_at=end, id=""))
    return events


def seed_day(
    services: Any, config: Configuration, day: date, visits: int, departments: int, secret: str, rng: random.Random
) -> None:
    """Write a day's fact rows in batches of 100 (what the recorder writes one event at a time)."""
    facts_store = services.report_facts
    table: TableClient = services.storage.for_geography(config.geography).table(TABLE)
    pk = partition(config.id, day)
    batch: list[tuple[str, dict[str, Any]]] = []
    for _ in range(visits):
        events = visit_events(rng, config.id, config.geography.value, day, f"{rng.randrange(departments):04d}")
        facts = VisitFacts()
        for e in events:
            facts = merged(facts, facts_from_event(e, organizer="o" if e.role is Role.PROVIDER else None))
        row = report_visit_id(secret, config.id, events[0].visit_key)
        batch.append(("create", facts_store.entity(config.geography, pk, row, facts)))
        if len(batch) == 100:
            table.submit_transaction(batch)
            batch = []
    if batch:
        table.submit_transaction(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--visits-per-day", type=int, default=500)
    parser.add_argument("--full-day", type=int, default=50_000)
    parser.add_argument("--departments", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    base = azurite.free_port_base()
    process = azurite.start(base)
    try:
        return run(args, base)
    finally:
        process.terminate()
        process.wait(timeout=10)


def run(args: argparse.Namespace, base: int) -> int:
    os.environ.update(local_values(base))
    from connector import reports as report_functions
    from connector.services import reset, services

    reset()
    svc = services()
    secret = svc.settings.connector_secret.reveal()
    rng = random.Random(15)
    requests = Requests()
    now = datetime.now(UTC)
    today = now.date()
    config = _configuration(svc)
    print(f"Seeding {args.days} days x {args.visits_per_day} visits and one day of {args.full_day} visits "
          f"({args.departments} departments) into Azurite ...", flush=True)  # fmt: skip
    started = time.perf_counter()
    full_day = today - timedelta(days=3)  # a closed day, in the middle of the range
    for offset in range(args.days):
        day = today - timedelta(days=offset)
        seed_day(svc, config, day, args.full_day if day == full_day else args.visits_per_day, args.departments,
                 secret, rng)  # fmt: skip
    print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)

    with requests.installed(base + 2):
        # The upkeep timer's job: each day's summary (the page reads these, never the facts of a closed day).
        print("\nSummaries (the report upkeep timer, every 15 minutes for the open days; once for a closed day)")
        with measured(requests) as full:
            svc.report_days.compute(config.geography, config.id, full_day, now=now)
        print(f"  one day of {args.full_day:,} visits: {full.requests} Table transactions, "
              f"{full.wall:.1f} s wall, {full.cpu:.1f} s CPU")  # fmt: skip
        # The day after it reads it by its keys only (and its visits across midnight in full): as today's summary
        # reads yesterday's partition in every run of the timer.
        with measured(requests) as keys:
            svc.report_days.compute(config.geography, config.id, full_day + timedelta(days=1), now=now)
        print(f"  the day after it ({args.visits_per_day} visits): {keys.requests} Table transactions, "
              f"{keys.wall:.1f} s wall, {keys.cpu:.2f} s CPU: it reads the {args.full_day:,}-visit day before by its "
              f"keys only")  # fmt: skip
        with measured(requests) as small:
            for offset in range(args.days):
                day = today - timedelta(days=offset)
                if day not in (full_day, full_day + timedelta(days=1)):
                    svc.report_days.compute(config.geography, config.id, day, now=now)
        others = max(1, args.days - 2)
        print(f"  the other {args.days - 2} days ({args.visits_per_day} visits each): {small.requests / others:.1f} "
              f"transactions and {small.wall / others * 1000:.0f} ms per day")  # fmt: skip

        # The page, as a browser asks for it: session read, settings, summaries, one page of appointments.
        session = svc.sessions.create(
            PortalIdentity(tenant_id=TENANT, object_id=str(uuid.uuid4()), upn="admin@contoso.example",
                           name="Avery Admin", wids=(GLOBAL_ADMINISTRATOR,))
        )  # fmt: skip

        def open_page(params: dict[str, str]) -> Any:
            # As the host calls it: the request with the session cookie, the function, its HTML response.
            response = call(report_functions.report_page, "GET", "r", session=session, params=params,
                            route={"id": config.id})  # fmt: skip
            assert response.status_code == 200, response.get_body()[:500]
            return response

        open_page({"days": "90"})  # warm: templates compiled, tables known
        pages = []
        for _ in range(args.repeats):
            with measured(requests) as one:
                body = open_page({"days": "90", "day": full_day.isoformat()}).get_body()
            pages.append(one)
        print(f"\n{args.days}-day report page (median of {args.repeats}; {len(body) // 1024} KiB of HTML)")
        print(f"  Table transactions: {pages[0].requests} (session 1, configuration 1, the user's configurations 1, "
              f"settings 1, summaries {pages[0].requests - 5} query page(s) for {args.days} days x "
              f"{args.departments} departments + {args.days} markers, appointments 1)")  # fmt: skip
        print(f"  time: {statistics.median(p.wall for p in pages) * 1000:.0f} ms wall, "
              f"{statistics.median(p.cpu for p in pages) * 1000:.0f} ms CPU")  # fmt: skip
        with measured(requests) as dept:
            open_page({"days": "90", "department": "0003"})
        print(f"  with a department filter: {dept.requests} transactions, {dept.wall * 1000:.0f} ms")

        # Recording directly (``FactRecorder``): what an event that failed for good without its facts kept costs
        # (the writeback worker folds every other event's facts into its visit row write, at no Table operation).
        events = visit_events(rng, config.id, config.geography.value, today, "0001")
        fresh = svc
        bodies = [seal_event(fresh.sealer, e).to_json() for e in events]
        with measured(requests) as first:  # settings read once per process, the visit-day's insert, the day's list
            fresh.report_recorder.record(bodies[0])
        with measured(requests) as rec:
            for b in bodies[1:]:
                fresh.report_recorder.record(b)
        with measured(requests) as dup:
            for b in bodies:
                fresh.report_recorder.record(b)
        print(f"\nRecording one visit directly ({len(events)} events; only events that failed for good are): the "
              f"first {first.requests} Table transactions (the settings' read, once a minute per process; the row's "
              f"insert; the day's list, once per process; the day's mark), the {len(events) - 1} others "
              f"{rec.requests} (each an etag-guarded write, the day's mark, a read and a write, and a point read of "
              f"each neighbouring day); all again as duplicates: {dup.requests}; "
              f"{rec.wall / max(1, len(events) - 1) * 1000:.1f} ms per event")  # fmt: skip

    full_pages = -(-args.full_day // 1000)
    print("\nArithmetic for 90 days x 50,000 visits a day")
    print(f"  page: summaries are per day and department, not per visit: {args.days} x {args.departments} rows "
          f"+ {args.days} markers = {args.days * (args.departments + 1)} rows, "
          f"{-(-args.days * (args.departments + 1) // 1000)} query page(s) whatever the visits a day; the "
          f"appointments table reads one page of 50 rows: the page above is the 50,000-a-day page")  # fmt: skip
    full_read = 3 * full_pages + 2  # three partitions of 50,000 rows (the first by keys), the summaries' query, batch
    # A run computes the recent days written since their summaries (shared.reports.retention.refresh_open_days):
    # late in the day today alone, reading yesterday's partition by its keys, today's and tomorrow's (an empty
    # page); the 3 days' stored summaries and markers (one query), the 3 days' lists of configurations, the settings,
    # the summary rows' query and a batch (with its marker), and the copy's mark of today (a read and a write).
    # Yesterday is computed too only in the runs after midnight and in the 3-hourly repair: the day before
    # yesterday's partition more (by its keys), and the day's settings, query and batch.
    open_days = 2 * full_pages + 1 + 1 + 3 + 3 + 2  # late in the day, today's partition full
    with_yesterday = open_days + full_pages + 3
    print(f"  timer: among days of 50,000 visits a day a summary reads 3 partitions, {full_read} transactions "
          f"(measured here {full.requests} with smaller neighbours, {full.wall:.0f} s, {full.cpu:.1f} s CPU); a run "
          f"computes only the days written since their summaries: late in the day today, reading yesterday's "
          f"partition by its keys ({keys.cpu:.2f} s of CPU measured above) and today's, ~{open_days} transactions and "
          f"~{full.cpu + keys.cpu:.1f} s of CPU per 15-minute run and configuration; with yesterday too (its runs "
          f"after midnight, and every 3 hours: the day before yesterday by its keys, yesterday in full, and today's "
          f"summary going through yesterday's rows again) ~{with_yesterday} and ~{4 * full.cpu + keys.cpu:.0f} s "
          f"(benchmarks.cost averages over the day)")  # fmt: skip
    print(f"  recording: 50,000 visits x {len(events)} events = {50_000 * len(events):,} events a day, folded "
          f"into the writeback's visit row writes; only an event failed for good is recorded directly")  # fmt: skip
    return 0


def _configuration(svc: Any) -> Configuration:
    now = datetime.now(UTC)
    data = ConfigurationInput(
        organization="Benchmark Health", fhir_base_url="https://ehr.bench.example/api/FHIR/R4",
        environment=Environment.PRODUCTION, approver_upn="analyst@contoso.example", geography=Geography.AMERICAS,
        vendor=Vendor.EPIC, provider_client_id="p", patient_client_id="q", writeback_mode=WritebackMode.NONE,
    )  # fmt: skip
    config = cfg.new_configuration(TENANT, data, by="admin@contoso.example", now=now)
    created: Configuration = svc.configurations.create(
        replace(config, status=Status.APPROVED, approved_by="analyst@contoso.example", approved_at=now)
    )
    return created


if __name__ == "__main__":
    raise SystemExit(main())
