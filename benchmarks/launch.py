"""Launch benchmark: prints figures (not a timed test).

    python -m benchmarks.launch [--latency-ms 50] [--concurrency 500] [--warm-runs 30]

The real function app runs in the local Functions host **in a process of its own**
(``benchmarks.host_process``); the sandbox EHR, Entra ID and Graph run in this process, Azurite in a Node
process. The EHR and Graph stand-ins add a fixed latency L to every call. CPU is measured with CPU clocks
(the machine is shared, so wall times are noise): the host process's ``time.process_time``, read before and
after each launch. The host's queue and timer functions are disabled (``AzureWebJobs.<name>.Disabled``), so
the writeback of the launch's event is not counted as launch CPU (``benchmarks.writeback`` counts it).

Figures:
  * warm provider / patient launch (the launch URL and the callback, both hops): host CPU per launch, and the
    floor measured in the same run (``benchmarks.launch_floor`` in a process of its own, plus what the host does
    for any launch: two minimal requests through the same host, and the launch event's queue message, which the
    host sends as the function's output binding — in Azure the Functions host, not the app's worker), in 10
    short rounds, each round's launches against the floor measured right after them: the median of those
    ratios, target <= 1.5 (and the ratio of the run's medians; and both without the queue message);
  * Table operations per warm launch (target <= 2) and discovery / JWKS fetches (target 0);
  * host CPU of the provider page and of one poll of its live panel (changed, and unchanged: a 304), the
    requests ``benchmarks.cost`` counts besides the launches;
  * a fresh host process: CPU to import and index the app, and its first launch *including meeting
    creation* (createOrGet + lobby PATCH, the app-only token, discovery, JWKS): target <= 300 ms of CPU;
  * N concurrent patient launches: errors, wall p50 / p99, host CPU per launch, and what that means for
    1, 4 and 20 instances at the 8 a.m. peak (2,000 launches a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from benchmarks.host_process import HostProcess, ServedChild
from sandbox import azurite
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID, DEMO_PROVIDER_CLIENT_ID
from sandbox.ehr.config import JWKS_PATH
from sandbox.seed import CONTOSO
from sandbox.server import free_port
from tests.sandbox.entra_browser import authorization_response, choose_account
from tests.support.launch_world import LEE, LEE_UPN, SMITH, SMITH_UPN, LaunchWorld, launch_world

ROOT = Path(__file__).resolve().parent.parent
SMITH_OID = "b0000000-0000-4000-8000-000000000001"
# The host's queue and timer functions: a launch's CPU is the launch's alone.
BACKGROUND_FUNCTIONS = ("writeback_events", "sweep_expired_state", "subscription_upkeep", "report_upkeep")
PEAK_LAUNCHES_PER_MINUTE = 2000
ROUNDS = 10  # warm launches and floor measurements alternate in this many short rounds (see FloorProcess)
INSTANCE_COUNTS = (1, 4, 20)


class Latency:
    """ASGI middleware adding a fixed delay to every request of a stand-in."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.seconds:
            await asyncio.sleep(self.seconds)
        await self.app(scope, receive, send)


def discovery_fetches(world: LaunchWorld) -> int:
    """Requests for SMART discovery, the CapabilityStatement or the EHR's keys that reached the EHR."""
    paths = ("/api/FHIR/R4/.well-known", "/api/FHIR/R4/metadata", JWKS_PATH, "/oauth2/.well-known")
    return sum(world.counter.count(path) for path in paths)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def host_settings(world_environ: dict[str, str], **extra: str) -> dict[str, str]:
    disabled = {f"AzureWebJobs.{name}.Disabled": "true" for name in BACKGROUND_FUNCTIONS}
    return {**world_environ, **disabled, **extra}


PHASES: list[bool] = []  # --phases: the main host times a warm launch's phases
PROFILE: list[Path] = []  # --profile: where the main host writes its cProfile of the warm launches


