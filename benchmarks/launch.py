"""Launch benchmark: prints figures (not a timed test).

    python -m benchmarks.launch [--latency-ms 50] [--concurrency 500] [--warm-runs 20]

Runs the real function app in the local Functions host against Azurite and the sandbox EHR,
Entra ID and Graph, with the EHR and Graph stand-ins adding a fixed latency L to every call.

Figures:
  * warm provider / patient launch: connector time (launch URL + callback handlers) against the sum of
    the round trips no launch can avoid (token exchange + one Table read + createOrGet), as a ratio;
  * discovery / JWKS fetches during warm launches (target 0);
  * Table operations per warm launch (target: at most 1 read of the mapping and visit tables);
  * ``import function_app`` and the first launch in a fresh process;
  * N concurrent patient launches: errors, p50, p99.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from benchmarks.table_operations import TableOperations
from sandbox import azurite
from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID, DEMO_PROVIDER_CLIENT_ID
from sandbox.ehr.config import JWKS_PATH
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO
from sandbox.server import free_port
from shared.http.outbound import SafeHttp, outbound_policy
from tests.sandbox.entra_browser import authorization_response, choose_account
from tests.support.launch_world import LEE, SMITH, SMITH_UPN, LaunchWorld, launch_world

ROOT = Path(__file__).resolve().parent.parent
SMITH_OID = "b0000000-0000-4000-8000-000000000001"


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


class Launcher:
    """A browser without JavaScript: follows a launch hop by hop, timing the connector's own hops."""

    def __init__(self, world: LaunchWorld) -> None:
        self.world = world
        self.client = httpx.Client(timeout=60, follow_redirects=False)

    def launch(self, record: str, appointment: str, user: str, *, sign_in_as: str | None = None) -> tuple[float, str]:
        world = self.world
        url = world.launch_url(record, appointment, user)
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
        location = callback.headers["location"]
        if location.startswith(world.stand_ins.entra.browser_host):
            assert sign_in_as, "a sign-in was not expected"
            with httpx.Client(timeout=30) as browser:
                response = authorization_response(choose_account(browser, location, sign_in_as))
            binding = callback.headers["set-cookie"].split(";", 1)[0]
            signed_in = self.client.post(
                f"{world.url}/api/launch/signin/callback", data=response, headers={"cookie": binding}
            )
            assert signed_in.status_code == 200 and "Link my account" in signed_in.text, signed_in.text
            # The clinician presses "Link my account": the page's form, with the rotated binding cookie.
            fields = dict(re.findall(r'name="(state|csrf)" value="([^"]+)"', signed_in.text))
            confirmed = self.client.post(
                f"{world.url}/api/launch/signin/confirm",
                data={**fields, "action": "link"},
                headers={"cookie": signed_in.headers["set-cookie"].split(";", 1)[0]},
            )
            assert confirmed.status_code == 303, confirmed.text
            location = confirmed.headers["location"]
        return connector, location


def unavoidable_round_trips(world: LaunchWorld) -> dict[str, float]:
    """Median time of each round trip a launch cannot avoid, measured directly."""
    from shared.microsoft.app_credentials import AppOnlyCredentials
    from shared.microsoft.teams import TeamsClient
    from shared.storage.accounts import Storage

    token_url = world.ehr.config.token_url
    storage = Storage(world.settings)
    visits = storage.for_geography(world.configuration.geography).table("Visits")
    any_visit = next(iter(visits.list_entities(results_per_page=1)))
    policy = outbound_policy(world.settings)
    credential = AppOnlyCredentials(
        world.settings.entra_authority_host, CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, http=SafeHttp(policy)
    )
    teams = TeamsClient(world.settings.graph_base_url, credential.for_tenant(CONTOSO.id), policy=policy)
    token_times, table_times = [], []
    now = datetime.now(UTC)

    def create_or_get() -> float:
        started = time.perf_counter()
        teams.create_or_get_meeting(
            organizer_object_id=SMITH_OID, external_id="benchmark", subject="Virtual visit", start=now,
            end=now + timedelta(hours=1),
        )  # fmt: skip
        return time.perf_counter() - started

    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            started = time.perf_counter()
            client.post(token_url, data={"grant_type": "authorization_code", "code": "x"})
            token_times.append(time.perf_counter() - started)
    for _ in range(10):
        started = time.perf_counter()
        visits.get_entity(any_visit["PartitionKey"], any_visit["RowKey"])
        table_times.append(time.perf_counter() - started)
    create_or_get()  # token and client warm-up
    graph_times = [create_or_get() for _ in range(10)]
    return {
        "token exchange": statistics.median(token_times),
        "one Table read": statistics.median(table_times),
        "createOrGet": statistics.median(graph_times),
    }


