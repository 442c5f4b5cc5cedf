"""The architecture contract: which rooms of the tree may import which.

``import_violations(root)`` reads every ``import`` and ``from ... import`` of the code under ``root`` with
``ast`` (function-level and ``TYPE_CHECKING`` imports included, ``from shared import x`` and relative
imports resolved) and returns one ``file:line imports X: rule`` per forbidden edge. The real tree must
have none; the synthetic trees below prove that each rule fails when a forbidden import is added.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("shared", "connector", "function_app.py", "sandbox", "benchmarks", "tools")

ADAPTERS = ("shared.http", "shared.storage", "shared.jose", "shared.ehr", "shared.microsoft")
VALUE_TYPES = ("shared.visits.events", "shared.visits.model", "shared.writeback.model", "shared.configurations.model")
PRODUCT = ("shared", "connector", "function_app")
# The blueprints, the app object the host indexes, and the local Functions host that runs it.
MAY_IMPORT_AZURE_FUNCTIONS = ("connector", "function_app", "sandbox.host")
TOP_LEVEL_MODULES_IN_SHARED = 3  # besides __init__.py: new code belongs in a context

KERNEL = "shared/kernel/ imports nothing of ours"
SHARED = "shared/ never imports connector, sandbox, tests, benchmarks or tools"
ADAPTER = (
    "an adapter imports only shared.kernel, other adapters and the value types of visits, writeback, configurations"
)
PRODUCT_CODE = "product code never imports sandbox or tests"
AZURE_FUNCTIONS = "only connector/ imports azure.functions"


@dataclass(frozen=True)
class Import:
    """One imported module, resolved to its absolute dotted name, as written at ``path:line`` of ``importer``."""

    path: str
    line: int
    importer: str
    module: str


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def ours(root: Path, module: str) -> bool:
    return is_module(root, module.split(".")[0])


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_files(root: Path) -> Iterator[Path]:
    for entry in SCANNED:
        top = root / entry
        if top.is_file():
            yield top
        for folder, subfolders, files in os.walk(top):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith((".", "__pycache__")))
            yield from (Path(folder) / name for name in sorted(files) if name.endswith(".py"))


def imports(root: Path, path: Path) -> Iterator[Import]:
    """Every module ``path`` imports, once per statement."""
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    relative = path.relative_to(root).as_posix()
    for node in ast.walk(ast.parse(path.read_text(), filename=relative)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = imported_from(root, absolute(package, node), [alias.name for alias in node.names])
        else:
            continue
        for module in dict.fromkeys(modules):
            yield Import(relative, node.lineno, importer, module)


def absolute(package: str, node: ast.ImportFrom) -> str:
    """``from ..x import y`` inside package ``a.b`` reads from ``a.x``."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    return ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])


def imported_from(root: Path, base: str, names: list[str]) -> list[str]:
    """``from pkg import name`` imports ``pkg.name`` when that is a module (always, outside this tree), else ``pkg``."""
    return [
        base if name == "*" or (ours(root, base) and not is_module(root, f"{base}.{name}")) else f"{base}.{name}"
        for name in names
    ]


def broken_rules(root: Path, edge: Import) -> Iterator[str]:
    source, target = edge.importer, edge.module
    if within(source, "shared.kernel") and ours(root, target) and not within(target, "shared.kernel"):
        yield KERNEL
    if within(source, "shared") and within(target, "connector", "sandbox", "tests", "benchmarks", "tools"):
        yield SHARED
    adapter_may_import = ("shared.kernel", *ADAPTERS, *VALUE_TYPES)
    if within(source, *ADAPTERS) and within(target, "shared") and not within(target, *adapter_may_import):
        yield ADAPTER
    if within(source, *PRODUCT) and within(target, "sandbox", "tests"):
        yield PRODUCT_CODE
    if within(target, "azure.functions") and not within(source, *MAY_IMPORT_AZURE_FUNCTIONS):
        yield AZURE_FUNCTIONS


def import_violations(root: Path) -> list[str]:
    """One ``file:line imports X: rule`` per forbidden import under ``root``."""
    return [
        f"{edge.path}:{edge.line} imports {edge.module}: {rule}"
        for path in python_files(root)
        for edge in imports(root, path)
        for rule in broken_rules(root, edge)
    ]


def has_docstring(init: Path) -> bool:
    return init.is_file() and ast.get_docstring(ast.parse(init.read_text())) is not None