def separate_host(environ: dict[str, str], port: int) -> HostProcess:
    return HostProcess(host_settings(environ), port, profile=PROFILE[0] if PROFILE else None, phases=bool(PHASES))


class Launcher:
    """A browser without JavaScript: follows a launch hop by hop against one host."""

    def __init__(self, world: LaunchWorld, base: str | None = None) -> None:
        self.world = world
        self.base = base or world.url
        self.client = httpx.Client(timeout=60, follow_redirects=False)

    def launch(self, record: str, appointment: str, user: str, *, sign_in_as: str | None = None) -> tuple[float, str]:
        """Wall seconds of the connector's two hops (the launch URL and the callback), and where it sent the user."""
        world = self.world
        url = world.launch_url(record, appointment, user).replace(world.url, self.base, 1)
        started = time.perf_counter()
        begin = self.client.get(url)
        connector = time.perf_counter() - started
        if begin.status_code == 200:  # POST to authorize
            raise RuntimeError("unexpected POST authorize in the benchmark")
        assert begin.status_code == 303, begin.text
        authorized = self.client.get(begin.headers["location"])
        assert authorized.status_code in (302, 303), authorized.text
        started = time.perf_counter()
        callback = self.client.get(authorized.headers["location"])
        connector += time.perf_counter() - started
        if callback.status_code == 200:  # a first launch: the page explaining the one-time sign-in
            assert sign_in_as, "a sign-in was not expected"
            # A browser sends the Secure binding cookie to http://127.0.0.1 (a secure context); httpx's cookie
            # jar does not, so carry it by hand.
            binding = callback.headers["set-cookie"].split(";", 1)[0]
            intro = dict(re.findall(r'name="(state|csrf)" value="([^"]+)"', callback.text))
            callback = self.client.post(f"{world.url}/api/launch/signin/start", data=intro, headers={"cookie": binding})
        assert callback.status_code == 303, callback.text
        location = str(callback.headers["location"])
        if location.startswith(world.stand_ins.entra.browser_host):
            assert sign_in_as, "a sign-in was not expected"
            with httpx.Client(timeout=30) as browser:
                response = authorization_response(choose_account(browser, location, sign_in_as))
            binding = callback.headers["set-cookie"].split(";", 1)[0]
            signed_in = self.client.post(
                f"{self.base}/api/launch/signin/callback", data=response, headers={"cookie": binding}
            )
            assert signed_in.status_code == 200 and "Link my account" in signed_in.text, signed_in.text
            fields = dict(re.findall(r'name="(state|csrf)" value="([^"]+)"', signed_in.text))
            confirmed = self.client.post(
                f"{self.base}/api/launch/signin/confirm",
                data={**fields, "action": "link"},
                headers={"cookie": signed_in.headers["set-cookie"].split(";", 1)[0]},
            )
            assert confirmed.status_code == 303, confirmed.text
            location = str(confirmed.headers["location"])
        return connector, location


@contextmanager
def another_host(world: LaunchWorld, **settings: str) -> Iterator[HostProcess]:
    """A further host process on its own port (a second instance): the EHR learns its redirect URI."""
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    for client_id in (DEMO_PROVIDER_CLIENT_ID, DEMO_PATIENT_CLIENT_ID):
        client = world.ehr.state.client(client_id)
        assert client is not None
        redirects = (*client.redirect_uris, f"{public}/api/launch/callback")
        world.ehr.state.register_client(dataclasses.replace(client, redirect_uris=redirects))
    environ = {"APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true"}  # no calls to Microsoft's statsbeat host
    telemetry = bool(settings.get("APPLICATIONINSIGHTS_CONNECTION_STRING"))
    host = HostProcess(
        host_settings(world.environ, PUBLIC_BASE_URL=public, **settings), port, telemetry=telemetry, environ=environ
    ).start()
    try:
        yield host
    finally:
        host.stop()


