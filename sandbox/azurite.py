"""Run Azurite with one storage account per geography, like the Azure deployment.

Azure gives each geography its own storage account; so does this: Azurite is started with
``AZURITE_ACCOUNTS`` naming ``devstoreaccount1`` (the app's own account) plus ``americas``,
``emea`` and ``apac``. The keys below are local-emulator keys, not secrets: Azurite accepts
whatever keys it is started with, and these accounts exist only on 127.0.0.1.

    python -m sandbox.azurite start [--port-base 10000] [--location DIR]
    python -m sandbox.azurite stop
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox.ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
PID_FILE = ROOT / ".sandbox" / "azurite.pid"
DEFAULT_PORT_BASE = 10000

# The well-known development key of devstoreaccount1 (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
GEOGRAPHY_ACCOUNTS = ("americas", "emea", "apac")


def account_key(account: str) -> str:
    if account == DEV_ACCOUNT:
        return DEV_KEY
    return base64.b64encode(f"local-azurite-key-{account}".ljust(32, "0").encode()).decode()


def accounts_env() -> str:
    return ";".join(f"{name}:{account_key(name)}" for name in (DEV_ACCOUNT, *GEOGRAPHY_ACCOUNTS))


def connection_string(account: str = DEV_ACCOUNT, port_base: int = DEFAULT_PORT_BASE) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={account_key(account)};"
        f"BlobEndpoint=http://127.0.0.1:{port_base}/{account};"
        f"QueueEndpoint=http://127.0.0.1:{port_base + 1}/{account};"
        f"TableEndpoint=http://127.0.0.1:{port_base + 2}/{account};"
    )


def azurite_binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise RuntimeError("Azurite is not installed: run `npm install` (package.json pins azurite 3.35.0).")


def is_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(port_base: int = DEFAULT_PORT_BASE, location: Path | None = None) -> subprocess.Popen[bytes]:
    """Start Azurite on 127.0.0.1 (blob, queue, table = port_base, +1, +2) and wait for it."""
    args = [
        azurite_binary(),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--blobHost", "127.0.0.1", "--blobPort", str(port_base),
        "--queueHost", "127.0.0.1", "--queuePort", str(port_base + 1),
        "--tableHost", "127.0.0.1", "--tablePort", str(port_base + 2),
    ]  # fmt: skip
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(location)]
    env = {**os.environ, "AZURITE_ACCOUNTS": accounts_env()}
    # Azurite reports why it stopped (a port in use, an unreadable --location) on stderr.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - fixed local binary and arguments
            args, env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
        )
        try:
            _wait_until_listening(process, port_base)
        except RuntimeError as exc:
            errors.seek(0)
            said = errors.read()[-2000:].decode(errors="replace").strip()
            raise RuntimeError(f"{exc}: {said}" if said else str(exc)) from None
    return process


def _wait_until_listening(process: subprocess.Popen[bytes], port_base: int) -> None:
    deadline = time.monotonic() + 30
    while not all(is_listening(port_base + i) for i in range(3)):
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("Azurite did not open its ports within 30 s")
        time.sleep(0.1)


def free_port_base() -> int:
    """Three consecutive free ports outside the ephemeral range (see ``sandbox.ports``)."""
    return free_ports(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("AZURITE_PORT_BASE", DEFAULT_PORT_BASE)))
    parser.add_argument("--location", type=Path)
    args = parser.parse_args(argv)
    if args.command == "start":
        if all(is_listening(args.port_base + i) for i in range(3)):
            print(f"Azurite already listening on {args.port_base}-{args.port_base + 2}")
            return 0
        process = start(args.port_base, args.location)
        PID_FILE.parent.mkdir(exist_ok=True)
        PID_FILE.write_text(str(process.pid))
        print(f"Azurite started (pid {process.pid}) on 127.0.0.1:{args.port_base}-{args.port_base + 2}")
        return 0
    if PID_FILE.exists():
        pid = int(PID_FILE.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        PID_FILE.unlink()
        print("Azurite stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
