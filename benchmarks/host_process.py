"""The function app in the local Functions host, alone in a process of its own, measurable from outside.

    python -m benchmarks.host_process --port 7071 --settings settings.json [--telemetry]

Benchmarks start it as a child process so that the CPU they report is the host's alone: the stand-ins,
Azurite and the clients live in other processes. It answers one-line commands on stdin, one JSON line
each on stdout:

    cpu     {"cpu": seconds of CPU this process used so far (all threads), "threads": n}
    floor_failures  {"failures": [...]} the writeback floor's failed EHR calls since the last ask (--writeback-floor)
    ops     {"ops": {"Table.operation": count, ...}} since the last ``ops`` (this process's Table calls)
    threads {"threads": {"thread name": CPU seconds, ...}} per live thread (where the host's CPU goes)
    rss     {"rss_mb": resident memory now, "peak_rss_mb": its peak (VmHWM)}
    quit    stops the host and exits

``--telemetry`` turns OpenTelemetry export on as in Azure (``connector.telemetry.configure_telemetry``,
which the real worker runs before the first invocation; the local host runs no worker extensions), against
whatever ``APPLICATIONINSIGHTS_CONNECTION_STRING`` names, e.g. ``benchmarks.telemetry_stub``.
``--profile FILE`` runs every invocation (and every queue output it sends) under one cProfile, written to FILE
(pstats) at ``quit``.
``--writeback-floor SPEC`` makes it the writeback's floor in a host: the queue function ``writeback_events`` is
replaced by an event's unavoidable steps alone (``benchmarks.writeback_floor.FloorSteps``, SPEC a ``FloorSpec`` as
JSON), so that the host's own work per message (receive, dispatch, delete) is in the floor too.
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchmarks.writeback_floor import FloorSteps

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.host_process")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--settings", type=Path, required=True, help="a JSON object of app settings")
    parser.add_argument("--telemetry", action="store_true")
    parser.add_argument("--phases", action="store_true", help="time the launch's phases (``phases`` command)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of every invocation (pstats) here at quit")
    parser.add_argument("--writeback-floor", metavar="SPEC", help="run the writeback floor's steps as the function")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings.read_text())

    started = time.process_time()
    from benchmarks.table_operations import TableOperations
    from sandbox.host import LocalHost

    with TableOperations().installed() as ops:
        host = LocalHost("function_app", settings, port=args.port, app_dir=ROOT)
        server_profiler = profile_http_server() if args.profile else None
        host.start()  # imports function_app and indexes it, as the worker does
        profiler = profile_invocations(host, server_profiler) if args.profile else None
        phases = time_phases(host) if args.phases else None
        floor: FloorSteps | None = None
        try:
            floor = bare_writeback(host, args.writeback_floor) if args.writeback_floor else None
            telemetry = 0.0
            if args.telemetry:
                from connector.telemetry import configure_telemetry

                before = time.process_time()
                if not configure_telemetry():
                    raise SystemExit("telemetry did not turn on: is APPLICATIONINSIGHTS_CONNECTION_STRING set?")
                telemetry = time.process_time() - before
            ready = {"ready": host.url, "start_cpu": time.process_time() - started, "telemetry_cpu": telemetry}
            print(json.dumps(ready), flush=True)
            for line in sys.stdin:
                command = line.strip()
                if command == "cpu":
                    import threading

                    reply: dict[str, object] = {"cpu": time.process_time(), "threads": threading.active_count()}
                elif command == "threads":
                    reply = {"threads": thread_cpu()}
                elif command == "thread_usage":
                    reply = {"threads": thread_usage()}
                elif command == "usage":
                    reply = {"usage": usage()}
                elif command == "phases":
                    reply = {"phases": phases.take() if phases else {}}
                elif command == "rss":
                    reply = memory()
                elif command == "ops":
                    reply = {"ops": dict(ops.take())}
                elif command == "floor_failures":
                    reply = {"failures": floor.take_failures() if floor is not None else []}
                elif command == "quit":
                    break
                else:
                    reply = {"error": f"unknown command {command!r}"}
                print(json.dumps(reply), flush=True)
        finally:
            host.stop()
            if floor is not None:
                floor.close()
            if profiler is not None:
                profiler.dump_stats(str(args.profile))
    return 0


def bare_writeback(host: Any, spec: str) -> FloorSteps:
    """Replace the host's ``writeback_events`` by the floor's steps of an event (``--writeback-floor``)."""
    from benchmarks.writeback_floor import FloorSpec, FloorSteps

    threads = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    # A row for each thread the worker's pool may start (LocalHost's rule; its default is at most 32).
    pool = int(threads) if threads.isdigit() and int(threads) > 0 else 32
    steps = FloorSteps(FloorSpec.from_json(spec), threads=pool)
    [entry] = [entry for entry in host.functions if entry.name == "writeback_events"]

    def writeback_events(**kwargs: Any) -> None:
        steps.event_in_host(kwargs[str(entry.trigger["name"])].get_body().decode())

    entry.function = writeback_events
    return steps


def profile_http_server() -> Any:
    """A cProfile of the local host's HTTP server thread (uvicorn's event loop), from its start to its stop.

    Installed before the host starts: the server's thread runs under it (CPU clock of that thread).
    """
    import cProfile

    from sandbox import server
    from sandbox.host.http_server import HttpFrontend

    profiler = cProfile.Profile(time.thread_time)
    run = server.QuietServer.run

    def profiled_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self.config.app, HttpFrontend):  # another server of this process (none today)
            return run(self, *args, **kwargs)
        profiler.enable()
        try:
            return run(self, *args, **kwargs)
        finally:
            profiler.disable()

    server.QuietServer.run = profiled_run  # type: ignore[method-assign]
    return profiler


def profile_invocations(host: Any, server_profiler: Any = None) -> Any:
    """One cProfile around every invocation (in whichever worker thread runs it) and every queue output sent,
    merged at quit with the HTTP server thread's (``profile_http_server``) when there is one.

    Meant for sequential launches (``benchmarks.launch --profile``): overlapping invocations would share it.
    """
    import cProfile
    import functools
    import pstats
    import threading

    local = threading.local()
    profilers: list[cProfile.Profile] = [server_profiler] if server_profiler is not None else []

    def profiler_of_thread() -> cProfile.Profile:
        if not hasattr(local, "profiler"):  # one per thread: a profiler's call stack is its thread's
            local.profiler = cProfile.Profile(time.thread_time)  # CPU of the thread, not wall time
            profilers.append(local.profiler)
        return local.profiler  # type: ignore[no-any-return]

    def profiled(function: Any) -> Any:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            profiler = profiler_of_thread()
            profiler.enable()
            try:
                return function(*args, **kwargs)
            finally:
                profiler.disable()

        return run

    class Merged:
        def dump_stats(self, path: str) -> None:
            if profilers:
                stats = pstats.Stats(profilers[0])
                for other in profilers[1:]:
                    stats.add(other)
                stats.dump_stats(path)

    for entry in host.functions:
        if not entry.is_async:
            entry.function = profiled(entry.function)
    invoker = host._invoker
    invoker._flush = profiled(invoker._flush)
    return Merged()


# A warm launch's phases (inclusive: a phase's CPU includes the phases it calls): "label": "module:attribute path".
LAUNCH_PHASES = {
    "1 launch URL hop (the function)": "connector.launch:_begin",
    "1a allow-list + configuration memo": "shared.launch.service:LaunchService._launch_configuration",
    "1b SMART discovery (memo)": "shared.ehr.smart:SmartClient.discover",
    "1c state sealed": "shared.storage.state:StateRouter.seal",
    "1d authorization URL": "shared.ehr.smart:SmartClient.authorization_request",
    "2 callback hop (the function)": "function:launch_callback",
    "2a state opened + conditional create": "shared.storage.state:StateRouter.consume_sealed",
    "2a' of which the Table create": "shared.storage.state:AuthStateStore.mark_used",
    "2b token POST": "shared.ehr.smart:SmartClient.exchange_code",
    "2c id_token check": "shared.ehr.smart:SmartClient.validate_id_token",
    "2d context check": "shared.launch.context_check:ContextCheck.confirm",
    "2e visit (memo)": "shared.launch.service:LaunchService._open_visit",
    "2f mapping (memo)": "shared.launch.service:LaunchService._mapping",
    "2g createOrGet": "shared.microsoft.teams:TeamsClient.create_or_get_meeting",
    "2h visit token": "shared.visits.tokens:VisitTokens.issue",
    "2i launch event sealed": "shared.launch.service:seal_event",
    "2j response built": "connector.launch:_respond",
    "3 queue output sent (local host)": "invoker:_flush",
    "4 error edge + correlation id": "connector.web:correlation_id",
}
# A writeback event's phases (benchmarks.writeback --phases).
WRITEBACK_PHASES = {
    "W queue message decoded (local host, listener thread)": "sandbox.host.queues:QueueListener._trigger",
    "W0 invocation on the worker thread (the function, then its message settled)": "invoker:_run_then",
    "W0a message settled: deleted (local host)": "sandbox.host.queues:QueueListener._settle",
    "W1 the function": "function:writeback_events",
    "W2 usage-report recorder (permanent failures only)": "shared.reports.recorder:FactRecorder.record",
    "W2a usage-report fold (decided per event)": "shared.reports.fold:ReportFold.change_for",
    "W2b usage-report fold (merged into the visit row)": "shared.reports.fold:Folded.parse",
    "W3 writeback worker": "shared.writeback.worker:WritebackWorker.handle",
    "W3a event parsed": "shared.visits.events:VisitEvent.from_json",
    "W3b event opened by the worker": "shared.writeback.worker:open_event",
    "W3c visit read": "shared.visits.repository:VisitRepository.get",
    "W3d configuration (memo)": "shared.writeback.targets:ConfigurationTargets.target_for",
    "W3e ledger claim": "shared.writeback.ledger:WritebackLedger.claim",
    "W3f EHR call": "shared.writeback.worker:WritebackWorker._call",
    "W3g done mark": "shared.writeback.ledger:WritebackLedger.mark_done",
    "W3h presence write (with the context's release and its pending query)": (
        "shared.writeback.worker:WritebackWorker._record_presence"
    ),
    "W3i context release in a write of its own (group members; the upkeep timer)": (
        "shared.writeback.worker:WritebackWorker.release_context_when_done"
    ),
    "W3j ledger pending query": "shared.writeback.ledger:WritebackLedger.pending",
}


class PhaseTimes:
    """CPU (``time.thread_time``) spent inside each wrapped callable, and how often it ran, since the last take."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._spent: dict[str, list[float]] = {}

    def wrap(self, label: str, function: Any) -> Any:
        import functools

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self._lock:
                    entry = self._spent.setdefault(label, [0.0, 0])
                    entry[0] += spent
                    entry[1] += 1

        return timed

    def take(self) -> dict[str, list[float]]:
        with self._lock:
            spent, self._spent = self._spent, {}
        return spent


