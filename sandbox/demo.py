"""Run the connector locally on the sandbox: ``scripts/demo`` (or ``python -m sandbox.demo``).

Writes ``local.settings.json`` when missing, starts every service in ``SERVICES`` in order
(Azurite first, the Functions host last), prints their URLs and stops them in reverse order
on Ctrl-C or SIGTERM.

Adding a sandbox stand-in is a few lines: write ``start_<thing>(context) -> Started`` and add
``Service("<Thing>", start_<thing>)`` to ``SERVICES`` before the Functions host. A service can
hand extra environment to the services after it (``Started.env``), e.g. a CA bundle the
function app must trust.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import azurite
from sandbox.ehr.flavours import FLAVOURS
from sandbox.host import LocalHost
from sandbox.host.config import read_local_settings
from sandbox.local_settings import add_missing_values, local_values, write_local_settings

ROOT = Path(__file__).resolve().parent.parent
logger = logging.getLogger(__name__)


class DemoError(Exception):
    """A service that could not start (the message says which and why)."""


@dataclass
class DemoContext:
    """What services need to start: where state lives, ports, and the app settings so far."""

    root: Path
    state_dir: Path
    functions_port: int
    azurite_port_base: int
    settings: dict[str, str]
    # Sandbox stand-ins: Entra ID (https API, http sign-in page), Graph/Teams, EHR.
    entra_https_port: int = 7201
    entra_http_port: int = 7200
    graph_port: int = 7401
    ehr_port: int = 7300
    ehr_flavour: str = "epic"  # which vendor the sandbox EHR plays (sandbox/ehr/flavours.py)


@dataclass
class Started:
    """A running service: how to stop it, what to print, and settings for the services after it."""

    stop: Callable[[], None]
    urls: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str
    start: Callable[[DemoContext], Started]


def start_azurite(context: DemoContext) -> Started:
    base = context.azurite_port_base
    urls = {f"{kind} storage": f"http://127.0.0.1:{base + i}" for i, kind in enumerate(("blob", "queue", "table"))}
    if all(azurite.is_listening(base + i) for i in range(3)):
        logger.info("Azurite is already listening on %d-%d; using it", base, base + 2)
        return Started(stop=lambda: None, urls=urls)
    process = azurite.start(base, context.state_dir / "azurite")

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    return Started(stop=stop, urls=urls)


def start_functions_host(context: DemoContext) -> Started:
    keys_path = context.state_dir / "host-keys.json"
    host = LocalHost(
        "function_app",
        context.settings,
        port=context.functions_port,
        app_dir=context.root,
        keys_path=keys_path,
        display_host="localhost",
    ).start()
    base = f"http://localhost:{host.port}"
    urls = {
        "Functions host": base,
        "health": f"{base}/api/health",
        "ready": f"{base}/api/ready?code=<functionKeys.default in {keys_path}>",
    }
    return Started(stop=host.stop, urls=urls)


def start_sandbox_stand_ins(context: DemoContext) -> Started:
    """Entra ID (https 7201 API, http 7200 sign-in page), Graph/Teams (7401) and the EHR (7300)."""
    from sandbox.ehr.__main__ import DEMO_PATIENT_CLIENT_ID, DEMO_PROVIDER_CLIENT_ID
    from sandbox.stand_ins import start_stand_ins

    running = start_stand_ins(
        context.state_dir,
        connector_url=f"http://localhost:{context.functions_port}",
        entra_https_port=context.entra_https_port,
        entra_http_port=context.entra_http_port,
        graph_port=context.graph_port,
        ehr_port=context.ehr_port,
        persist=True,
        ehr_options={"flavour": context.ehr_flavour},
    )
    # The connector in this process must trust the sandbox CA. The machine may already name a CA
    # bundle in these variables, and the local host (like `func start`) lets the environment win
    # over local settings, so set them here rather than through settings.
    for key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        os.environ[key] = running.settings.pop(key)
    ehr = running.ehr.config
    portal = f"http://localhost:{context.functions_port}/api/portal"
    urls = {
        "admin portal": portal,
        f"EHR ({ehr.spec.product}): {ehr.spec.provider_app} + {ehr.spec.patient_app}": f"{ehr.origin}/",
        "EHR FHIR base (iss)": ehr.fhir_base,
        **({"EHR patient-side FHIR base": ehr.patient_fhir_base} if ehr.patient_fhir_base != ehr.fhir_base else {}),
        "EHR provider client": DEMO_PROVIDER_CLIENT_ID,
        "EHR patient client": DEMO_PATIENT_CLIENT_ID,
        "Entra ID sign-in": running.entra.browser_host,
        "Graph / Teams": running.settings["GRAPH_BASE_URL"],
    }
    return Started(stop=running.stop, urls=urls, env=running.settings)


SERVICES: list[Service] = [
    Service("Azurite", start_azurite),
    Service("Sandbox", start_sandbox_stand_ins),
    Service("Functions host", start_functions_host),
]


def ensure_local_settings(path: Path, port_base: int) -> dict[str, str]:
    if not path.exists():
        write_local_settings(local_values(port_base), path)
        logger.info("Wrote %s with freshly generated keys", path.name)
    elif added := add_missing_values(path, port_base):
        logger.info("Added to %s the settings this release reads: %s", path.name, ", ".join(added))
    return read_local_settings(path)


def run(context: DemoContext, services: list[Service], stop: threading.Event) -> None:
    started: list[tuple[Service, Started]] = []
    try:
        for service in services:
            logger.info("Starting %s…", service.name)
            try:
                running = service.start(context)
            except Exception as exc:
                raise DemoError(f"{service.name} could not start: {exc}") from exc
            context.settings.update(running.env)
            started.append((service, running))
        lines = ["", "The sandbox is running:"]
        for service, running in started:
            for label, url in running.urls.items():
                lines.append(f"  {service.name:<16} {label:<22} {url}")
        lines.append("Press Ctrl+C to stop.")
        print("\n".join(lines), flush=True)
        stop.wait()
    finally:
        for service, running in reversed(started):
            logger.info("Stopping %s…", service.name)
            try:
                running.stop()
            except Exception:
                logger.exception("%s did not stop cleanly", service.name)
        print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7071, help="Functions host port")
    parser.add_argument("--azurite-port-base", type=int, default=azurite.DEFAULT_PORT_BASE)
    parser.add_argument("--settings", type=Path, default=ROOT / "local.settings.json")
    parser.add_argument("--entra-ports", default="7201,7200", help="sandbox Entra ID https,http ports")
    parser.add_argument("--graph-port", type=int, default=7401, help="sandbox Graph/Teams port")
    parser.add_argument("--ehr-port", type=int, default=7300, help="sandbox EHR port")
    parser.add_argument(
        "--ehr-flavour", choices=sorted(FLAVOURS), default="epic", help="the vendor the sandbox EHR plays"
    )
    parser.add_argument("--state-dir", type=Path, default=ROOT / ".sandbox", help="Azurite data, host keys")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stdout)
    os.chdir(ROOT)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    context = DemoContext(
        root=ROOT,
        state_dir=args.state_dir.resolve(),
        functions_port=args.port,
        azurite_port_base=args.azurite_port_base,
        settings=ensure_local_settings(args.settings, args.azurite_port_base),
        entra_https_port=int(args.entra_ports.split(",")[0]),
        entra_http_port=int(args.entra_ports.split(",")[1]),
        graph_port=args.graph_port,
        ehr_port=args.ehr_port,
        ehr_flavour=args.ehr_flavour,
    )
    try:
        run(context, SERVICES, stop)
    except DemoError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
