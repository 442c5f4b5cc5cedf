"""A machine without Chromium: scripts/test installs it (root with apt-get) or stops at once with one line.

``scripts/chromium`` runs first in ``scripts/test``; pytest itself stops before any browser test when it is
missing (``tests/conftest.py``), with or without xdist, so nobody meets a hundred failing browser tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep import ROOT
from tests.support.browser import is_browser_test_file

INSTALL_HINT = "install it with 'sudo apt-get install chromium'"


def fake_bin(folder: Path, *, uid: int, apt_get: str | None) -> Path:
    """A PATH holding only ``id`` (answering ``uid``) and, if given, an ``apt-get`` running ``apt_get``."""
    folder.mkdir()
    (folder / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    if apt_get is not None:
        (folder / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> "{folder}/apt-get.log"\n{apt_get}\n')
    for tool in folder.iterdir():
        tool.chmod(0o755)
    return folder


def run_chromium_script(path: Path, chromium: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(path), "CHROMIUM_PATH": str(chromium)}
    return subprocess.run(  # noqa: S603 - our own script with fixed arguments
        ["/bin/bash", str(ROOT / "scripts" / "chromium")], env=env, capture_output=True, text=True, timeout=30
    )


def test_scripts_test_checks_chromium_before_anything_else() -> None:
    steps = [line for line in (ROOT / "scripts" / "test").read_text().splitlines() if line and line[0] not in "#"]
    assert steps[:4] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', steps[2], "scripts/bootstrap"]
    assert steps[2].startswith("scripts/chromium")
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_present_chromium_is_left_alone(tmp_path: Path) -> None:
    path = fake_bin(tmp_path / "bin", uid=0, apt_get="exit 1")
    done = run_chromium_script(path, Path(sys.executable))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (path / "apt-get.log").exists()


def test_without_root_it_stops_with_one_line(tmp_path: Path) -> None:
    path = fake_bin(tmp_path / "bin", uid=1000, apt_get="exit 0")
    done = run_chromium_script(path, tmp_path / "chromium")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and INSTALL_HINT in done.stderr and str(tmp_path / "chromium") in done.stderr
    assert not (path / "apt-get.log").exists()


def test_without_apt_get_it_stops_with_one_line(tmp_path: Path) -> None:
    done = run_chromium_script(fake_bin(tmp_path / "bin", uid=0, apt_get=None), tmp_path / "chromium")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and INSTALL_HINT in done.stderr


def test_as_root_with_apt_get_it_installs_the_debian_package(tmp_path: Path) -> None:
    chromium = tmp_path / "chromium"
    install = f'[ "$1" = install ] && printf "#!/bin/sh\\n" > "{chromium}" && /bin/chmod +x "{chromium}"; exit 0'
    path = fake_bin(tmp_path / "bin", uid=0, apt_get=install)
    done = run_chromium_script(path, chromium)
    said = "Installing Debian's chromium for the browser tests\n"
    assert (done.returncode, done.stdout, done.stderr) == (0, said, "")
    assert (path / "apt-get.log").read_text().splitlines() == ["update -qq", "install -y -qq chromium"]
    assert os.access(chromium, os.X_OK)


def test_a_failed_install_ends_with_one_line_of_its_own(tmp_path: Path) -> None:
    path = fake_bin(tmp_path / "bin", uid=0, apt_get='echo "E: Unable to locate package chromium" >&2; exit 100')
    done = run_chromium_script(path, tmp_path / "chromium")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "E: Unable to locate package chromium",
        "Chromium: apt-get could not install the Debian package chromium (see above); the browser tests need it.",
    ]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_pytest_stops_before_any_browser_test_without_chromium(tmp_path: Path, workers: list[str]) -> None:
    env = {**os.environ, "CHROMIUM_PATH": str(tmp_path / "chromium")}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers]
    targets = ["tests/sandbox/test_graph_browser.py", "tests/unit/test_memo.py"]
    done = subprocess.run(  # noqa: S603 - the test's own interpreter and fixed arguments
        [*command, *targets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:]
    assert "no tests ran" in done.stdout
    assert f"the browser tests need Debian's chromium at {tmp_path / 'chromium'}" in done.stdout
    # Without browser tests selected, the same machine runs the rest.
    rest = subprocess.run(  # noqa: S603 - the test's own interpreter and fixed arguments
        [*command, "tests/unit/test_memo.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert rest.returncode == 0 and " passed" in rest.stdout, rest.stdout[-2000:]


def test_browser_test_files_are_recognised_by_node_id() -> None:
    assert is_browser_test_file("tests/browser/test_launch_browser.py::test_x")
    assert is_browser_test_file("tests/sandbox/test_ehr_browser.py::test_y[param]")
    assert not is_browser_test_file("tests/sandbox/test_entra_rejections.py::test_z")
    assert not is_browser_test_file("tests/unit/test_memo.py::test_browser_like_name_browser.py")
