"""Read the Bicep templates the way checkov does (pycep-parser), for assertions in tests."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
API = INFRA / "app" / "api.bicep"
MAIN = INFRA / "main.bicep"

# Storage connections are identity-based: NAME__<suffix> settings count as NAME.
IDENTITY_SUFFIXES = ("__blobServiceUri", "__queueServiceUri", "__tableServiceUri", "__credential", "__clientId")


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def resources(path: Path) -> dict[str, dict[str, Any]]:
    return parse(path)["resources"]


def resource_of_type(path: Path, resource_type: str) -> dict[str, Any]:
    found = [r for r in resources(path).values() if r["type"] == resource_type]
    assert len(found) == 1, f"expected one {resource_type} in {path.name}, found {len(found)}"
    return found[0]


def _setting_objects(value: Any, variables: dict[str, Any]) -> list[dict[str, Any]]:
    """The literal objects a settings expression can evaluate to (union args, ternary branches, vars)."""
    if isinstance(value, str) and value in variables:
        return _setting_objects(variables[value]["value"], variables)
    if isinstance(value, dict) and "function" in value and value["function"]["type"] == "union":
        return [obj for arg in value["function"]["parameters"].values() for obj in _setting_objects(arg, variables)]
    if isinstance(value, dict) and "operator" in value and value["operator"]["type"] == "conditional":
        branches = value["operator"]["operands"]
        return [obj for side in ("true_value", "false_value") for obj in _setting_objects(branches[side], variables)]
    if isinstance(value, dict) and not ({"function", "operator"} & value.keys()):
        return [value]
    raise AssertionError(f"app settings expression not understood: {value!r}")


def app_settings() -> dict[str, Any]:
    """Every app setting api.bicep can set (all geographies), name → parsed value expression."""
    tree = parse(API)
    config = resource_of_type(API, "Microsoft.Web/sites/config")["config"]
    assert config["name"] == "appsettings"
    settings: dict[str, Any] = {}
    for obj in _setting_objects(config["properties"], tree["variables"]):
        duplicate = settings.keys() & obj.keys()
        assert not duplicate, f"app settings set twice: {sorted(duplicate)}"
        settings.update(obj)
    return settings


def base_name(key: str) -> str:
    for suffix in IDENTITY_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def interpolations(value: str) -> list[str]:
    return re.findall(r"\$\{([^}]*)\}", value)
