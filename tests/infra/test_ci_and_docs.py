"""CI wiring, the release workflow, the checkov configuration and the setup guide stay consistent."""

from __future__ import annotations

import re
from urllib.parse import unquote

from tests.infra.bicep import ROOT
from tests.infra.test_azd import REGISTERED_URLS

WORKFLOWS = ROOT / ".github" / "workflows"
SETUP = ROOT / "docs" / "setup.md"


def test_checkov_runs_offline_in_its_own_venv_before_pytest() -> None:
    assert (ROOT / "requirements-checkov.txt").read_text().count("checkov==3.3.30") == 1
    assert ".venv-checkov/" in (ROOT / ".gitignore").read_text().splitlines()
    script = (ROOT / "scripts" / "check-infra").read_text()
    assert ".venv-checkov" in script and "--config-file .checkov.yaml" in script
    assert "Parsing errors" in script  # checkov exits 0 on unparsable files
    steps = (ROOT / "scripts" / "test").read_text().splitlines()
    pytest_step = next(i for i, step in enumerate(steps) if step.startswith(".venv/bin/python -m pytest"))
    assert steps.index("scripts/check-infra") < pytest_step


def test_every_checkov_skip_is_documented() -> None:
    config = (ROOT / ".checkov.yaml").read_text()
    assert "skip-download: true" in config and "- bicep" in config
    skips = re.findall(r"^  - (CKV\w+)(.*)$", config, flags=re.MULTILINE)
    assert skips, "no skip list found"
    ids = [check for check, _ in skips]
    assert len(ids) == len(set(ids)), "a check is skipped twice"
    for check, comment in skips:
        assert re.match(r"\s+# \S", comment), f"{check} is skipped without a reason"


def test_ci_workflow_runs_the_same_tests_as_ci_run_plus_the_bicep_cli() -> None:
    ci = (WORKFLOWS / "ci.yml").read_text()
    assert "run: bash .ci/run" in ci
    assert "container: python:3.11-bookworm" in ci and 'node-version: "20"' in ci
    assert "az bicep build --file infra/main.bicep" in ci
    assert "az bicep lint" in ci and "what-if" in ci


def test_release_workflow_compiles_the_template_and_builds_the_zip() -> None:
    release = (WORKFLOWS / "release.yml").read_text()
    assert "az bicep build --file infra/main.bicep --outfile dist/azuredeploy.json" in release
    assert "scripts/package dist/teams-ehr-connector.zip" in release
    assert "gh release upload" in release and "dist/azuredeploy.json dist/teams-ehr-connector.zip" in release
    assert ".parameters.packageUri.defaultValue" in release  # the portal deploys this release's package


def test_readme_button_points_at_the_released_template() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"\(https://portal\.azure\.com/#create/Microsoft\.Template/uri/([^)]+)\)", readme)
    assert match, "no Deploy to Azure button"
    template = unquote(match.group(1))
    assert re.fullmatch(r"https://github\.com/[^/]+/[^/]+/releases/latest/download/azuredeploy\.json", template)
    assert "(docs/setup.md)" in readme


def test_setup_guide_covers_every_step_in_order() -> None:
    guide = SETUP.read_text()
    steps = re.findall(r"^## (\d)\. (.+)$", guide, flags=re.MULTILINE)
    assert [n for n, _ in steps] == ["1", "2", "3", "4", "5", "6", "7"]
    for needle in (
        "OnlineMeetings.ReadWrite.All",
        "`openid`, `profile`, `offline_access`, `User.Read`",
        "Connector.Admin",
        "`wids`",
        "Grant admin consent",
        "New-CsApplicationAccessPolicy",
        "Grant-CsApplicationAccessPolicy",
        "JWK Set URL",
    ):
        assert needle in guide, needle
    for url in REGISTERED_URLS:
        assert url.replace("https://func-abc123.azurewebsites.net", "<base>") in guide


def test_troubleshooting_and_privacy_sections() -> None:
    guide = SETUP.read_text()
    troubleshooting = guide.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    for symptom in (
        "Tenant config not found",
        "FHIR URL isn't valid",
        "OAUTH2",
        "expired or already used",
        "Graph 403",
        "throttled",
        "pending approval",
        "not configured correctly yet",
    ):
        assert symptom in troubleshooting, symptom
    privacy = guide.split("## Privacy", 1)[1]
    for fact in ("HMAC", "configuration's geography", "10 minutes", "24 hours", "Configuration metadata"):
        assert fact in privacy, fact
