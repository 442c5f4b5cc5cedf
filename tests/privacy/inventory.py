"""The data inventory as the code declares it, plus what other branches of issue 12 bring (``AWAITING_MERGE``).

Used by ``test_inventory.py`` (declarations against the code and the README) and ``test_log_scan.py``
(declarations against what a full sandbox visit writes). ``python -m tests.privacy.inventory`` rewrites the
README's inventory tables from the declarations.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType

import shared
from shared.kernel.inventory import Account, Field, Kind, Store


@dataclass(frozen=True)
class AwaitingMerge:
    """The README's product minus this branch's code: stores, and fields, that other branches add or remove."""

    stores: tuple[Store, ...] = ()
    added_fields: dict[str, tuple[Field, ...]] = field(default_factory=dict)
    removed_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)


AWAITING_MERGE = AwaitingMerge()


# --- gathering --------------------------------------------------------------------------------


def _modules() -> list[ModuleType]:
    found = [shared]
    for info in pkgutil.walk_packages(shared.__path__, "shared."):
        found.append(importlib.import_module(info.name))
    return found


def declared() -> dict[tuple[str, Account], tuple[ModuleType, Store]]:
    """Every store the code declares, by name and account, with the module declaring it.

    A name may be declared once per account (``AuthStates``: the portal's sign-ins in the app's account, the
    launches' in the geography's), by one module.
    """
    stores: dict[tuple[str, Account], tuple[ModuleType, Store]] = {}
    for module in _modules():
        for store in getattr(module, "INVENTORY", ()):
            assert isinstance(store, Store), f"{module.__name__}.INVENTORY holds {store!r}"
            assert (store.name, store.account) not in stores, f"{store.name} declared twice in the {store.account}"
            stores[store.name, store.account] = (module, store)
    owners = {name: {m.__name__ for (n, _), (m, _) in stores.items() if n == name} for name, _ in stores}
    assert all(len(modules) == 1 for modules in owners.values()), f"a store declared by two modules: {owners}"
    return stores


def declaring_module(name: str) -> ModuleType:
    """The module that declares the store(s) called ``name``."""
    return next(module for (n, _), (module, _) in declared().items() if n == name)


def product() -> list[Store]:
    """The product the README describes: the declarations, with what other branches bring."""
    stores = []
    for _, store in declared().values():
        removed = AWAITING_MERGE.removed_fields.get(store.name, ())
        fields = tuple(f for f in store.fields if f.name not in removed)
        stores.append(replace(store, fields=fields + AWAITING_MERGE.added_fields.get(store.name, ())))
    stores += AWAITING_MERGE.stores
    order = {Account.APP: 0, Account.GEOGRAPHY: 1}, {Kind.TABLE: 0, Kind.QUEUE: 1, Kind.BLOBS: 2}
    return sorted(stores, key=lambda s: (order[0][s.account], order[1][s.kind], s.name.lower()))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _store_cell(store: Store, stores: list[Store]) -> str:
    """The store's name, with its account when the same name lives in both (``AuthStates``)."""
    shared_name = sum(s.name == store.name for s in stores) > 1
    return f"`{store.name}` ({store.account.value})" if shared_name else f"`{store.name}`"


def render_stores(stores: list[Store]) -> str:
    lines = ["| store | kind | account | holds | lifetime | removed by |", "|---|---|---|---|---|---|"]
    for s in stores:
        cells = (_store_cell(s, stores), s.kind.value, s.account.value, s.purpose, s.lifetime, s.removed_by)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def render_fields(stores: list[Store]) -> str:
    lines = ["| store | field | classification | protection | note |", "|---|---|---|---|---|"]
    for s in stores:
        for f in s.fields:
            cells = (_store_cell(s, stores), f"`{f.name}`", f.classification.value, f.protection.value, f.note)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def rewrite_readme(readme: Path) -> None:
    """Write the README's inventory blocks from the declarations (after a store or field changes)."""
    text = readme.read_text()
    stores = product()
    for name, table in (("stores", render_stores(stores)), ("fields", render_fields(stores))):
        text = re.sub(
            rf"(<!-- inventory:{name} -->\n).*?(\n<!-- /inventory:{name} -->)",
            lambda m, table=table: m.group(1) + table + m.group(2),
            text,
            flags=re.S,
        )
    readme.write_text(text)


if __name__ == "__main__":  # python -m tests.privacy.inventory
    rewrite_readme(Path(__file__).resolve().parents[2] / "README.md")
