"""OpenTelemetry's cost per launch: prints figures (not a timed test).

    python -m benchmarks.telemetry [--warm-runs 40]

The function app runs in host processes of its own (``benchmarks.host_process``) against the sandbox and
Azurite, as in ``benchmarks.launch``. Each host exports to an Application Insights ingestion stub on
127.0.0.1 (``benchmarks.telemetry_stub``) through ``connector.telemetry.configure_telemetry`` — the real
azure-monitor-opentelemetry distro, its instrumentations (azure-core, requests, urllib3, logging) and
exporter — with export off, with every trace kept, and with the configured sampling ratio.

Per configuration: the one-time cost of turning telemetry on; host CPU per warm launch (median: the
instrumentation inline in the request); and host CPU per launch including the background export (all the
process's CPU from the first launch until the exporter has flushed, less the idle rate measured before),
with the items the stub received. The local host creates no request span (the Functions host does that in
Azure); what is measured is the worker's own spans, logs and export.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.host_process import HostProcess
from benchmarks.launch import Launcher, another_host, ms, separate_host, warm_launches
from benchmarks.telemetry_stub import TelemetryStub
from connector.telemetry import DEFAULT_SAMPLING_RATIO
from sandbox import azurite
from tests.support.launch_world import SMITH, SMITH_UPN, LaunchWorld, launch_world

FLUSH_SECONDS = 7.0  # the batch span processor exports every 5 s; the log and metric exporters on their own timers


def measure(
    world: LaunchWorld, hosts: dict[str, HostProcess], runs: int, appointment: str, stub: TelemetryStub
) -> dict[str, dict[str, float]]:
    """Launches interleaved across the hosts (one provider and one patient launch each, in turn), so the
    shared machine's load falls on every configuration alike. The stub counts both exporting hosts' items
    together."""
    for host in hosts.values():
        warm_launches(world, host, 3, appointment)  # discovery, JWKS, tokens, first spans
    time.sleep(FLUSH_SECONDS)
    stub.take()
    before = {label: host.cpu() for label, host in hosts.items()}
    time.sleep(FLUSH_SECONDS)
    idle = {label: (host.cpu() - before[label]) / FLUSH_SECONDS for label, host in hosts.items()}
    started = time.monotonic()
    before = {label: host.cpu() for label, host in hosts.items()}
    inline: dict[str, list[float]] = {label: [] for label in hosts}
    for _ in range(runs):
        for label, host in hosts.items():
            warm = warm_launches(world, host, 1, appointment)
            inline[label] += warm.cpu["provider"] + warm.cpu["patient"]
    time.sleep(FLUSH_SECONDS)
    elapsed = time.monotonic() - started
    launches = 2 * runs
    items = stub.take()
    results = {}
    for label, host in hosts.items():
        spent = host.cpu() - before[label]
        results[label] = {
            "inline": statistics.median(inline[label]),
            "with_export": (spent - idle[label] * elapsed) / launches,
            "idle": idle[label],
            "start": float(host.started.get("telemetry_cpu", 0.0)),  # type: ignore[arg-type]
        }
    results["exported"] = {
        "spans": (items.get("RemoteDependency", 0) + items.get("Request", 0)) / launches,
        "logs": items.get("Message", 0) / launches,
    }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry", description=__doc__.split("\n")[0])
    parser.add_argument("--warm-runs", type=int, default=40)
    args = parser.parse_args(argv)
    base = azurite.free_port_base()
    process = azurite.start(base)
    state = tempfile.TemporaryDirectory()
    try:
        with TelemetryStub() as stub, launch_world(base, Path(state.name), host_factory=separate_host) as world:
            visit = world.appointment_of(SMITH, "e-pat-rivera")
            launcher = Launcher(world)
            launcher.launch("provider", visit, SMITH, sign_in_as=SMITH_UPN)
            launcher.launch("patient", visit, "e-pat-rivera")
            configurations = {"off": None, "on, every trace": 1.0, "on, configured": DEFAULT_SAMPLING_RATIO}
            with contextlib.ExitStack() as stack:
                hosts: dict[str, HostProcess] = {}
                for label, ratio in configurations.items():
                    settings = {}
                    if ratio is not None:
                        settings = {
                            "APPLICATIONINSIGHTS_CONNECTION_STRING": stub.connection_string,
                            "TELEMETRY_SAMPLING_RATIO": str(ratio),
                        }
                    hosts[label] = stack.enter_context(another_host(world, **settings))
                results = measure(world, hosts, args.warm_runs, visit, stub)
            off = results["off"]
            print(f"OpenTelemetry per warm launch ({2 * args.warm_runs} launches per configuration, interleaved; "
                  "host CPU):")  # fmt: skip
            for label in configurations:
                figures = results[label]
                extra = "" if label == "off" else (
                    f"; + {ms(figures['inline'] - off['inline'])} inline, "
                    f"+ {ms(figures['with_export'] - off['with_export'])} with export; "
                    f"turning it on cost {ms(figures['start'])} once"
                )  # fmt: skip
                print(f"  {label:<16} inline {ms(figures['inline'])}, with export {ms(figures['with_export'])} "
                      f"(idle {figures['idle'] * 1000:.2f} ms/s){extra}")  # fmt: skip
            exported = results["exported"]
            print(
                f"  Exported by both exporting hosts together, per launch: {exported['spans']:.2f} spans, "
                f"{exported['logs']:.2f} log records (every trace, plus {DEFAULT_SAMPLING_RATIO:g} of them)"
            )
    finally:
        process.terminate()
        process.wait(timeout=10)
        state.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
