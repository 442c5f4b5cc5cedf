"""The data inventory (issue 12, section 1): the README's tables, the declarations and the code agree.

Every module that owns stored data declares it as ``INVENTORY`` (``shared/kernel/inventory.py``).
This module checks, without storage:

* every table the code names is declared, and every declared table is named by the code;
* the fields each module writes (entity dict literals and ``entity["X"] = ...``) are exactly the
  fields it declares; the queue messages' fields are exactly a sealed launch event's keys (the poison queue's
  also the sealed whole of an unparseable message);
* every table with ``ExpiresAt`` is swept by the ``sweep_expired_state`` timer, in its account;
* the README's two inventory tables are exactly the declarations rendered (the failure prints them).

``tests/privacy/test_log_scan.py`` adds the same check at run time: everything the full sandbox flow
writes to Table and Queue storage is declared, in the declared account.

``AWAITING_MERGE`` (in ``tests/privacy/inventory.py``) holds what other branches of issue 12 change
(the README already describes the product with them). Each entry fails
``test_awaiting_merge_is_still_awaited`` once the code catches up, saying what to move or delete,
so the merge cannot leave the inventory behind.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from connector import events as events_blueprint
from connector import maintenance
from connector.services import Services
from sandbox.local_settings import local_values
from shared.kernel.inventory import Account, Classification, Kind, Protection
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Settings
from shared.launch.service import LAUNCH_STATE_KINDS
from shared.microsoft import entra
from shared.portal import service as portal
from shared.storage import state
from shared.visits.events import EventKind, Role, Source, VisitEvent, attendee_key
from shared.visits.sealed_context import seal_event
from tests.privacy.inventory import AWAITING_MERGE, declared, declaring_module, product, render_fields, render_stores

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETUP = ROOT / "docs" / "setup.md"


def _source(module: ModuleType) -> ast.Module:
    assert module.__file__ is not None
    return ast.parse(Path(module.__file__).read_text())


_PROPERTY = re.compile(r"^[A-Z][A-Za-z]*$")


def written_fields(module: ModuleType) -> set[str]:
    """Entity properties a module writes: keys of dict literals of Table properties, and ``entity["X"] = ...``."""
    found: set[str] = set()
    for node in ast.walk(_source(module)):
        if isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if keys and all(_PROPERTY.match(k) for k in keys):
                found.update(keys)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "entity"
                    and isinstance(target.slice, ast.Constant)
                    and isinstance(target.slice.value, str)
                ):
                    found.add(target.slice.value)
    return found


def named_tables() -> set[str]:
    """Tables the product names: module-level constants called *TABLE and literal arguments of ``.table(...)``."""
    names: set[str] = set()
    for folder in ("shared", "connector", "tools"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for statement in tree.body:
                constant = isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                if constant and any(isinstance(t, ast.Name) and t.id.endswith("TABLE") for t in statement.targets):
                    names.add(str(statement.value.value))  # type: ignore[attr-defined]
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "table"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    names.add(str(node.args[0].value))
    return names


# --- code against declarations ----------------------------------------------------------------


def test_every_table_the_code_names_is_declared_and_every_declared_table_is_named() -> None:
    tables = {store.name for _, store in declared().values() if store.kind is Kind.TABLE}
    assert named_tables() == tables


def test_each_module_writes_exactly_the_fields_it_declares() -> None:
    by_module: dict[ModuleType, set[str]] = {}
    for module, store in declared().values():
        if store.kind is Kind.TABLE:
            by_module.setdefault(module, set()).update(f.name for f in store.fields)
    assert by_module, "no table declarations found"
    for module, fields in by_module.items():
        assert written_fields(module) == fields, module.__name__


def test_queue_messages_carry_exactly_the_declared_fields() -> None:
    def event(source: Source, attendee: str | None = None) -> VisitEvent:
        return VisitEvent(
            configuration_id="c",
            geography="emea",
            visit_key="k",
            kind=EventKind.CONNECTED,
            role=Role.PATIENT,
            occurred_at=datetime.now(UTC),
            source=source,
            participant="Patient/p",
            csn="1",
            appointment="a",
            encounter="e",
            department="d",
            attendee=attendee,
        )

    sealer = Sealer.from_text(new_key_text())
    launch = set(json.loads(seal_event(sealer, event(Source.LAUNCH)).to_json()))
    # References in memory only: none serialized; a Graph event names its (hashed) call participant.
    graph = set(json.loads(event(Source.GRAPH, attendee=attendee_key("leg-1")).to_json()))
    assert graph == launch - {"sealed"} | {"attendee"}
    # A group meeting's Graph fact also flags an interpreter (they joined under that name).
    group = set(json.loads(replace(event(Source.GRAPH, attendee=attendee_key("leg-1")), interpreter=True).to_json()))
    assert group == graph | {"interpreter"}
    # And what may tie a participant to their own visit (a visit number typed in their name, an account's hash).
    tied = json.loads(replace(event(Source.GRAPH, attendee=attendee_key("leg-1")), member_hint="label:4821").to_json())
    assert set(tied) == graph | {"member"}
    group |= {"member"}
    launch |= {"attendee"}
    invalid = {"invalid"}  # an unparseable message, sealed whole in the poison queue (FailureLog.record_invalid)
    queues = {store.name: store for _, store in declared().values() if store.kind is Kind.QUEUE}
    assert set(queues) == {events_blueprint.QUEUE, events_blueprint.QUEUE + "-poison"}
    assert {f.name for f in queues[events_blueprint.QUEUE].fields} == launch | group
    assert {f.name for f in queues[events_blueprint.QUEUE + "-poison"].fields} == launch | group | invalid


def test_every_table_with_an_expiry_is_swept_in_its_account() -> None:
    swept = {Account.APP: set(maintenance.APP_SHORT_LIVED_TABLES), Account.GEOGRAPHY: set()}
    swept[Account.GEOGRAPHY] = set(maintenance.GEOGRAPHY_SHORT_LIVED_TABLES)
    expiring = {Account.APP: set(), Account.GEOGRAPHY: set()}
    for _, store in declared().values():
        if store.kind is Kind.TABLE and any(f.name == "ExpiresAt" for f in store.fields):
            expiring[store.account].add(store.name)
    assert expiring == swept


def test_every_ehr_identifier_at_rest_is_sealed_or_keyed() -> None:
    for store in product():
        for f in store.fields:
            if f.classification is Classification.EHR_ID:
                assert f.protection in (Protection.SEALED, Protection.HMAC), f"{store.name}.{f.name}"


def test_awaiting_merge_is_still_awaited() -> None:
    names = {name for name, _ in declared()}
    code = "\n".join(p.read_text() for folder in ("shared", "connector") for p in (ROOT / folder).rglob("*.py"))
    for store in AWAITING_MERGE.stores:
        assert store.name not in names and f'"{store.name}"' not in code, (
            f"{store.name} has landed: declare it next to its repository and delete it from AWAITING_MERGE"
        )
    for name, fields in AWAITING_MERGE.added_fields.items():
        module = declaring_module(name)
        for f in fields:
            assert f.name not in written_fields(module), (
                f"{name} now writes {f.name}: add it to its declaration and delete it from AWAITING_MERGE"
            )
    for name, removed in AWAITING_MERGE.removed_fields.items():
        module = declaring_module(name)
        for field_name in removed:
            assert field_name in written_fields(module), (
                f"{name} no longer writes {field_name}: delete it from its declaration and from AWAITING_MERGE"
            )


# --- declarations against the README ----------------------------------------------------------


def readme_block(name: str) -> str:
    match = re.search(rf"<!-- inventory:{name} -->\n(.*?)\n<!-- /inventory:{name} -->", README.read_text(), re.S)
    assert match, f"README.md has no <!-- inventory:{name} --> block"
    return match.group(1).strip()


def test_readme_lists_every_store_with_its_account_lifetime_and_remover() -> None:
    expected = render_stores(product())
    assert readme_block("stores") == expected, "README inventory (stores) should read:\n" + expected


def test_readme_lists_every_field_with_its_classification_and_protection() -> None:
    expected = render_fields(product())
    assert readme_block("fields") == expected, "README inventory (fields) should read:\n" + expected


def test_the_setup_guide_names_every_store() -> None:
    text = SETUP.read_text()
    privacy = text[text.index("## Privacy") :]
    missing = [s.name for s in product() if f"`{s.name}`" not in privacy]
    assert not missing, f"docs/setup.md's privacy section does not name {missing}"


def test_auth_states_are_declared_in_each_account_with_the_kinds_the_code_keeps_there() -> None:
    """Launch states (they carry EHR context) in the geography's account; the portal's sign-ins in the app's."""

    def kinds(account: Account) -> set[str]:
        _, store = declared()[state.TABLE, account]
        note = store.field("PartitionKey").note
        assert note.startswith("kind: "), note
        return set(note.removeprefix("kind: ").split(", "))

    assert kinds(Account.GEOGRAPHY) == set(LAUNCH_STATE_KINDS)
    assert kinds(Account.APP) == {entra.STATE_KIND, portal.EHR_STATE_KIND}
    # ... and the composition root keeps them there (building it does no I/O)
    assert Services(Settings.from_env(local_values())).states.in_geography == LAUNCH_STATE_KINDS