FRESH_IMPORT = textwrap.dedent(
    """
    import time
    started = time.perf_counter()
    import function_app  # noqa: F401
    print(time.perf_counter() - started)
    """
)

FRESH_LAUNCH = textwrap.dedent(
    """
    import json, os, sys, time
    import httpx
    from sandbox.host import LocalHost

    settings = json.loads(sys.argv[2])
    host = LocalHost("function_app", settings, port=int(sys.argv[3]))
    started = time.perf_counter()
    host.start()  # imports function_app and indexes it, as the worker does
    started_host = time.perf_counter() - started
    try:
        with httpx.Client(follow_redirects=False, timeout=30) as client:
            started = time.perf_counter()
            begin = client.get(sys.argv[1])
            assert begin.status_code == 303, begin.text
            connector = time.perf_counter() - started
            authorized = client.get(begin.headers["location"])
            started = time.perf_counter()
            callback = client.get(authorized.headers["location"])
            connector += time.perf_counter() - started
            assert callback.status_code == 303, callback.text
    finally:
        host.stop()
    print(json.dumps({"host_start": started_host, "first_launch": connector}))
    """
)


def fresh_process(world: LaunchWorld, launch_url: str) -> dict[str, float]:
    environ = {"PATH": "/usr/bin:/bin", **world.environ}
    imports = []
    for _ in range(3):
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", FRESH_IMPORT], cwd=ROOT, env=environ, capture_output=True, text=True, check=True
        )
        imports.append(float(out.stdout.strip()))
    # A second host on its own port: the EHR learns its redirect URI, as for a second deployment.
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    for client_id in (DEMO_PROVIDER_CLIENT_ID, DEMO_PATIENT_CLIENT_ID):
        client = world.ehr.state.client(client_id)
        assert client is not None
        redirects = (*client.redirect_uris, f"{public}/api/launch/callback")
        world.ehr.state.register_client(dataclasses.replace(client, redirect_uris=redirects))
    settings = {**world.environ, "PUBLIC_BASE_URL": public}
    launch_url = launch_url.replace(world.url, public, 1)
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-c", FRESH_LAUNCH, launch_url, json.dumps(settings), str(port)],
        cwd=ROOT, env=environ, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"import (median of 3)": statistics.median(imports), "first launch": figures["first_launch"]}


