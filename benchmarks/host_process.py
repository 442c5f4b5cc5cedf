"""The function app in the local Functions host, alone in a process of its own, measurable from outside.

    python -m benchmarks.host_process --port 7071 --settings settings.json [--telemetry]

Benchmarks start it as a child process so that the CPU they report is the host's alone: the stand-ins,
Azurite and the clients live in other processes. It answers one-line commands on stdin, one JSON line
each on stdout:

    cpu     {"cpu": seconds of CPU this process used so far (all threads), "threads": n}
    ops     {"ops": {"Table.operation": count, ...}} since the last ``ops`` (this process's Table calls)
    quit    stops the host and exits

``--telemetry`` turns OpenTelemetry export on as in Azure (``connector.telemetry.configure_telemetry``,
which the real worker runs before the first invocation; the local host runs no worker extensions), against
whatever ``APPLICATIONINSIGHTS_CONNECTION_STRING`` names, e.g. ``benchmarks.telemetry_stub``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", type=Path, required=True, help="a JSON object of app settings")
    parser.add_argument("--telemetry", action="store_true")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings.read_text())

    started = time.process_time()
    from benchmarks.table_operations import TableOperations
    from sandbox.host import LocalHost

    with TableOperations().installed() as ops:
        host = LocalHost("function_app", settings, port=args.port, app_dir=ROOT)
        host.start()  # imports function_app and indexes it, as the worker does
        telemetry = 0.0
        if args.telemetry:
            from connector.telemetry import configure_telemetry

            before = time.process_time()
            if not configure_telemetry():
                raise SystemExit("telemetry did not turn on: is APPLICATIONINSIGHTS_CONNECTION_STRING set?")
            telemetry = time.process_time() - before
        ready = {"ready": host.url, "start_cpu": time.process_time() - started, "telemetry_cpu": telemetry}
        print(json.dumps(ready), flush=True)
        try:
            for line in sys.stdin:
                command = line.strip()
                if command == "cpu":
                    import threading

                    reply: dict[str, object] = {"cpu": time.process_time(), "threads": threading.active_count()}
                elif command == "ops":
                    reply = {"ops": dict(ops.take())}
                elif command == "quit":
                    break
                else:
                    reply = {"error": f"unknown command {command!r}"}
                print(json.dumps(reply), flush=True)
        finally:
            host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())


class HostProcess:
    """A ``python -m benchmarks.host_process`` child: ``start()``, ``url``, ``cpu()``, ``ops()``, ``stop()``."""

    def __init__(
        self,
        settings: dict[str, str],
        port: int,
        *,
        telemetry: bool = False,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.port = port
        self.telemetry = telemetry
        self.environ = environ or {}
        self.started: dict[str, object] = {}
        self._process: subprocess.Popen[str] | None = None
        self._file: tempfile._TemporaryFileWrapper[str] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostProcess:
        self._file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115 - kept open
        json.dump(self.settings, self._file)
        self._file.close()
        command = [sys.executable, "-m", "benchmarks.host_process", "--port", str(self.port)]
        command += ["--settings", self._file.name] + (["--telemetry"] if self.telemetry else [])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.settings, **self.environ}
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - the host's own log, shown if it fails
        self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        self.started = self._read()
        if "ready" not in self.started:
            raise RuntimeError(f"the host did not start: {self.started}")
        return self

    def cpu(self) -> float:
        value = self._ask("cpu")["cpu"]
        assert isinstance(value, int | float)
        return float(value)

    def ops(self) -> dict[str, int]:
        counts = self._ask("ops")["ops"]
        assert isinstance(counts, dict)
        return {str(name): int(count) for name, count in counts.items()}

    def log_tail(self, characters: int = 3000) -> str:
        """The end of what the host wrote to stderr (warnings and errors: no logging is configured in it)."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = str(self._log.read())[-characters:]
        self._log.seek(0, 2)
        return text

    def stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self._process.stdin is not None
                self._process.stdin.write("quit\n")
                self._process.stdin.flush()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._file is not None:
            Path(self._file.name).unlink(missing_ok=True)
            self._file = None

    def _ask(self, command: str) -> dict[str, object]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, object]:
        assert self._process is not None and self._process.stdout is not None
        while True:
            line = self._process.stdout.readline()
            if not line:
                self._log.seek(0)
                log = self._log.read()[-3000:]
                raise RuntimeError(f"the host process ended (exit code {self._process.poll()}):\n{log}")
            if line.startswith("{"):
                reply: dict[str, object] = json.loads(line)
                return reply
