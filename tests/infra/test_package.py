"""The deployment zip holds exactly the runtime; .funcignore keeps azd's package the same."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess

import pytest

from tests.infra.bicep import ROOT


def runtime_paths() -> list[str]:
    script = (ROOT / "scripts" / "package").read_text()
    match = re.search(r"^RUNTIME_PATHS=\(([^)]*)\)$", script, flags=re.MULTILINE)
    assert match, "scripts/package must declare RUNTIME_PATHS"
    return match.group(1).split()


def funcignore() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in funcignore())


def tracked_top_level() -> set[str]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    listed = subprocess.run([git, "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)  # noqa: S603
    return {line.split("/")[0] for line in listed.stdout.splitlines()}


def test_runtime_files_exist_and_are_deployed() -> None:
    for path in runtime_paths():
        assert (ROOT / path).exists(), path
        assert not ignored(path), f".funcignore would leave {path} out of azd's package"
    assert {"function_app.py", "host.json", "requirements.txt", "connector", "shared"} <= set(runtime_paths())


def test_everything_else_is_left_out_of_the_package() -> None:
    for name in sorted(tracked_top_level() - set(runtime_paths()) - {".funcignore"}):
        assert ignored(name), f"{name} is neither a runtime path (scripts/package) nor in .funcignore"
