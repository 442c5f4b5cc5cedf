"""The real function_app, started as `python -m sandbox.host` would be started by `scripts/demo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox.server import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.azurite
def test_real_function_app_health_and_ready_with_keys(base_env: dict[str, str], tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": base_env}))
    keys = tmp_path / "host-keys.json"
    port = free_port()
    # Settings must come from the file, as with func start: drop them from the inherited environment.
    environ = {k: v for k, v in os.environ.items() if k not in base_env}
    process = subprocess.Popen(  # noqa: S603 - our own module with fixed arguments
        [sys.executable, "-m", "sandbox.host", "--port", str(port), "--settings", str(settings), "--keys", str(keys)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                health = httpx.get(f"{base}/api/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the host did not start"
                time.sleep(0.1)
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}

        assert httpx.get(f"{base}/api/ready", timeout=10).status_code == 401
        function_key = json.loads(keys.read_text())["functionKeys"]["default"]
        ready = httpx.get(f"{base}/api/ready", headers={"x-functions-key": function_key}, timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"health: [GET] http://localhost:{port}/api/health" in output
    assert "sweep_expired_state: timerTrigger" in output
    assert "Host stopped." in output
