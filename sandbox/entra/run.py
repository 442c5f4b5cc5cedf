"""Run the sandbox Entra ID on two listeners: https (API, issuer) and http (browser-facing authorize page).

In-process (tests)::

    tls = ensure_tls(tmp_dir)                       # sandbox.tls
    with start_entra(tls) as entra:                 # free ports; EntraConfig fields as keyword overrides
        entra.issuer_host, entra.browser_host, entra.authority(CONTOSO.id)

Foreground (demo)::

    python -m sandbox.entra [--https-port 7201] [--http-port 7200]
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from starlette.applications import Starlette

from sandbox.entra.app import create_app
from sandbox.entra.config import (
    DEFAULT_CONNECTOR_LOGOUT_URIS,
    DEFAULT_CONNECTOR_REDIRECT_URIS,
    EntraConfig,
    connector_app,
)
from sandbox.entra.context import Entra
from sandbox.entra.signing import TokenIssuer
from sandbox.server import ServerThread, free_port
from sandbox.tls import TlsFiles, ensure_tls, trust_env

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HTTPS_PORT = 7201
DEFAULT_HTTP_PORT = 7200
DEFAULT_KEY_FILE = ROOT / ".sandbox" / "entra" / "token-signing.pem"


@dataclass
class RunningEntra:
    app: Starlette
    https: ServerThread
    http: ServerThread
    tls: TlsFiles

    @property
    def entra(self) -> Entra:
        entra: Entra = self.app.state.entra
        return entra

    @property
    def config(self) -> EntraConfig:
        return self.entra.config

    @property
    def issuer(self) -> TokenIssuer:
        return self.entra.issuer

    @property
    def issuer_host(self) -> str:
        return self.config.issuer_host

    @property
    def browser_host(self) -> str:
        return self.config.browser_host

    def authority(self, tenant: str) -> str:
        """What ``ENTRA_AUTHORITY_HOST`` + tenant gives msal: ``https://127.0.0.1:<port>/<tenant>``."""
        return f"{self.issuer_host}/{tenant}"

    def start(self) -> RunningEntra:
        self.https.start()
        try:
            self.http.start()
        except BaseException:
            self.https.stop()
            raise
        return self

    def stop(self) -> None:
        self.http.stop()
        self.https.stop()

    def __enter__(self) -> RunningEntra:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_entra(
    tls: TlsFiles | None = None,
    *,
    https_port: int = 0,
    http_port: int = 0,
    issuer: TokenIssuer | None = None,
    **config: Any,
) -> RunningEntra:
    """Build (not yet started: use ``with`` or ``.start()``) the two listeners around one app and one state."""
    tls = tls or ensure_tls()
    https_port = https_port or free_port()
    http_port = http_port or free_port()
    settings = EntraConfig(
        issuer_host=f"https://127.0.0.1:{https_port}", browser_host=f"http://127.0.0.1:{http_port}", **config
    )
    app = create_app(settings, issuer)
    return RunningEntra(
        app=app,
        https=ServerThread(app, port=https_port, ssl_certfile=str(tls.server_cert), ssl_keyfile=str(tls.server_key)),
        http=ServerThread(app, port=http_port),
        tls=tls,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.entra", description=__doc__.split("\n")[0])
    parser.add_argument("--https-port", type=int, default=DEFAULT_HTTPS_PORT)
    parser.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT)
    parser.add_argument("--tls-dir", type=Path, default=None, help="default .sandbox/tls")
    parser.add_argument("--signing-key", type=Path, default=DEFAULT_KEY_FILE, help="shared with other stand-ins")
    parser.add_argument(
        "--redirect-uri", action="append", default=[], help="extra redirect URI for the connector app (repeatable)"
    )
    args = parser.parse_args(argv)
    tls = ensure_tls(args.tls_dir)
    app = connector_app((*DEFAULT_CONNECTOR_REDIRECT_URIS, *DEFAULT_CONNECTOR_LOGOUT_URIS, *args.redirect_uri))
    running = start_entra(
        tls,
        https_port=args.https_port,
        http_port=args.http_port,
        issuer=TokenIssuer.load_or_create(args.signing_key),
        apps=(app,),
    )
    with running:
        print(f"Sandbox Entra ID: API {running.issuer_host}  browser {running.browser_host}", flush=True)
        for key, value in trust_env(tls).items():
            print(f"  trust the sandbox CA with {key}={value}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0