async def concurrent_patient_launches(world: LaunchWorld, count: int) -> tuple[int, list[float], Counter[str]]:
    patients = [(v.appointment_id, v.patient_id) for v in world.ehr.clinic.visits if v.patient_id]  # not consults
    urls = [world.launch_url("patient", *patients[i % len(patients)]) for i in range(count)]
    errors: Counter[str] = Counter()
    durations: list[float] = []
    # No keep-alive: under this load a pooled connection can sit idle past the servers' keep-alive timeout and
    # be closed as it is reused (a client-side race browsers paper over by retrying); fresh connections avoid it.
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, follow_redirects=False, limits=limits) as client:

        async def one(url: str) -> None:
            started = time.perf_counter()
            hop = "launch"
            try:
                begin = await client.get(url)
                if begin.status_code != 303:
                    errors[f"launch HTTP {begin.status_code}"] += 1
                    return
                hop = "EHR authorize"
                authorized = await client.get(begin.headers["location"])
                hop = "callback"
                callback = await client.get(urljoin(str(authorized.url), authorized.headers["location"]))
                if callback.status_code != 303:
                    errors[f"callback HTTP {callback.status_code}"] += 1
                    return
            except httpx.HTTPError as exc:
                errors[f"{hop} {type(exc).__name__}"] += 1
                return
            durations.append(time.perf_counter() - started)

        await asyncio.gather(*(one(url) for url in urls))
    return sum(errors.values()), durations, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--warm-runs", type=int, default=20)
    args = parser.parse_args(argv)
    latency = args.latency_ms / 1000

    base = azurite.free_port_base()
    process = azurite.start(base)
    state = tempfile.TemporaryDirectory()
    try:
        with launch_world(base, Path(state.name)) as world, TableOperations().installed() as ops:
            world.ehr.faults.update({"latency_ms": int(args.latency_ms)})
            graph_config = world.stand_ins.graph_server._server.config
            graph_config.loaded_app = Latency(graph_config.loaded_app, latency)
            launcher = Launcher(world)
            smith_visit = world.appointment_of(SMITH, "e-pat-rivera")

            # Cold: the first provider launch signs in once and creates the meeting; the patient's first launch.
            launcher.launch("provider", smith_visit, SMITH, sign_in_as=SMITH_UPN)
            launcher.launch("patient", smith_visit, "e-pat-rivera")
            ops.take()

            results: dict[str, list[float]] = {"provider": [], "patient": []}
            table_ops: dict[str, Counter[str]] = {"provider": Counter(), "patient": Counter()}
            discovery_before = discovery_fetches(world)
            for _ in range(args.warm_runs):
                for kind, user in (("provider", SMITH), ("patient", "e-pat-rivera")):
                    seconds, _ = launcher.launch(kind, smith_visit, user)
                    results[kind].append(seconds)
                    table_ops[kind] += ops.take()
            discovery_after = discovery_fetches(world)
            trips = unavoidable_round_trips(world)
            unavoidable = sum(trips.values())

            print(f"Latency L added to every EHR and Graph call: {args.latency_ms:.0f} ms")
            print("Unavoidable round trips (medians): " + ", ".join(f"{k} {ms(v)}" for k, v in trips.items())
                  + f"; sum {ms(unavoidable)}")  # fmt: skip
            for kind, values in results.items():
                median = statistics.median(values)
                print(f"Warm {kind} launch (connector hops, median of {len(values)}): {ms(median)}; "
                      f"ratio to the unavoidable sum {median / unavoidable:.2f} (target <= 1.15)")  # fmt: skip
            fetches = discovery_after - discovery_before
            print(f"Discovery / JWKS fetches during {2 * args.warm_runs} warm launches: {fetches} (target 0)")
            for kind, counts in table_ops.items():
                per_launch = {name: count / args.warm_runs for name, count in sorted(counts.items())}
                reads = sum(v for k, v in per_launch.items() if k.split(".")[0] in ("Visits", "EhrUserMap")
                            and k.endswith(("get_entity", "query_entities")))  # fmt: skip
                print(f"Table operations per warm {kind} launch: {per_launch}; mapping + visit reads {reads:g} "
                      "(target <= 1)")  # fmt: skip

            fresh_visit = world.appointment_of(LEE, "e-pat-okafor")
            launcher.launch("provider", fresh_visit, LEE, sign_in_as="dr.lee@contoso.example")  # Dr Lee signs in once
            another = world.appointment_of(LEE, "e-pat-rivera")
            fresh = fresh_process(world, world.launch_url("provider", another, LEE))
            print(f"import function_app in a fresh process: {ms(fresh['import (median of 3)'])} (target <= 500 ms)")
            print(f"First launch in a fresh process (provider, creates the meeting): {ms(fresh['first launch'])} "
                  "(target <= 1000 ms)")  # fmt: skip

            started, cpu = time.perf_counter(), time.process_time()
            error_count, durations, errors = asyncio.run(concurrent_patient_launches(world, args.concurrency))
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            p50 = percentile(durations, 0.5) if durations else float("nan")
            p99 = percentile(durations, 0.99) if durations else float("nan")
            print(f"{args.concurrency} concurrent patient launches: {error_count} errors {dict(errors) or ''} "
                  f"(target 0); p50 {ms(p50)}, p99 {ms(p99)}; wall {wall:.1f} s")  # fmt: skip
            print(f"  CPU of this one process (host, EHR, Graph, Entra and the 500 clients share it, and the GIL): "
                  f"{ms(cpu / args.concurrency)} per launch")  # fmt: skip
    finally:
        process.terminate()
        process.wait(timeout=10)
        state.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
