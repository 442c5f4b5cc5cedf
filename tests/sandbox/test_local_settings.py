"""Local settings: generated once, and completed (never overwritten) when a newer release reads new keys."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox.local_settings import add_missing_values, local_values, write_local_settings
from shared.kernel.settings import Settings


def test_an_older_settings_file_gets_the_new_keys_and_keeps_its_own(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    older = local_values()
    kept_secret = older["CONNECTOR_SECRET"]
    del older["SEALING_KEYS"]  # written by a release before sealing
    write_local_settings(older, target)

    added = add_missing_values(target)

    values = json.loads(target.read_text())["Values"]
    assert added == ["SEALING_KEYS"]
    assert values["CONNECTOR_SECRET"] == kept_secret
    Settings.from_env(values)  # complete again: no ConfigurationError
    assert oct(target.stat().st_mode & 0o777) == "0o600"


def test_a_complete_file_is_left_as_it_is(tmp_path: Path) -> None:
    target = tmp_path / "local.settings.json"
    write_local_settings(local_values(), target)
    before = target.read_text()
    assert add_missing_values(target) == []
    assert target.read_text() == before
