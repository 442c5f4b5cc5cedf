"""Every Bicep file parses (checkov silently skips files it cannot parse, so this is separate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.bicep import BICEP_FILES, INFRA, parse


def test_the_templates_are_all_found() -> None:
    names = {str(p.relative_to(INFRA)) for p in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/storage.bicep", "app/keyvault.bicep", "app/monitoring.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree["resources"] or tree["globals"], f"{path.name} declares nothing"


def test_a_syntax_error_is_reported() -> None:
    # Guards the guard: a truncated template must fail to parse, not parse as empty.
    from lark.exceptions import UnexpectedInput
    from pycep import BicepParser

    truncated = (INFRA / "app" / "identity.bicep").read_text().rsplit("}", 2)[0]
    with pytest.raises(UnexpectedInput):
        BicepParser().parse(text=truncated)


def test_modules_are_local_files() -> None:
    # Registry modules (br:/ts:) need a network restore and are invisible to checkov.
    for path in BICEP_FILES:
        for name, module in parse(path).get("modules", {}).items():
            assert module["type"] == "local", f"{path.name}: module {name} is not a local file"
            assert (path.parent / module["detail"]["path"]).is_file(), f"{path.name}: module {name} not found"
