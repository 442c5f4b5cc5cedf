"""Settings: one typed object, read lazily, one error naming every bad key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.kernel.errors import ConfigurationError
from shared.kernel.settings import HOST_KEYS, SETTING_KEYS, Geography, Secret, Settings

ROOT = Path(__file__).resolve().parents[2]


def sample_keys() -> set[str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    return {re.sub(r"__.*$", "", key) for key in values}


def test_sample_documents_exactly_the_settings_object_keys() -> None:
    assert sample_keys() - HOST_KEYS == set(SETTING_KEYS)


def test_valid_environment_parses(base_env: dict[str, str]) -> None:
    settings = Settings.from_env(base_env)
    assert settings.geographies == (Geography.AMERICAS, Geography.EMEA, Geography.APAC)
    assert settings.public_base_url == "http://localhost:7071"
    assert settings.writeback_queue_name == "writeback-events"
    assert "127.0.0.1" in settings.outbound_allowed_hosts
    assert settings.entra_client_secret.reveal() == base_env["ENTRA_CLIENT_SECRET"]


def test_empty_environment_names_every_required_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({})
    problems = caught.value.problems
    for key in (
        "AzureWebJobsStorage",
        "PUBLIC_BASE_URL",
        "ENTRA_AUTHORITY_HOST",
        "ENTRA_TENANT_ID",
        "ENTRA_CLIENT_ID",
        "ENTRA_CLIENT_SECRET",
        "GRAPH_BASE_URL",
        "GRAPH_CLIENT_STATE",
        "GRAPH_ENCRYPTION_CERTIFICATE",
        "SIGNING_KEYS",
        "CONNECTOR_SECRET",
        "SEALING_KEYS",
        "WRITEBACK_QUEUE_NAME",
        "STORAGE_AMERICAS|STORAGE_EMEA|STORAGE_APAC",
    ):
        assert key in problems, key
    assert "AzureWebJobsStorage" in caught.value.message


def test_invalid_values_are_reported_together(base_env: dict[str, str]) -> None:
    bad = {
        **base_env,
        "ENTRA_AUTHORITY_HOST": "http://login.example.com",  # msal needs https
        "PUBLIC_BASE_URL": "http://connector.example.com",  # http only on localhost
        "CONNECTOR_SECRET": "short",
        "SIGNING_KEYS": "not a pem",
        "SEALING_KEYS": "c2hvcnQ",  # base64 of 5 bytes, not 32
        "WRITEBACK_QUEUE_NAME": "Bad_Queue",
        "HTTP_TIMEOUT_SECONDS": "600",
    }
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(bad)
    assert set(caught.value.problems) == {
        "ENTRA_AUTHORITY_HOST",
        "PUBLIC_BASE_URL",
        "CONNECTOR_SECRET",
        "SIGNING_KEYS",
        "SEALING_KEYS",
        "WRITEBACK_QUEUE_NAME",
        "HTTP_TIMEOUT_SECONDS",
    }


def test_error_message_never_contains_secret_values(base_env: dict[str, str]) -> None:
    bad = {**base_env, "CONNECTOR_SECRET": "tiny", "ENTRA_CLIENT_ID": ""}
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(bad)
    assert "tiny" not in caught.value.message
    assert base_env["ENTRA_CLIENT_SECRET"] not in repr(Settings.from_env(base_env))


def test_identity_based_storage_needs_both_endpoints(base_env: dict[str, str]) -> None:
    env = {k: v for k, v in base_env.items() if k != "STORAGE_EMEA"}
    env["STORAGE_EMEA__tableServiceUri"] = "https://emea.table.core.windows.net"
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert "STORAGE_EMEA" in caught.value.problems
    env["STORAGE_EMEA__queueServiceUri"] = "https://emea.queue.core.windows.net"
    env["STORAGE_EMEA__clientId"] = "abc"
    conn = Settings.from_env(env).geography_storage[Geography.EMEA]
    assert conn.uses_identity and conn.client_id == "abc"


def test_unconfigured_geography_is_absent(base_env: dict[str, str]) -> None:
    env = {k: v for k, v in base_env.items() if k != "STORAGE_APAC"}
    assert Settings.from_env(env).geographies == (Geography.AMERICAS, Geography.EMEA)


def test_unknown_geography_is_rejected() -> None:
    assert Geography.parse(" EMEA ") is Geography.EMEA
    with pytest.raises(ValueError, match="unknown geography"):
        Geography.parse("antarctica")


def test_secret_hides_its_value() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert secret.reveal() == "hunter2"