def time_phases(host: Any) -> PhaseTimes:
    import importlib

    phases = PhaseTimes()
    for label, target in {**LAUNCH_PHASES, **WRITEBACK_PHASES}.items():
        module_name, path = target.split(":")
        if module_name == "function":  # an indexed function: the host holds the callable itself
            for entry in host.functions:
                if entry.name == path:
                    entry.function = phases.wrap(label, entry.function)
            continue
        owner: Any = host._invoker if module_name == "invoker" else importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, name):
            continue  # not in this app (e.g. a class renamed): the phase is not shown
        setattr(owner, name, phases.wrap(label, getattr(owner, name)))
    return phases


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread, by name (the HTTP server's event loop, the worker pool, SDK threads)."""
    return {name: used["cpu"] for name, used in thread_usage().items()}


def thread_usage() -> dict[str, dict[str, float]]:
    """CPU seconds and context switches (voluntary, involuntary) of the live threads, by name."""
    import threading

    ticks = os.sysconf("SC_CLK_TCK")
    spent: dict[str, dict[str, float]] = {}
    for thread in threading.enumerate():
        task = Path(f"/proc/self/task/{thread.native_id}")
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        name = thread.name.split("_")[0].rstrip("0123456789-")
        used = spent.setdefault(name, {"cpu": 0.0, "voluntary": 0.0, "involuntary": 0.0, "threads": 0.0})
        used["cpu"] += (int(fields[11]) + int(fields[12])) / ticks
        used["voluntary"] += int(status["voluntary_ctxt_switches"])
        used["involuntary"] += int(status["nonvoluntary_ctxt_switches"])
        used["threads"] += 1
    return spent


def usage() -> dict[str, float]:
    """This process's resource usage so far: user and system CPU (s), page faults and context switches."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user": used.ru_utime,
        "system": used.ru_stime,
        "minor_faults": used.ru_minflt,
        "voluntary_switches": used.ru_nvcsw,
        "involuntary_switches": used.ru_nivcsw,
    }


def usage_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """What ``usage`` grew by per unit of work (CPU in ms)."""
    scale = {"user": 1000.0, "system": 1000.0}
    return {key: (after[key] - before[key]) * scale.get(key, 1.0) / count for key in after}


def memory() -> dict[str, object]:
    """This process's resident memory now and at its peak (VmHWM), in MB."""
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Vm")
    )
    return {name: int(status[key].split()[0]) / 1024 for name, key in (("rss_mb", "VmRSS"), ("peak_rss_mb", "VmHWM"))}