@dataclasses.dataclass
class Warm:
    cpu: dict[str, list[float]]
    ops: dict[str, Counter[str]]


def warm_launches(world: LaunchWorld, host: HostProcess, runs: int, appointment: str) -> Warm:
    """``runs`` warm provider and patient launches of one visit: host CPU and Table operations of each."""
    launcher = Launcher(world, host.url)
    cpu: dict[str, list[float]] = {"provider": [], "patient": []}
    ops: dict[str, Counter[str]] = {"provider": Counter(), "patient": Counter()}
    host.ops()
    for _ in range(runs):
        for kind, user in (("provider", SMITH), ("patient", "e-pat-rivera")):
            before = host.cpu()
            launcher.launch(kind, appointment, user)
            cpu[kind].append(host.cpu() - before)
            ops[kind].update(host.ops())
    return Warm(cpu, ops)


def page_cpu(world: LaunchWorld, host: HostProcess, appointment: str, runs: int = 30) -> dict[str, float]:
    """Host CPU (medians of ``runs``) of the provider page and of one poll of its live panel: the HTML fragment the
    page's script asks for, the same as JSON, and an unchanged poll (``If-None-Match`` its ETag: a 304, no body).

    The requests ``benchmarks.cost`` counts besides the launches: 1 provider page and ~20 polls per visit."""
    _, page = Launcher(world, host.url).launch("provider", appointment, SMITH)
    path, _, query = page.partition("?")
    assert path.startswith(host.url + "/api/visits/"), page
    presence = f"{path}/presence?{query}"
    fragment = {"accept": "text/html"}
    with httpx.Client(timeout=30) as client:

        def median_cpu(url: str, headers: dict[str, str], status: int) -> float:
            spent = []
            for _ in range(runs + 3):  # the first three warm it up
                before = host.cpu()
                response = client.get(url, headers=headers)
                spent.append(host.cpu() - before)
                assert response.status_code == status, (url, response.status_code)
            return statistics.median(spent[3:])

        etag = client.get(presence, headers=fragment).headers.get("etag", "")
        assert etag, "the panel's fragment carries no ETag"
        return {
            "provider page": median_cpu(page, {"accept": "text/html"}, 200),
            "presence poll, HTML fragment": median_cpu(presence, fragment, 200),
            "presence poll, JSON": median_cpu(presence, {"accept": "application/json"}, 200),
            "presence poll, unchanged (304)": median_cpu(presence, {**fragment, "if-none-match": etag}, 304),
        }


def first_launches(world: LaunchWorld, host: HostProcess) -> None:
    """A visit's first launches in a warm process, the provider's (it creates the visit's row and meeting) and then
    the patient's: host CPU and Table operations of each (``benchmarks.cost``'s extra operations of a visit)."""
    appointment = world.appointment_of(SMITH, "e-pat-patel")
    launcher = Launcher(world, host.url)
    figures = []
    host.ops()
    for kind, user in (("provider", SMITH), ("patient", "e-pat-patel")):
        before = host.cpu()
        launcher.launch(kind, appointment, user)
        spent = host.cpu() - before
        ops = host.ops()
        figures.append(f"{kind} {ms(spent)}, {sum(ops.values())} Table operations {dict(sorted(ops.items()))}")
    print(
        "A visit's first launches in a warm process (the provider's creates its row and meeting): "
        + "; then the ".join(figures)
    )


def request_cpu(host: HostProcess, path: str = "/api/health", runs: int = 100, warm_up: int = 10) -> float:
    """Host CPU of one minimal request (the liveness probe): what serving any request through the host costs."""
    with httpx.Client(timeout=30) as client:
        for _ in range(warm_up):
            client.get(host.url + path)
        before = host.cpu()
        for _ in range(runs):
            assert client.get(host.url + path).status_code == 200
        return (host.cpu() - before) / runs


