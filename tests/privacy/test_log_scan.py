"""Logs carry no EHR identifiers and no user names (issue 12, section 4).

The full sandbox flow runs once per writeback mode (Epic ``SetExternalConnectionStatus`` and FHIR
``AuditEvent``) with the root logger at DEBUG and one capturing handler on it, as the Functions worker
attaches its own: every record of every logger, from every thread (the host's HTTP front end, its
worker pool, the queue listener, the Graph adapter's loop, the stand-ins and this test's driver), is
formatted in full (message with its arguments, exception and stack text, every extra field) and
searched for every seeded identifier. One hit fails the test, naming the logger and what was found.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import function_app  # noqa: F401 - the worker imports the app before anything runs; so does this scan
from shared.configurations.model import WritebackMode
from tests.privacy.sandbox_flow import Identifier, run_visit, seeded_identifiers
from tests.support.launch_world import launch_world

pytestmark = pytest.mark.azurite

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_FORMATTER = logging.Formatter("%(name)s %(levelname)s [%(threadName)s] %(message)s")


def render(record: logging.LogRecord) -> str:
    """Everything a handler could ship: the formatted message, exception and stack text, extra fields."""
    text = _FORMATTER.format(record)  # adds exc_text and stack_info
    extras = {key: value for key, value in vars(record).items() if key not in _STANDARD}
    return text + (f" extra={extras!r}" if extras else "")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, str]] = []  # (logger, rendered record)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = render(record)
        except Exception as exc:  # noqa: BLE001 - a record that cannot be formatted is itself a finding
            line = f"{record.name} UNFORMATTABLE {type(exc).__name__}: {record.msg!r} {record.args!r}"
        with self._guard:
            self.lines.append((record.name, line))


@dataclass
class Scan:
    mode: WritebackMode
    lines: list[tuple[str, str]]
    identifiers: list[Identifier]
    loggers: set[str] = field(default_factory=set)


@pytest.fixture(scope="module", params=[WritebackMode.EPIC, WritebackMode.FHIR_AUDIT_EVENT], ids=lambda m: m.value)
def scan(
    request: pytest.FixtureRequest, azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scan]:
    mode: WritebackMode = request.param
    root = logging.getLogger()
    capture = Capture()
    saved_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    try:
        state: Path = tmp_path_factory.mktemp(f"log-scan-{mode.value}")
        with launch_world(azurite_port_base, state, writeback_mode=mode) as world:
            run_visit(world, mode)
            identifiers = seeded_identifiers(world)
            world.stand_ins.graph.wait_for_deliveries(10)
    finally:
        root.removeHandler(capture)
        root.setLevel(saved_level)
    yield Scan(mode, list(capture.lines), identifiers, {name for name, _ in capture.lines})


def test_the_flow_was_logged_at_debug(scan: Scan) -> None:
    """The capture saw the connector and the host at work (a scan of nothing would prove nothing)."""
    assert any(name.startswith("shared.writeback") for name in scan.loggers), sorted(scan.loggers)
    assert any(name.startswith("sandbox.host") for name in scan.loggers), sorted(scan.loggers)
    assert len(scan.lines) > 20


def test_no_log_record_carries_a_seeded_identifier(scan: Scan) -> None:
    findings = []
    for name, line in scan.lines:
        for identifier in scan.identifiers:
            if identifier.pattern.search(line):
                findings.append(f"{identifier.what} {identifier.value!r} in {name}: {line[:300]}")
    assert not findings, f"{len(findings)} log record(s) carry identifiers:\n" + "\n".join(findings[:40])