if __name__ == "__main__":
    sys.exit(main())


def quit_child(process: subprocess.Popen[str]) -> None:
    """Ask a benchmark's child process to end (``quit`` on its stdin), and kill it if it has not within 30 s; a
    child that died already (its pipe closed) is only waited for."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.write("quit\n")
            process.stdin.close()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ServedChild:
    """A benchmark's child process kept up between its measurements (a floor): it prints one JSON line when ready,
    then answers each command line on stdin with one JSON line; ``close`` asks it to quit and kills it if it does
    not, never masking an error in flight."""

    def __init__(self, command: list[str], env: dict[str, str], *, name: str) -> None:
        self._name = name
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the process
        self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True
        )
        try:
            self.ready = self._answer()
        except BaseException:
            self.close()
            raise

    def ask(self, command: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        quit_child(self._process)
        self._errors.close()

    def _answer(self) -> dict[str, Any]:
        """The process's next JSON line (a line that is not one, e.g. a library's print, is skipped)."""
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                if "error" in answer:
                    raise RuntimeError(f"{self._name} refused a command: {answer['error']}")
                return answer
        self._errors.seek(0)
        raise RuntimeError(f"{self._name} ended: " + self._errors.read()[-2000:].decode(errors="replace"))


class HostProcess:
    """A ``python -m benchmarks.host_process`` child: ``start()``, ``url``, ``cpu()``, ``ops()``, ``stop()``."""

    def __init__(
        self,
        settings: dict[str, str],
        port: int,
        *,
        telemetry: bool = False,
        environ: dict[str, str] | None = None,
        profile: Path | None = None,
        phases: bool = False,
        writeback_floor: str | None = None,
    ) -> None:
        self.profile = profile
        self.writeback_floor = writeback_floor
        self.timed_phases = phases
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
        command += ["--profile", str(self.profile)] if self.profile else []
        command += ["--phases"] if self.timed_phases else []
        command += ["--writeback-floor", self.writeback_floor] if self.writeback_floor else []
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

    def threads(self) -> dict[str, float]:
        spent = self._ask("threads")["threads"]
        assert isinstance(spent, dict)
        return {str(name): float(value) for name, value in spent.items()}

    def usage(self) -> dict[str, float]:
        used = self._ask("usage")["usage"]
        assert isinstance(used, dict)
        return {str(key): float(value) for key, value in used.items()}

    def phases(self) -> dict[str, list[float]]:
        spent = self._ask("phases")["phases"]
        assert isinstance(spent, dict)
        return spent

    def rss(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self._ask("rss").items()}  # type: ignore[arg-type]

    def floor_failures(self) -> list[str]:
        """The writeback floor's failed EHR calls since the last ask (``--writeback-floor``)."""
        failures = self._ask("floor_failures")["failures"]
        assert isinstance(failures, list)
        return [str(failure) for failure in failures]

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
            quit_child(self._process)
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