def layout_violations(root: Path) -> list[str]:
    """Every context of ``shared/`` is a package that says what it owns; few modules sit outside one."""
    shared = root / "shared"
    contexts = sorted(p for p in shared.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    found = [
        f"shared/{context.name}/__init__.py: every context has a docstring"
        for context in contexts
        if not has_docstring(context / "__init__.py")
    ]
    modules = sorted(p.name for p in shared.glob("*.py") if p.name != "__init__.py")
    if len(modules) > TOP_LEVEL_MODULES_IN_SHARED:
        listed = ", ".join(modules)
        found.append(f"shared/ has {len(modules)} top-level modules ({listed}): at most {TOP_LEVEL_MODULES_IN_SHARED}")
    return found


def test_the_tree_keeps_the_contract() -> None:
    assert import_violations(ROOT) == []
    assert layout_violations(ROOT) == []


def test_the_walker_reads_every_room_of_the_real_tree() -> None:
    """The contract cannot pass vacuously: every product file is read and every room's imports are seen."""
    scanned = {path.relative_to(ROOT).as_posix() for path in python_files(ROOT)}
    assert {path.relative_to(ROOT).as_posix() for path in (ROOT / "shared").rglob("*.py")} <= scanned
    assert "function_app.py" in scanned
    edges = [edge for path in python_files(ROOT) for edge in imports(ROOT, path)]
    for room in ("shared.kernel", *ADAPTERS, "shared.visits", "connector", "function_app", "sandbox"):
        assert any(within(edge.importer, room) for edge in edges), room
    assert any(within(edge.importer, "connector") and edge.module == "azure.functions" for edge in edges)


def test_imports_are_resolved(tmp_path: Path) -> None:
    text = (
        "from typing import TYPE_CHECKING\n"
        "from shared import visits\n"  # a package
        "from shared.visits import model, Visit\n"  # a module and a name of the package
        "from . import model as same\n"
        "from ..kernel.errors import ConnectorError\n"
        "from azure import functions\n"
        "if TYPE_CHECKING:\n"
        "    import connector.web\n"
        "def late() -> None:\n"
        "    from shared.visits.model import *\n"
    )
    root = build(tmp_path, {"shared/visits/repository.py": text, "shared/visits/model.py": "", "connector/web.py": ""})
    assert [(edge.line, edge.module) for edge in imports(root, root / "shared/visits/repository.py")] == [
        (1, "typing.TYPE_CHECKING"),
        (2, "shared.visits"),
        (3, "shared.visits.model"),
        (3, "shared.visits"),
        (4, "shared.visits.model"),
        (5, "shared.kernel.errors"),
        (6, "azure.functions"),
        (8, "connector.web"),
        (10, "shared.visits.model"),
    ]


# Synthetic trees: each forbidden import is reported with its file, line, module and rule.


def build(root: Path, files: dict[str, str]) -> Path:
    """A tree holding ``files`` (plus a kernel), every folder a package with a docstring."""
    for name, text in {"shared/kernel/errors.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        for package in path.relative_to(root).parents[:-1]:
            init = root / package / "__init__.py"
            if not init.exists():
                init.write_text('"""A package."""\n')
    return root


def test_a_tree_that_keeps_every_rule_has_no_violations(tmp_path: Path) -> None:
    root = build(
        tmp_path,
        {
            "shared/http/outbound.py": "from shared.kernel.errors import ConnectorError\n",
            "shared/ehr/smart.py": "from shared.http import outbound\nfrom shared.visits.model import Visit\n",
            "shared/microsoft/calls.py": "from shared.visits import events\nfrom ..writeback.model import Port\n",
            "shared/visits/model.py": "import json\n\nfrom ..kernel import errors\n",
            "shared/visits/events.py": "",
            "shared/writeback/model.py": "",
            "shared/visits/repository.py": "from shared.ehr.smart import SmartClient\n",
            "connector/web.py": "import azure.functions as func\n\nfrom shared.visits import repository\n",
            "function_app.py": "import azure.functions as func\n\nfrom connector import web\n",
            "sandbox/host/index.py": "from azure import functions\n",
            "tests/test_anything.py": "import azure.functions\n\nimport sandbox\n",
        },
    )
    assert import_violations(root) == []
    assert layout_violations(root) == []


@pytest.mark.parametrize(
    ("name", "text", "line", "module", "rule"),
    [
        pytest.param(
            "shared/kernel/settings.py",
            "import os\n\n\ndef load() -> None:\n    from shared.storage import accounts\n",
            5,
            "shared.storage.accounts",
            KERNEL,
            id="kernel-imports-an-adapter-inside-a-function",
        ),
        pytest.param(
            "shared/kernel/clock.py", "from .. import visits\n", 1, "shared.visits", KERNEL, id="kernel-relative"
        ),
        pytest.param(
            "shared/visits/model.py",
            "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from connector.web import api\n",
            4,
            "connector.web",
            SHARED,
            id="shared-imports-connector-under-type-checking",
        ),
        pytest.param(
            "shared/portal/service.py", "import tools.requeue\n", 1, "tools.requeue", SHARED, id="shared-tools"
        ),
        pytest.param(
            "shared/launch/service.py",
            "from benchmarks import launch\n",
            1,
            "benchmarks.launch",
            SHARED,
            id="shared-imports-benchmarks",
        ),
        pytest.param(
            "shared/microsoft/teams.py",
            "from shared.visits.repository import VisitRepository\n",
            1,
            "shared.visits.repository",
            ADAPTER,
            id="adapter-imports-a-domain-service",
        ),
        pytest.param(
            "shared/ehr/epic_writeback.py",
            "from shared import writeback\n",
            1,
            "shared.writeback",
            ADAPTER,
            id="adapter-imports-a-domain-package-from-shared",
        ),
        pytest.param(
            "shared/storage/state.py",
            "from ..writeback import worker\n",
            1,
            "shared.writeback.worker",
            ADAPTER,
            id="adapter-imports-a-domain-service-relatively",
        ),
        pytest.param(
            "connector/launch.py",
            "from sandbox.seed import CLINIC\n",
            1,
            "sandbox.seed",
            PRODUCT_CODE,
            id="connector-imports-sandbox",
        ),
        pytest.param("function_app.py", "import tests.support\n", 1, "tests.support", PRODUCT_CODE, id="app-tests"),
        pytest.param(
            "shared/configurations/repository.py",
            "from azure import functions\n",
            1,
            "azure.functions",
            AZURE_FUNCTIONS,
            id="shared-imports-azure-functions",
        ),
        pytest.param(
            "sandbox/ehr/app.py",
            "from azure.functions import HttpRequest\n",
            1,
            "azure.functions.HttpRequest",
            AZURE_FUNCTIONS,
            id="a-stand-in-imports-azure-functions",
        ),
    ],
)
def test_each_forbidden_import_is_reported(
    tmp_path: Path, name: str, text: str, line: int, module: str, rule: str
) -> None:
    root = build(
        tmp_path,
        {
            "shared/storage/accounts.py": "",
            "shared/visits/repository.py": "",
            "shared/writeback/worker.py": "",
            "connector/web.py": "",
            "sandbox/seed.py": "",
            "tests/support/__init__.py": "",
            "tools/requeue.py": "",
            "benchmarks/launch.py": "",
            name: text,
        },
    )
    assert f"{name}:{line} imports {module}: {rule}" in import_violations(root)


def test_an_import_breaking_three_rules_is_reported_under_each(tmp_path: Path) -> None:
    root = build(tmp_path, {"shared/kernel/memo.py": "import sandbox.seed\n", "sandbox/seed.py": ""})
    assert import_violations(root) == [
        f"shared/kernel/memo.py:1 imports sandbox.seed: {rule}" for rule in (KERNEL, SHARED, PRODUCT_CODE)
    ]


def test_a_context_without_a_docstring_is_reported(tmp_path: Path) -> None:
    root = build(tmp_path, {"shared/visits/model.py": "", "shared/launch/service.py": ""})
    (root / "shared" / "visits" / "__init__.py").write_text("# a comment is not a docstring\n")
    (root / "shared" / "launch" / "__init__.py").unlink()
    assert layout_violations(root) == [
        "shared/launch/__init__.py: every context has a docstring",
        "shared/visits/__init__.py: every context has a docstring",
    ]


def test_a_flat_shared_is_reported(tmp_path: Path) -> None:
    root = build(tmp_path, {f"shared/{name}.py": "" for name in ("events", "teams", "urls", "launch")})
    assert layout_violations(root) == [
        "shared/ has 4 top-level modules (events.py, launch.py, teams.py, urls.py): at most 3",
    ]
