"""Run the sandbox EHR for the demo: ``python -m sandbox.ehr [--port 7300]``.

Registers the connector's demo clients (see ``DEMO_CLIENTS``) unless ``--no-demo-clients``;
state (integration records, clients, writebacks, signing key) persists in ``.sandbox/ehr.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from sandbox.ehr.app import create_app
from sandbox.ehr.config import EhrConfig, RegisteredClient
from sandbox.ehr.flavours import FLAVOURS

ROOT = Path(__file__).resolve().parents[2]
CONNECTOR = "http://localhost:7071"
# Client ids the demo's configuration portal offers by default (Epic issues one per app and environment).
DEMO_PROVIDER_CLIENT_ID = "7e1e0d9c-0000-4000-8000-000000007300"
DEMO_PATIENT_CLIENT_ID = "7e1e0d9c-0000-4000-8000-000000007301"
DEMO_BACKEND_CLIENT_ID = "7e1e0d9c-0000-4000-8000-000000007302"


def demo_clients(connector: str = CONNECTOR) -> tuple[RegisteredClient, ...]:
    redirects = (f"{connector}/api/launch/callback", f"{connector}/api/portal/ehr/callback")
    jwks = f"{connector}/api/.well-known/jwks.json"
    return (
        RegisteredClient(DEMO_PROVIDER_CLIENT_ID, redirects, jwks_url=jwks, name="Teams EHR Connector (provider)"),
        RegisteredClient(DEMO_PATIENT_CLIENT_ID, redirects, jwks_url=jwks, name="Teams EHR Connector (patient)"),
        RegisteredClient(DEMO_BACKEND_CLIENT_ID, (), jwks_url=jwks, name="Teams EHR Connector (writeback)",
                         grant_types=("client_credentials",)),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.ehr", description=__doc__)
    parser.add_argument("--port", type=int, default=7300)
    parser.add_argument("--state-file", type=Path, default=ROOT / ".sandbox" / "ehr.json")
    parser.add_argument("--connector", default=CONNECTOR, help="the connector's public base URL")
    parser.add_argument("--environment", default="test")
    parser.add_argument("--no-demo-clients", action="store_true")
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="epic", help="the vendor this EHR plays")
    args = parser.parse_args(argv)
    config = EhrConfig(
        base_url=f"http://127.0.0.1:{args.port}",
        clients=() if args.no_demo_clients else demo_clients(args.connector.rstrip("/")),
        environment=args.environment,
        state_file=args.state_file,
        flavour=args.flavour,
    )
    print(f"Sandbox EHR: FHIR base {config.fhir_base}; Hyperspace/MyChart/analyst at {config.origin}/")
    uvicorn.run(create_app(config), host="127.0.0.1", port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