def queue_message_cpu(floor: dict[str, Any]) -> float:
    """Seconds of CPU of the launch event's queue message in a floor measurement (its one extra step)."""
    [queue_ms] = floor["extras_ms"].values()
    return float(queue_ms) / 1000


IDLE_BY_THREAD: Counter[str] = Counter()


def idle_cpu(host: HostProcess, seconds: float = 3.0) -> float:
    """Host CPU per second with nothing to do (its HTTP server, the disabled listeners): background noise."""
    threads = host.threads()
    before = host.cpu()
    time.sleep(seconds)
    spent = (host.cpu() - before) / seconds
    IDLE_BY_THREAD.update({k: (v - threads.get(k, 0.0)) / seconds for k, v in host.threads().items()})
    return spent


class FloorProcess:
    """The unavoidable work of a warm launch in a process of its own (``benchmarks.launch_floor --serve``), kept up
    so that it can be measured in short rounds between the launches.

    On this shared machine the CPU a given piece of work costs moves by up to ~1.7x from one ten seconds to the next
    (the same 30 warm launches measured back to back in one host: 4.1 ms and 6.9 ms medians): a floor measured a
    minute apart from the launches it is compared with can be on either side of that. Each round's launches are
    compared with the floor measured right after them (``paired``)."""

    def __init__(self, world: LaunchWorld, appointment_visit: tuple[str, str, str]) -> None:
        environ = {"PATH": "/usr/bin:/bin", **world.environ}
        command = [
            sys.executable, "-m", "benchmarks.launch_floor", "--token-url", world.ehr.config.token_url,
            "--client-id", DEMO_PROVIDER_CLIENT_ID, "--visit", *appointment_visit, "--organizer", SMITH_OID,
            "--tenant", CONTOSO.id, "--serve",
        ]  # fmt: skip
        self._child = ServedChild(command, environ, name="the launch floor process")  # ready: warmed up

    def measure(self, runs: int) -> dict[str, Any]:
        return self._child.ask(f"run {runs}")

    def close(self) -> None:
        """Ask the process to end (it deletes its queue), kill it if it does not; never masks an error in flight."""
        self._child.close()


def any_visit_row(world: LaunchWorld) -> tuple[str, str, str]:
    from shared.storage.accounts import Storage

    geography = world.configuration.geography
    visits = Storage(world.settings).for_geography(geography).table("Visits")
    row = next(iter(visits.list_entities(results_per_page=1)))
    return geography.value, str(row["PartitionKey"]), str(row["RowKey"])


CALLBACK_WALLS: list[float] = []  # wall seconds of each concurrent launch's callback hop (its token POST inside)
FAILED_CORRELATIONS: list[str] = []  # of the failed concurrent launches, to find their lines in the host's log


