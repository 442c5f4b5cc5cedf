"""What 1,000 visits cost in Azure: Functions (Flex Consumption) and Storage, from measured counts and list prices.

    python -m benchmarks.cost [--presence-executions 30] [--instance-memory-mb 2048] [--writeback epic] ...

Arithmetic, not a measurement: every input is a flag whose default is a figure measured by the other
benchmarks in this folder (stated below with its source) or an assumption stated as one. It prints the
inputs, then the cost per 1,000 visits for 50,000 visits a day with an 8 a.m. peak of 2,000 launches a minute.

How Flex Consumption bills (on demand): executions ($ per million), and GB-s = the instance memory times the
time each instance is actively executing at least one function — concurrent executions on one instance share
it. HTTP functions scale together on their own instances; every queue or timer function on instances of its
own. So GB-s are modelled per hour of the day: concurrent executions = arrival rate x wall time (Little's law);
an instance is active for the share of the hour it has work (1 - e^-concurrency for the first instance);
instances = max(HTTP concurrency / per-instance concurrency, CPU demand / 70 % of the instance's vCPU).
The free monthly grants (100,000 GB-s, 250,000 executions) are left out: at this volume they are noise.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from sandbox.host.queues import MIN_POLLING

# Share of the day's visits per hour (clinic hours); the 8 a.m. hour holds the peak.
HOURLY_SHARE = {7: 0.04, 8: 0.14, 9: 0.12, 10: 0.11, 11: 0.10, 12: 0.06, 13: 0.09, 14: 0.10, 15: 0.09, 16: 0.08,
                17: 0.05, 18: 0.02}  # fmt: skip
# vCPU of a Flex Consumption instance by memory size (MB): "CPU and network bandwidth are allocated proportionally"
# to the instance memory (FunctionsScaleAndConcurrency.instance_memory_mb, azure-mgmt-web reference), 2048 MB ~ 1 vCPU.
VCPU = {512: 0.25, 2048: 1.0, 4096: 2.0}
# HTTP invocations per instance: infra/app/api.bicep's httpPerInstanceConcurrency for each size (--http-concurrency).
HTTP_CONCURRENCY = {512: 8, 2048: 16, 4096: 32}
# Measured by benchmarks.writeback (host CPU ms per event, Table operations per event), 8 events per visit:
# (writeback mode, usage report analytics on). Overridable: --writeback-cpu-ms, --writeback-table-ops.
# The mean of two runs, 6 December 2026, 10:39 and 10:48 UTC: CPU of the 6 rounds' 100 events the host ran in turn
# with the floor's; Table operations of all its 1,200 events (the 600 more it ran at the same moment as the floor's).
MEASURED_WRITEBACK = {
    ("fhir", False): (3.52, 2.0),
    ("fhir", True): (3.54, 2.0),
    ("epic", False): (5.20, 4.11),  # a meeting's end: 1 ledger query, the release in the presence write (1 in 10)
    ("epic", True): (5.26, 4.11),
}
# The usage report's copy into ReportVisits per visit (Table operations, CPU ms): benchmarks.writeback measures a
# visit's first copy (1.10 operations, 1.0 ms); a visit still changing when the timer runs is copied again at the
# next run (an insert refused, a read, an update: 3 operations, ~1 ms), so a 20-minute visit under a 15-minute timer
# is copied ~2.3 times: 1.1 + 1.3 x 3 = 5 operations, 2.3 ms (assumed from those measurements).
REPORT_COPY = (5.0, 2.3)
# The usage report's day summaries (timer report_upkeep, every 15 minutes): benchmarks.report measures one day of
# 50,000 visits summarized — its partition read (50 query pages) with its smaller neighbours and every visit
# summarized — as 4.4 s of CPU and 7.2 s of wall time against Azurite on this machine, and the day after it, whose
# summary reads that day by its keys only (as today's reads yesterday's), as 0.51 s and 3.2 s (README "Usage report").
REPORT_DAY = (50_000, 4.4, 7.2)  # visits of the measured day, CPU s, wall s
REPORT_KEYS = (0.51, 3.2)  # the day after it (500 visits of its own): CPU s, wall s
TIMER_RUNS_PER_DAY = 96  # every 15 minutes
# Runs a day that compute yesterday again: while its visits across midnight still change it (they end within the
# first hour: 4 runs, on the safe side, as hardly any visit runs at midnight at the 8 a.m. peak's shape), and the
# repair every ``shared.reports.days.SETTLED`` (3 hours: 8 runs); and the day before yesterday once, after it closes.
YESTERDAY_RUNS = 4 + 8
CLOSING_RUNS = 1
MIDNIGHT_RUNS = 4  # runs whose copy marks yesterday too (its visits across midnight)
QUEUE_IN_FLIGHT = 24  # production host.json: batchSize 16 + newBatchThreshold 8
POLL_CEILING = 2.0  # host.json's maxPollingInterval


def polls_per_second(rate: float, maximum: float = POLL_CEILING) -> float:
    """Receives one listener makes per second while messages arrive at ``rate`` a second (Poisson).

    The queue trigger's polling (``sandbox.host.queues.PollingBackoff``, as the Storage Queues extension computes it):
    100 ms after a receive that found messages; after the n-th empty one in a row 100 ms plus 100 ms x 2^(n-1)
    (randomized by 0.8-1.2, 1 on average), until that reaches ``maximum``. A Markov chain over those delays: in state
    k the listener waits the k-th, then finds a message with probability 1 - e^(-rate x delay) (back to 100 ms) or
    not (the next state, the last one kept). The answer is 1 / the mean delay of its stationary distribution. Each
    receive is one billed queue operation, whether it finds up to batchSize messages or none: at a few events a
    second most find one message or none."""
    delays = [MIN_POLLING]
    while delays[-1] < maximum:
        delays.append(min(maximum, MIN_POLLING + MIN_POLLING * 2 ** (len(delays) - 1)))
    share = [1.0 / len(delays)] * len(delays)
    for _ in range(500):  # converges in far fewer steps
        step = [0.0] * len(delays)
        for k, weight in enumerate(share):
            found = 1 - math.exp(-rate * delays[k])
            step[0] += weight * found
            step[min(k + 1, len(delays) - 1)] += weight * (1 - found)
        share = step
    return 1 / sum(weight * wait for weight, wait in zip(share, delays, strict=True))


def receives_per_event(events_per_day: float) -> float:
    """Queue receives per writeback event over the day: one listener on the writeback queue through clinic hours
    (its concurrency stays under one instance's 24 in flight; see the GB-s model), none when Flex Consumption has
    scaled it to zero. The scale controller's own look at the queue's length is not counted (not documented)."""
    receives = sum(3600 * polls_per_second(events_per_day * share / 3600) for share in HOURLY_SHARE.values())
    return receives / events_per_day


@dataclass(frozen=True)
class Kind:
    """One kind of execution: how many per visit, wall seconds each, host CPU seconds each, storage per each."""

    name: str
    group: str  # "http" (scaled together) or the function's own name (queue, timer)
    per_visit: float
    wall: float
    cpu: float
    table_ops: float
    queue_ops: float
    executes: bool = True  # False: more work of another kind's execution (no execution of its own)


def kinds(args: argparse.Namespace) -> list[Kind]:
    writeback_ops = args.writeback_table_ops
    return [
        Kind("launch URL hop", "http", args.launches_per_visit, 0.03, args.launch_cpu_ms / 2000, 0, 0),
        Kind(
            "launch callback",
            "http",
            args.launches_per_visit,
            args.callback_wall,
            args.launch_cpu_ms / 2000,
            args.launch_table_ops,
            1,
        ),  # fmt: skip
        # The provider's first launch of a visit creates its row and its meeting: more of the callback's execution.
        Kind(
            "first launch of a visit (extra)",
            "http",
            1,
            args.first_launch_extra_wall,
            args.first_launch_extra_cpu_ms / 1000,
            args.first_launch_extra_table_ops,
            0,
            executes=False,
        ),
        Kind("provider page", "http", args.provider_pages_per_visit, 0.03, args.page_cpu_ms / 1000, 1, 0),
        Kind("presence", "http", args.presence_executions, 0.02, args.presence_cpu_ms / 1000, 1, 0),
        # Its queue output puts each event of the notification on the writeback queue (a launch's puts its one).
        Kind(
            "Graph webhook",
            "http",
            args.notifications_per_visit,
            0.03,
            args.notification_cpu_ms / 1000,
            0,
            (args.events_per_visit - args.launches_per_visit) / args.notifications_per_visit,
        ),
        Kind(
            "writeback event",
            "writeback_events",
            args.events_per_visit,
            args.writeback_wall,
            args.writeback_cpu_ms / 1000,
            writeback_ops,
            1 + args.receives_per_event,  # its delete; the put is the launch's or the webhook's
        ),  # fmt: skip
        # The usage report's copy of a visit's facts from its row into ReportVisits (the timers, every 15 minutes:
        # no execution of its own per visit, so no wall time here).
        Kind(
            "usage report copy (timer)",
            "report_upkeep",
            1,
            0.0,
            args.report_copy_cpu_ms / 1000,
            args.report_copy_table_ops if args.usage_report == "on" else 0.0,
            0,
        ),  # fmt: skip
    ]


@dataclass(frozen=True)
class Summaries:
    """One run of the report timer's day summaries for a configuration with all of the day's visits."""

    today_share: float  # today's partition, as a share of a whole day, averaged over the day's runs
    partitions: float  # whole days' partitions read per run
    transactions: float
    cpu_s: float
    wall_s: float


def report_summaries(args: argparse.Namespace) -> Summaries:
    """Each run computes the recent days that are not up to date (``shared.reports.retention.refresh_open_days``):
    today, whose facts change all day; yesterday in ``YESTERDAY_RUNS`` runs a day; the day before yesterday in
    ``CLOSING_RUNS``. A summary reads the day before its day by its keys only (``ReportDays._neighbourhood``; its
    visits across midnight in full, a few point reads), its own day and the day after in full; days computed in one
    run, oldest first, share the partitions read in full. Today's summary reads yesterday's keys and today's rows so
    far (tomorrow's are none); in a run that computes yesterday too, yesterday's reads the day before yesterday's
    keys, yesterday's and today's rows, and today's summary goes through yesterday's rows again instead of reading
    its keys; the closing day's reads the keys of the day before it and two days in full. CPU and wall are scaled
    from the measured day (one partition read and gone through in full) and the measured read by keys, an estimate
    on the safe side: a partition gone through again is counted as a full day's read, and so is every whole day."""
    shares = [0.0] * 24 * 4  # today's share of the day's visits at each quarter-hour run
    done = 0.0
    for quarter in range(len(shares)):
        hour = quarter // 4
        done += HOURLY_SHARE.get(hour, 0.0) / 4
        shares[quarter] = done
    today = sum(shares) / len(shares)
    yesterday = YESTERDAY_RUNS / TIMER_RUNS_PER_DAY  # the share of runs that compute yesterday too
    closing = CLOSING_RUNS / TIMER_RUNS_PER_DAY
    partitions = 1 + today + yesterday + 2 * closing  # read per run, on average
    pages = partitions * math.ceil(args.visits_per_day / 1000) + 1  # + tomorrow's empty page
    # Per run: the 3 days' stored summaries and markers (one query), 3 days' lists of configurations, the settings,
    # the summary rows' query and a batch (with the day's marker) per day computed, and the copy's marks of the days
    # it touched (a read and a write each: today's; in the runs after midnight yesterday's too).
    days_computed = 1 + yesterday + closing
    marks = 2 * (1 + MIDNIGHT_RUNS / TIMER_RUNS_PER_DAY)
    transactions = pages + 1 + 3 + 3 * days_computed + marks
    full = today + (yesterday + closing) + yesterday * (1 + today) + 2 * closing  # days gone through in full
    keys = (1 - yesterday - closing) + yesterday + closing  # days read by their keys
    size = args.visits_per_day / REPORT_DAY[0]
    cpu = (full * args.report_day_cpu_s + keys * args.report_keys_cpu_s) * size
    wall = (full * args.report_day_wall_s + keys * args.report_keys_wall_s) * size
    return Summaries(today, partitions, transactions, cpu, wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost", description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--visits-per-day", type=float, default=50_000)
    add("--peak-launches-per-minute", type=float, default=2_000)
    add(
        "--instance-memory-mb",
        type=int,
        choices=sorted(VCPU),
        default=512,
        help="infra/app/api.bicep's instanceMemoryMB (512: the host's measured peak RSS fits, see the README)",
    )
    add("--http-concurrency", type=int, default=None, help="HTTP invocations per instance (default: infra's)")
    # counts and CPU, measured (benchmarks.launch / .writeback) unless said otherwise
    add("--launches-per-visit", type=float, default=2.0, help="assumed: the clinician's and the patient's")
    add("--provider-pages-per-visit", type=float, default=1.0, help="the provider page after a provider launch")
    add("--launch-cpu-ms", type=float, default=7.0, help="measured: host CPU per warm launch (benchmarks.launch)")
    add("--launch-table-ops", type=float, default=1.0, help="measured: Table operations per warm launch")
    add("--first-launch-extra-table-ops", type=float, default=3.0,
        help="measured: the visit row's creation, its read and its meeting's write (benchmarks.launch)")  # fmt: skip
    add("--first-launch-extra-cpu-ms", type=float, default=11.0,
        help="measured: host CPU of a visit's first provider launch beyond a warm one, 8.9-10.6 ms "
             "(benchmarks.launch)")  # fmt: skip
    add("--first-launch-extra-wall", type=float, default=0.5,
        help="assumed: seconds, Graph's createOrGet and the lobby PATCH in that launch")  # fmt: skip
    add("--callback-wall", type=float, default=0.4, help="assumed: seconds, mostly the EHR's token endpoint")
    add("--presence-executions", type=float, default=19.6,
        help="measured: presence executions per visit, mean of the typical visits benchmarks.presence replays "
             "(29 at most)")  # fmt: skip
    add("--page-cpu-ms", type=float, default=2.9, help="measured: host CPU of the provider page (benchmarks.launch)")
    add("--presence-cpu-ms", type=float, default=2.5,
        help="measured: host CPU of a poll whose panel changed, its HTML fragment (benchmarks.launch; an unchanged "
             "poll's 304, most of them, 1.9 ms)")  # fmt: skip
    add(
        "--notification-cpu-ms",
        type=float,
        default=2.0,
        help="measured: host CPU per Graph notification: decryption, checks, queue output (benchmarks.writeback)",
    )
    add("--notifications-per-visit", type=float, default=6.0,
        help="assumed: Graph rosterUpdated/callEnded deliveries (joins, lobby, admission, leaves, end)")  # fmt: skip
    add("--events-per-visit", type=float, default=8.0, help="assumed: 2 launch events + 6 Graph events")
    add("--writeback", choices=("fhir", "epic"), default="fhir")
    add("--usage-report", choices=("on", "off"), default="on", help="analytics (on by default for a configuration)")
    add("--writeback-cpu-ms", type=float, default=None, help="host CPU per event (default: measured, see above)")
    add("--writeback-table-ops", type=float, default=None, help="Table operations per event (default: measured)")
    add("--writeback-wall", type=float, default=0.3, help="assumed: seconds, mostly the EHR call")
    add("--subscription-table-ops", type=float, default=2.0, help="assumed: subscription create + renewals")
    add("--report-copy-table-ops", type=float, default=REPORT_COPY[0],
        help="measured: Table operations per visit of the usage report's copy (benchmarks.writeback)")  # fmt: skip
    add("--report-copy-cpu-ms", type=float, default=REPORT_COPY[1], help="measured: its CPU per visit")
    add("--report-day-cpu-s", type=float, default=REPORT_DAY[1],
        help=f"measured: CPU of one {REPORT_DAY[0]:,}-visit day's summary (benchmarks.report)")  # fmt: skip
    add("--report-day-wall-s", type=float, default=REPORT_DAY[2],
        help="measured: its wall time against Azurite (the real service's page latency adds to it)")  # fmt: skip
    add("--report-keys-cpu-s", type=float, default=REPORT_KEYS[0],
        help="measured: CPU of reading that day by its keys only (benchmarks.report, the day after it)")  # fmt: skip
    add("--report-keys-wall-s", type=float, default=REPORT_KEYS[1], help="measured: its wall time against Azurite")
    # List prices (USD, East US, pay as you go); each a flag, to be checked against the pricing pages:
    #   GB-s: $0.000026 "Flex Consumption ... Execution Time: $0.000026 per GB-second" (modal.com, "Azure Functions
    #     pricing: Consumption vs. Flex Consumption", May 2025; azure.microsoft.com/pricing/details/functions);
    #   executions: $0.40 per million, the same pricing page (not confirmed by the sources searched here);
    #   Table: $0.00036 per 10,000 transactions, Queue (GPv2): $0.004 per 10,000 operations
    #     (azure.microsoft.com/pricing/details/storage/tables and .../storage/queues; not confirmed here either).
    add("--price-gb-s", type=float, default=0.000026, help="Flex Consumption on demand, per GB-s")
    add("--price-million-executions", type=float, default=0.40, help="Flex Consumption, per million executions")
    add("--price-table-10k", type=float, default=0.00036, help="Table storage, per 10,000 transactions")
    add("--price-queue-10k", type=float, default=0.004, help="Queue storage (GPv2), per 10,000 operations")
    add(
        "--receives-per-event",
        type=float,
        default=None,
        help="queue receives per writeback event (default: from the listener's polling at the day's hourly rates)",
    )
    args = parser.parse_args(argv)
    if args.receives_per_event is None:
        args.receives_per_event = receives_per_event(args.visits_per_day * args.events_per_visit)
    cpu_ms, table_ops = MEASURED_WRITEBACK[(args.writeback, args.usage_report == "on")]
    args.writeback_cpu_ms = cpu_ms if args.writeback_cpu_ms is None else args.writeback_cpu_ms
    args.writeback_table_ops = table_ops if args.writeback_table_ops is None else args.writeback_table_ops

    gb = args.instance_memory_mb / 1024
    vcpu = VCPU[args.instance_memory_mb]
    http_per_instance = args.http_concurrency or HTTP_CONCURRENCY[args.instance_memory_mb]
    rows = kinds(args)
    per_visit_executions = sum(k.per_visit for k in rows if k.wall > 0 and k.executes)
    table_ops = sum(k.per_visit * k.table_ops for k in rows) + args.subscription_table_ops
    queue_ops = sum(k.per_visit * k.queue_ops for k in rows)

    print("Inputs per visit (flags; measured ones from benchmarks.launch and benchmarks.writeback):")
    for k in rows:
        print(f"  {k.name:<32} {k.per_visit:>5g} x  wall {k.wall * 1000:>4.0f} ms, host CPU {k.cpu * 1000:>4.1f} ms, "
              f"Table {k.table_ops:g}, Queue {k.queue_ops:.2f}")  # fmt: skip
    print(f"  presence executions per visit: {args.presence_executions:g} (benchmarks.presence)")
    print(f"  writeback: {args.writeback}, usage report {args.usage_report} ({args.writeback_cpu_ms} ms CPU, "
          f"{args.writeback_table_ops} Table operations per event)")  # fmt: skip
    print(f"  instance: {args.instance_memory_mb} MB, {vcpu:g} vCPU, HTTP concurrency {http_per_instance}")

    # GB-s per day, hour by hour, per scaling group.
    gb_seconds = 0.0
    peak_instances = 0
    for hour, share in HOURLY_SHARE.items():
        visits_per_second = args.visits_per_day * share / 3600
        for group in sorted({k.group for k in rows}):
            members = [k for k in rows if k.group == group and k.wall > 0]
            concurrency = sum(visits_per_second * k.per_visit * k.wall for k in members)
            cpu = sum(visits_per_second * k.per_visit * k.cpu for k in members)
            slots = http_per_instance if group == "http" else QUEUE_IN_FLIGHT
            instances = max(concurrency / slots, cpu / (0.7 * vcpu))
            busy = (1 - math.exp(-concurrency)) + max(0.0, instances - 1)  # first instance idles between arrivals
            gb_seconds += busy * 3600 * gb
            if hour == 8:
                peak_instances = max(peak_instances, math.ceil(instances))
    # The peak minute: 2,000 launches a minute on the HTTP group alone.
    peak_visits = args.peak_launches_per_minute / 60 / args.launches_per_visit  # visits a second whose launches come
    launch_rows = [k for k in rows if "launch" in k.name]  # the two hops and the first launch's meeting
    peak_concurrency = sum(peak_visits * k.per_visit * k.wall for k in launch_rows)
    peak_cpu = sum(peak_visits * k.per_visit * k.cpu for k in launch_rows)
    peak_http = math.ceil(max(peak_concurrency / http_per_instance, peak_cpu / (0.7 * vcpu)))

    summaries = report_summaries(args) if args.usage_report == "on" else None
    if summaries is not None:
        active = max(summaries.wall_s, summaries.cpu_s / vcpu)  # a small instance is CPU-bound on it
        gb_seconds += active * TIMER_RUNS_PER_DAY * gb
        table_ops += summaries.transactions * TIMER_RUNS_PER_DAY / args.visits_per_day
        print(f"  usage report day summaries (timer, {TIMER_RUNS_PER_DAY} runs a day, all visits in one "
              f"configuration): per run {summaries.partitions:.2f} partitions of a day's facts read "
              f"(yesterday's by its keys for today's visits, today so far: {summaries.today_share:.2f} of a day on "
              f"average; the day before yesterday's keys and yesterday in full in the {YESTERDAY_RUNS} runs a day that "
              f"compute yesterday again, and the day before that when it closes), "
              f"{summaries.transactions:.0f} Table transactions, "
              f"~{summaries.cpu_s:.1f} s CPU, ~{active:.0f} s of one instance "
              f"({active * TIMER_RUNS_PER_DAY * gb:,.0f} GB-s a day)")  # fmt: skip

    per_1000 = 1000 / args.visits_per_day
    compute_gb_s = gb_seconds * args.price_gb_s * per_1000
    executions = per_visit_executions * 1000 * args.price_million_executions / 1e6
    tables = table_ops * 1000 * args.price_table_10k / 1e4
    queues = queue_ops * 1000 * args.price_queue_10k / 1e4
    total = compute_gb_s + executions + tables + queues
    print(f"\nPer visit: {per_visit_executions:.0f} executions, {table_ops:.1f} Table operations, "
          f"{queue_ops:.1f} queue operations")  # fmt: skip
    peak = f"{args.peak_launches_per_minute:,.0f} launches"
    print(f"Per day: {gb_seconds:,.0f} GB-s ({args.instance_memory_mb} MB instances); 8 a.m. hour needs "
          f"{peak_instances} instance(s) per group; the peak minute ({peak}) {peak_http} HTTP instance(s) "
          f"({peak_concurrency:.0f} launches in flight, {peak_cpu:.2f} cores)")  # fmt: skip
    print(f"Prices (list prices, USD, East US; sources in the code): ${args.price_gb_s}/GB-s, "
          f"${args.price_million_executions}/million executions, ${args.price_table_10k}/10k Table transactions, "
          f"${args.price_queue_10k}/10k queue operations")  # fmt: skip
    print("Per 1,000 visits:")
    for label, value in (("Functions GB-s", compute_gb_s), ("Functions executions", executions),
                         ("Table transactions", tables), ("Queue operations", queues)):  # fmt: skip
        print(f"  {label:<22} ${value:.4f}")
    print(f"  {'total':<22} ${total:.4f} (target <= $0.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
