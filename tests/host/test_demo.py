"""`python -m sandbox.demo`: settings written, Azurite and the host started, everything stopped on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sandbox import azurite
from sandbox.demo import SERVICES
from sandbox.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_services_start_with_azurite_and_end_with_the_functions_host() -> None:
    names = [service.name for service in SERVICES]
    assert names[0] == "Azurite"
    assert names[-1] == "Functions host"


def test_demo_runs_the_app_on_azurite_and_stops_cleanly(tmp_path: Path) -> None:
    port, port_base = free_port(), azurite.free_port_base()
    entra_https, entra_http, graph, ehr = (free_port() for _ in range(4))
    settings, state = tmp_path / "local.settings.json", tmp_path / "state"
    process = subprocess.Popen(  # noqa: S603 - our own module with fixed arguments
        [
            sys.executable, "-m", "sandbox.demo", "--port", str(port), "--azurite-port-base", str(port_base),
            "--settings", str(settings), "--state-dir", str(state),
            "--entra-ports", f"{entra_https},{entra_http}", "--graph-port", str(graph), "--ehr-port", str(ehr),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (state / "host-keys.json").exists() or not azurite.is_listening(port):
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        values = json.loads(settings.read_text())["Values"]
        assert values["AzureWebJobsStorage"].endswith(
            f"TableEndpoint=http://127.0.0.1:{port_base + 2}/devstoreaccount1;"
        )
        key = json.loads((state / "host-keys.json").read_text())["functionKeys"]["default"]
        ready = httpx.get(f"http://127.0.0.1:{port}/api/ready", params={"code": key}, timeout=10)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"http://127.0.0.1:{ehr}/api/FHIR/R4/.well-known/smart-configuration").status_code == 200
        signin = httpx.get(f"http://127.0.0.1:{port}/api/portal/signin", timeout=10)
        assert signin.status_code == 302
        assert signin.headers["location"].startswith(
            f"http://127.0.0.1:{entra_http}/organizations/oauth2/v2.0/authorize"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "The sandbox is running" in output
    assert f"http://localhost:{port}/api/health" in output
    assert "Stopped." in output
    assert not azurite.is_listening(port_base + 2)
    assert (state / "azurite").is_dir()
