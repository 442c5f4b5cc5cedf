"""Logs carry no EHR identifiers and no user names (issue 12, section 4).

The full sandbox flow runs once per writeback mode (Epic ``SetExternalConnectionStatus`` and FHIR
``AuditEvent``) with the root logger at DEBUG and one capturing handler on it, as the Functions worker
attaches its own: every record of every logger, from every thread (the host's HTTP front end, its
worker pool, the queue listener, the Graph adapter's loop, the stand-ins and this test's driver), is
formatted in full (message with its arguments, exception and stack text, every extra field) and
searched for every seeded identifier. One hit fails the test, naming the logger and what was found.

The same run records every Table and Queue write made in this process (the connector, the host's
bindings and the test's own set-up) and checks them against the data inventory: each table, field and
queue message field must be declared, in the account it was written to (``tests/privacy/test_inventory.py``
checks the declarations against the code and the README without storage).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import function_app  # noqa: F401 - the worker imports the app before anything runs; so does this scan
from shared.configurations.model import WritebackMode
from shared.kernel.inventory import Account
from shared.storage.accounts import Storage
from tests.privacy.inventory import AWAITING_MERGE, declared
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


def _base64(content: Any) -> str | None:
    try:
        return base64.b64decode(str(content), validate=True).decode()
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class Write:
    account: str  # storage account name
    store: str  # table or queue name
    fields: frozenset[str]


class Writes:
    """Every Table entity and Queue message written in this process while installed."""

    TABLE_METHODS = ("create_entity", "update_entity", "upsert_entity")

    def __init__(self) -> None:
        self.seen: set[Write] = set()
        self._guard = threading.Lock()

    def _add(self, account: str, store: str, fields: frozenset[str]) -> None:
        with self._guard:
            self.seen.add(Write(account, store, fields))

    @contextmanager
    def installed(self) -> Iterator[Writes]:
        from azure.data.tables import TableClient
        from azure.storage.queue import QueueClient

        originals: list[tuple[type, str, Any]] = []

        def wrap(cls: type, name: str, record: Callable[..., None]) -> None:
            original = getattr(cls, name)
            originals.append((cls, name, original))

            def recorded(client: Any, *args: Any, **kwargs: Any) -> Any:
                record(client, *args, **kwargs)
                return original(client, *args, **kwargs)

            setattr(cls, name, recorded)

        def entity(client: Any, entity: Any = None, *args: Any, **kwargs: Any) -> None:
            entity = entity if entity is not None else kwargs.get("entity")
            self._add(client.account_name, client.table_name, frozenset(entity))

        def transaction(client: Any, operations: Any, *args: Any, **kwargs: Any) -> None:
            for operation in operations:
                if operation[0] != "delete":
                    self._add(client.account_name, client.table_name, frozenset(operation[1]))

        def message(client: Any, content: Any, *args: Any, **kwargs: Any) -> None:
            fields = frozenset({"<not JSON>"})
            for text in (content, _base64(content)):  # the host's output binding sends encoded contents
                with suppress(ValueError, TypeError, AttributeError):
                    fields = frozenset(json.loads(text))
                    break
            self._add(client.account_name, client.queue_name, fields)

        for name in self.TABLE_METHODS:
            wrap(TableClient, name, entity)
        wrap(TableClient, "submit_transaction", transaction)
        wrap(QueueClient, "send_message", message)
        try:
            yield self
        finally:
            for cls, name, original in originals:
                setattr(cls, name, original)


@dataclass
class Scan:
    mode: WritebackMode
    lines: list[tuple[str, str]]
    identifiers: list[Identifier]
    writes: set[Write]
    accounts: dict[str, Account]  # storage account name -> which inventory account it plays
    queues: dict[str, str]  # queue name -> its name in the inventory
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
    writes = Writes()
    try:
        state: Path = tmp_path_factory.mktemp(f"log-scan-{mode.value}")
        with writes.installed(), launch_world(azurite_port_base, state, writeback_mode=mode) as world:
            run_visit(world, mode)
            identifiers = seeded_identifiers(world)
            world.stand_ins.graph.wait_for_deliveries(10)
            storage = Storage(world.settings)
            geography = storage.for_geography(world.configuration.geography).table_service().account_name
            accounts = {storage.app.table_service().account_name: Account.APP, geography: Account.GEOGRAPHY}
            queue = world.settings.writeback_queue_name
            queues = {queue: "%WRITEBACK_QUEUE_NAME%", f"{queue}-poison": "%WRITEBACK_QUEUE_NAME%-poison"}
    finally:
        root.removeHandler(capture)
        root.setLevel(saved_level)
    lines = list(capture.lines)
    yield Scan(mode, lines, identifiers, writes.seen, accounts, queues, {name for name, _ in lines})


def test_the_flow_was_logged_at_debug(scan: Scan) -> None:
    """The capture saw the connector and the host at work (a scan of nothing would prove nothing)."""
    assert any(name.startswith("shared.writeback") for name in scan.loggers), sorted(scan.loggers)
    assert any(name.startswith("sandbox.host") for name in scan.loggers), sorted(scan.loggers)
    assert any("[functions-worker" in line for _, line in scan.lines), "no record from the host's worker threads"
    assert len(scan.lines) > 20


def test_no_log_record_carries_a_seeded_identifier(scan: Scan) -> None:
    findings = []
    for name, line in scan.lines:
        for identifier in scan.identifiers:
            if identifier.pattern.search(line):
                findings.append(f"{identifier.what} {identifier.value!r} in {name}: {line[:300]}")
    assert not findings, f"{len(findings)} log record(s) carry identifiers:\n" + "\n".join(findings[:40])


def test_everything_the_flow_stored_is_declared_in_its_account(scan: Scan) -> None:
    stores = {place: store for place, (_, store) in declared().items()}
    stores.update({(store.name, store.account): store for store in AWAITING_MERGE.stores})
    names = {name for name, _ in stores}
    stored = {scan.queues.get(w.store, w.store) for w in scan.writes}
    assert {"AuthStates", "EhrUserMap", "Visits", "%WRITEBACK_QUEUE_NAME%"} <= stored, stored  # the flow ran
    problems = []
    for write in sorted(scan.writes, key=lambda w: (w.account, w.store)):
        name = scan.queues.get(write.store, write.store)
        account = scan.accounts.get(write.account)
        store = stores.get((name, account)) if account is not None else None
        if name not in names:
            problems.append(f"{name} in account {write.account} is not in the inventory")
            continue
        if store is None:
            declared_in = sorted(a.value for n, a in stores if n == name)
            problems.append(f"{name} written to account {write.account}, declared in the {declared_in} account")
            continue
        undeclared = write.fields - {f.name for f in store.fields} - set(AWAITING_MERGE.added_fields.get(name, ()))
        if undeclared:
            problems.append(f"{name} written with undeclared fields {sorted(undeclared)}")
    assert not problems, "\n".join(problems)
