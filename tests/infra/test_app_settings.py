"""The function app's settings in Bicep: parity with the settings object, Key Vault for secrets."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from shared.kernel.settings import (
    APP_STORAGE_SETTING,
    HOST_KEYS,
    SETTING_KEYS,
    STORAGE_SETTING_BY_GEOGRAPHY,
    Secret,
    Settings,
)
from tests.infra.bicep import API, ROOT, app_settings, base_name, interpolations, parse

# Every required secret of the settings object (fields typed ``Secret``); in Azure each is a Key Vault
# reference, never a value. A new secret setting is picked up here automatically.
SECRET_KEYS = {f.name.upper() for f in dataclasses.fields(Settings) if f.type in ("Secret", Secret)}
STORAGE_KEYS = {APP_STORAGE_SETTING, *STORAGE_SETTING_BY_GEOGRAPHY.values()}
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{keyVaultUri\}secrets/([a-z0-9-]+)/\)$")
# Literal values an app setting may carry; anything else must be a parameter or an expression.
ALLOWED_LITERALS = {"managedidentity", "true", ""}


def sample_keys() -> set[str]:
    values = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    return set(values)


def bicep_keys() -> set[str]:
    return set(app_settings())


def test_settings_object_sample_and_bicep_name_the_same_keys() -> None:
    ours = set(SETTING_KEYS)
    sample = {base_name(k) for k in sample_keys()} - HOST_KEYS
    bicep = {base_name(k) for k in bicep_keys()} - HOST_KEYS
    assert sample == ours, f"sample: missing {sorted(ours - sample)}, extra {sorted(sample - ours)}"
    assert bicep == ours, f"bicep: missing {sorted(ours - bicep)}, extra {sorted(bicep - ours)}"


def test_bicep_sets_only_known_host_keys_besides_ours() -> None:
    extra = {k for k in bicep_keys() if base_name(k) not in SETTING_KEYS}
    assert extra <= HOST_KEYS
    # Flex Consumption takes the runtime from functionAppConfig, never from these settings.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"} & bicep_keys()


def test_every_storage_connection_is_identity_based() -> None:
    keys = bicep_keys()
    for name in STORAGE_KEYS:
        assert name not in keys, f"{name} would be a connection string"
        for suffix in ("__tableServiceUri", "__queueServiceUri", "__credential", "__clientId"):
            assert f"{name}{suffix}" in keys
        assert app_settings()[f"{name}__credential"] == "managedidentity"
        assert app_settings()[f"{name}__clientId"] == "identityClientId"
    assert "AzureWebJobsStorage__blobServiceUri" in keys
    assert not any("AccountKey" in str(v) or "ConnectionString=" in str(v) for v in app_settings().values())


def test_unselected_geographies_get_no_setting() -> None:
    variables = parse(API)["variables"]
    for geography, name in STORAGE_SETTING_BY_GEOGRAPHY.items():
        expression = variables[f"{geography.value}Settings"]["value"]["operator"]
        assert expression["type"] == "conditional"
        operands = expression["operands"]
        empty_endpoint = {"type": "empty", "parameters": {"item_to_test": f"{geography.value}TableEndpoint"}}
        assert operands["condition"] == {"function": empty_endpoint}
        assert operands["true_value"] == {}
        assert {base_name(k) for k in operands["false_value"]} == {name}


def test_the_secrets_are_the_ones_the_issue_names() -> None:
    expected = {"ENTRA_CLIENT_SECRET", "GRAPH_CLIENT_STATE", "GRAPH_ENCRYPTION_CERTIFICATE", "SIGNING_KEYS"}
    assert expected | {"CONNECTOR_SECRET"} <= SECRET_KEYS <= set(SETTING_KEYS)


def test_every_secret_is_a_key_vault_reference() -> None:
    settings = app_settings()
    secret_names = {}
    for key in SECRET_KEYS:
        match = KEY_VAULT_REFERENCE.match(str(settings[key]))
        assert match, f"{key} must be a Key Vault reference, got {settings[key]!r}"
        secret_names[key] = match.group(1)
    assert len(set(secret_names.values())) == len(SECRET_KEYS), "two settings share a secret"
    # The app resolves references with its user-assigned identity.
    site = parse(API)["resources"]["site"]["config"]["properties"]
    assert site["keyVaultReferenceIdentity"] == "identityId"


def test_no_setting_carries_a_literal_secret() -> None:
    tree = parse(API)
    names = set(tree["parameters"]) | set(tree["variables"])
    for key, value in app_settings().items():
        if key in SECRET_KEYS:
            continue
        assert _is_safe(value, names), f"{key} has a literal value {value!r}"


def test_the_secret_names_the_hook_seeds_match_the_references() -> None:
    hook = (ROOT / "infra" / "hooks" / "postprovision.sh").read_text()
    referenced = {KEY_VAULT_REFERENCE.match(str(app_settings()[k])).group(1) for k in SECRET_KEYS}  # type: ignore[union-attr]
    seeded = set(re.search(r"^for name in ([a-z -]+); do$", hook, flags=re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    assert seeded == referenced - {"entra-client-secret"}
    assert "entra-client-secret" in hook


def _is_safe(value: Any, names: set[str]) -> bool:
    if isinstance(value, dict):  # an expression: function call, operator, property access
        return True
    text = str(value)
    if text in names or text in ALLOWED_LITERALS:
        return True
    if text.startswith("https://${") or text.startswith("Authorization=AAD;ClientId=${"):
        return all(part.split(".")[0] in names for part in interpolations(text))
    return False