async def concurrent_patient_launches(
    world: LaunchWorld, count: int, base: str
) -> tuple[int, list[float], Counter[str]]:
    patients = [(v.appointment_id, v.patient_id) for v in world.ehr.clinic.visits if v.patient_id]  # not consults
    urls = [world.launch_url("patient", *patients[i % len(patients)]).replace(world.url, base, 1) for i in range(count)]
    errors: Counter[str] = Counter()
    durations: list[float] = []
    # No keep-alive: under this load a pooled connection can sit idle past the servers' keep-alive timeout and
    # be closed as it is reused (a client-side race browsers paper over by retrying); fresh connections avoid it.
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=300, follow_redirects=False, limits=limits) as client:

        async def one(url: str) -> None:
            started = time.perf_counter()
            hop = "launch"
            try:
                begin = await client.get(url)
                if begin.status_code != 303:
                    errors[f"launch HTTP {begin.status_code}"] += 1
                    FAILED_CORRELATIONS.append(begin.headers.get("x-correlation-id", "?"))
                    return
                hop = "EHR authorize"
                authorized = await client.get(begin.headers["location"])
                hop = "callback"
                callback_started = time.perf_counter()
                callback = await client.get(urljoin(str(authorized.url), authorized.headers["location"]))
                CALLBACK_WALLS.append(time.perf_counter() - callback_started)
                if callback.status_code != 303:
                    errors[f"callback HTTP {callback.status_code}"] += 1
                    FAILED_CORRELATIONS.append(callback.headers.get("x-correlation-id", "?"))
                    return
            except httpx.HTTPError as exc:
                errors[f"{hop} {type(exc).__name__}"] += 1
                return
            durations.append(time.perf_counter() - started)

        await asyncio.gather(*(one(url) for url in urls))
    return sum(errors.values()), durations, errors


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def per_launch(counts: Counter[str], runs: int) -> dict[str, float]:
    return {name: count / runs for name, count in sorted(counts.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=500, help="concurrent patient launches (0: skip)")
    parser.add_argument("--warm-runs", type=int, default=30, help="warm launches of each kind (at least 1)")
    parser.add_argument("--phases", action="store_true", help="print where a warm launch's CPU goes, phase by phase")
    parser.add_argument("--profile", type=Path, help="cProfile the host's invocations and HTTP server (pstats file)")
    args = parser.parse_args(argv)
    if args.warm_runs < 1:
        parser.error("--warm-runs must be at least 1")
    if args.profile:
        PROFILE.append(args.profile.resolve())
    if args.phases:
        PHASES.append(True)
    latency = args.latency_ms / 1000

    base = azurite.free_port_base()
    process = azurite.start(base)
    state = tempfile.TemporaryDirectory()
    try:
        with launch_world(base, Path(state.name), host_factory=separate_host) as world:
            host: HostProcess = world.host
            world.ehr.faults.update({"latency_ms": int(args.latency_ms)})
            graph_config = world.stand_ins.graph_server._server.config
            graph_config.loaded_app = Latency(graph_config.loaded_app, latency)
            launcher = Launcher(world)
            smith_visit = world.appointment_of(SMITH, "e-pat-rivera")

            # Cold: the first provider launch signs in once and creates the meeting; the patient's first launch.
            launcher.launch("provider", smith_visit, SMITH, sign_in_as=SMITH_UPN)
            launcher.launch("patient", smith_visit, "e-pat-rivera")
            warm_launches(world, host, 3, smith_visit)  # warm-up

            # Launches and floor interleaved in rounds, so the shared machine's load falls on both alike.
            discovery_before = discovery_fetches(world)
            warm = Warm({"provider": [], "patient": []}, {"provider": Counter(), "patient": Counter()})
            floors: list[dict[str, Any]] = []
            served_each: list[float] = []
            visit_row = any_visit_row(world)
            by_thread: Counter[str] = Counter()
            phase_cpu: Counter[str] = Counter()
            if args.phases:
                host.phases()
            # Each round: its launches / its floor; with the launch event's queue message (paired) and without it.
            paired: dict[str, list[float]] = {"provider": [], "patient": []}
            listed: dict[str, list[float]] = {"provider": [], "patient": []}
            floor_process = FloorProcess(world, visit_row)
            try:
                for batch in split(args.warm_runs, min(ROUNDS, args.warm_runs)):  # no empty round
                    threads_before = host.threads()
                    done = warm_launches(world, host, batch, smith_visit)
                    by_thread.update({k: v - threads_before.get(k, 0.0) for k, v in host.threads().items()})
                    if args.phases:
                        phase_cpu.update({label: spent for label, (spent, _) in host.phases().items()})
                    for kind in warm.cpu:
                        warm.cpu[kind] += done.cpu[kind]
                        warm.ops[kind].update(done.ops[kind])
                    floors.append(floor_process.measure(2 * batch))
                    served_each.append(request_cpu(host, runs=4 * batch, warm_up=2))
                    round_floor = floors[-1]["total_ms"] / 1000 + 2 * served_each[-1]
                    round_queue = queue_message_cpu(floors[-1])
                    for kind, values in done.cpu.items():
                        paired[kind].append(statistics.median(values) / (round_floor + round_queue))
                        listed[kind].append(statistics.median(values) / round_floor)
            finally:
                floor_process.close()
            fetches = discovery_fetches(world) - discovery_before
            idle = idle_cpu(host)
            served = statistics.median(served_each)
            floor_figures = {
                "runs": sum(f["runs"] for f in floors),
                "steps_ms": {k: statistics.median(f["steps_ms"][k] for f in floors) for k in floors[0]["steps_ms"]},
                "total_ms": statistics.median(f["total_ms"] for f in floors),
            }
            floor_cpu = floor_figures["total_ms"] / 1000 + 2 * served
            queue_cpu = statistics.median(queue_message_cpu(f) for f in floors)

            print(f"Host in its own process; EHR, Graph and Entra stand-ins in another; Azurite in Node. "
                  f"Latency L on every EHR and Graph call: {args.latency_ms:.0f} ms")  # fmt: skip
            steps = ", ".join(f"{k} {v:.2f} ms" for k, v in floor_figures["steps_ms"].items())
            print(f"Floor (a process of its own, same libraries, median of {len(floors)} rounds, "
                  f"{floor_figures['runs']} runs): {steps}; + 2 minimal requests through the host ({ms(served)} "
                  f"each) = {ms(floor_cpu)}; + the launch event's queue message ({ms(queue_cpu)}), which the host "
                  f"sends as the function's output = {ms(floor_cpu + queue_cpu)}")  # fmt: skip
            print(
                f"Host idle CPU: {idle * 1000:.2f} ms per second (background, not subtracted; by thread: "
                + ", ".join(f"{k} {v * 1000:.1f}" for k, v in IDLE_BY_THREAD.most_common(4))
                + ")"
            )
            for kind, values in warm.cpu.items():
                median = statistics.median(values)
                p90 = ms(percentile(values, 0.9))
                rounds, bare = paired[kind], listed[kind]
                print(f"Warm {kind} launch, host CPU (median of {len(values)}; p90 {p90}): {ms(median)}; "
                      f"ratio to the floor measured right after it, median of {len(rounds)} rounds: "
                      f"{statistics.median(rounds):.2f} (target <= 1.5; rounds {min(rounds):.2f}-{max(rounds):.2f}); "
                      f"to the run's median floor {ms(floor_cpu + queue_cpu)}: {median / (floor_cpu + queue_cpu):.2f};"
                      f" without the queue message in the floor (the steps the issue lists and the two requests): "
                      f"{statistics.median(bare):.2f} (rounds {min(bare):.2f}-{max(bare):.2f}), to the run's "
                      f"median {median / floor_cpu:.2f}")  # fmt: skip
            launches = 2 * args.warm_runs
            print(
                "  Where the host's CPU of a warm launch goes, by thread (mean of both kinds, 10 ms ticks): "
                + ", ".join(f"{name} {v / launches * 1000:.2f} ms" for name, v in by_thread.most_common())
            )
            if args.phases:
                print("  Phases of a warm launch (host CPU per launch, mean of both kinds, inclusive; --phases adds "
                      "its own timing):")  # fmt: skip
                for label in sorted(phase_cpu):
                    print(f"    {label}: {phase_cpu[label] / launches * 1000:.3f} ms")
            for kind, counts in warm.ops.items():
                per = per_launch(counts, args.warm_runs)
                print(f"Table operations per warm {kind} launch: {sum(per.values()):g} {per} (target <= 2)")
            print(f"Discovery / JWKS fetches during {2 * args.warm_runs} warm launches: {fetches} (target 0)")

            for label, spent in page_cpu(world, host, smith_visit).items():
                print(f"{label[0].upper() + label[1:]}, host CPU (warm, median of 30): {ms(spent)}")
            first_launches(world, host)

            # A fresh process: Dr Lee signs in once on the main host; the fresh host's first launch creates a meeting.
            launcher.launch("provider", world.appointment_of(LEE, "e-pat-okafor"), LEE, sign_in_as=LEE_UPN)
            meetings_before = len(world.stand_ins.graph.meetings.all())
            with another_host(world) as fresh:
                before = fresh.cpu()
                Launcher(world, fresh.url).launch("provider", world.appointment_of(LEE, "e-pat-novak"), LEE)
                first = fresh.cpu() - before
                start_cpu = float(fresh.started["start_cpu"])  # type: ignore[arg-type]
                meetings = len(world.stand_ins.graph.meetings.all())
            print(f"Fresh host process: import + index of function_app {ms(start_cpu)} of CPU")
            print(f"First launch in that process (provider, creates the meeting: createOrGet + lobby PATCH, app-only "
                  f"token, discovery, JWKS): {ms(first)} of host CPU (target <= 300 ms); "
                  f"meetings created {meetings - meetings_before}")  # fmt: skip

            if args.concurrency < 1:
                return 0
            before = host.cpu()
            started = time.perf_counter()
            error_count, durations, errors = asyncio.run(concurrent_patient_launches(world, args.concurrency, host.url))
            wall = time.perf_counter() - started
            cpu_each = (host.cpu() - before) / args.concurrency
            memory = host.rss()
            if error_count:
                log = host.log_tail(200_000)
                lines = [line for line in log.splitlines() if any(c in line for c in FAILED_CORRELATIONS)]
                print(f"  Failed launches' correlation ids: {FAILED_CORRELATIONS}; their lines in the host's log:")
                print("\n".join(f"    {line}" for line in lines) or "    (none)")
                print("  The host's log, last lines:\n" + host.log_tail())
            if CALLBACK_WALLS:
                print(f"  Callback hop wall time (the host's token POST to the EHR inside; the host's read timeout "
                      f"is HTTP_TIMEOUT_SECONDS, 10 s): p50 {ms(percentile(CALLBACK_WALLS, 0.5))}, p99 "
                      f"{ms(percentile(CALLBACK_WALLS, 0.99))}, max {ms(max(CALLBACK_WALLS))}")  # fmt: skip
            p50 = percentile(durations, 0.5) if durations else float("nan")
            p99 = percentile(durations, 0.99) if durations else float("nan")
            print(f"{args.concurrency} concurrent patient launches against one host process: {error_count} errors "
                  f"{dict(errors) or ''} (target 0); wall p50 {ms(p50)}, p99 {ms(p99)}, all in {wall:.1f} s; "
                  f"host CPU {ms(cpu_each)} per launch; host resident memory {memory['rss_mb']:.0f} MB, "
                  f"peak {memory['peak_rss_mb']:.0f} MB")  # fmt: skip
            peak = PEAK_LAUNCHES_PER_MINUTE / 60
            print(f"  Arithmetic (one Python worker process uses at most one core; {ms(cpu_each)} CPU per launch): "
                  f"one instance serves at most {1 / cpu_each:.0f} launches/s; the peak is {peak:.0f}/s, "
                  f"needing {peak * cpu_each:.2f} cores")  # fmt: skip
            for instances in INSTANCE_COUNTS:
                burst = args.concurrency * cpu_each / instances
                utilisation = peak * cpu_each / instances
                print(f"  {instances:>2} instance(s): {args.concurrency} launches at once need >= {burst:.1f} s of CPU "
                      f"per instance; peak utilisation {utilisation:.0%}"
                      f"{' (over capacity)' if utilisation > 1 else ''}")  # fmt: skip
            print(f"  Instances for the peak at 70 % utilisation: {math.ceil(peak * cpu_each / 0.7)}")
    finally:
        process.terminate()
        process.wait(timeout=10)
        state.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
