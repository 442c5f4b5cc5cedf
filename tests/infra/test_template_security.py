"""Security and platform properties of the templates that must never regress."""

from __future__ import annotations

import re

from tests.infra.bicep import API, INFRA, MAIN, parse, resource_of_type, text

STORAGE = INFRA / "app" / "storage.bicep"
KEY_VAULT = INFRA / "app" / "keyvault.bicep"
MONITORING = INFRA / "app" / "monitoring.bicep"

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}


def test_storage_accounts_allow_identity_access_only() -> None:
    props = resource_of_type(STORAGE, "Microsoft.Storage/storageAccounts")["config"]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert "allowSharedKeyAccess: false" in text(STORAGE)
    assert "minimumTlsVersion: 'TLS1_2'" in text(STORAGE)
    # No template lists keys or builds a connection string.
    for path in INFRA.rglob("*.bicep"):
        assert "listKeys" not in text(path) and "AccountKey=" not in text(path)


def test_function_app_is_https_only_tls12_without_ftp_or_basic_auth() -> None:
    site = resource_of_type(API, "Microsoft.Web/sites")["config"]
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    assert props["siteConfig"]["remoteDebuggingEnabled"] is False
    assert "httpsOnly: true" in text(API) and "ftpsState: 'Disabled'" in text(API)
    disabled = r"'basicPublishingCredentialsPolicies' = \{\s*name: '(\w+)'\s*properties: \{\s*allow: false"
    policies = re.findall(disabled, text(API))
    assert sorted(policies) == ["ftp", "scm"]


def test_function_app_runs_python_311_on_flex_consumption_as_user_assigned_identity() -> None:
    plan = resource_of_type(API, "Microsoft.Web/serverfarms")["config"]
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = resource_of_type(API, "Microsoft.Web/sites")["config"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"


def test_data_roles_are_granted_to_the_app_identity() -> None:
    every_template = "".join(text(p) for p in INFRA.rglob("*.bicep"))
    for role, guid in ROLE_IDS.items():
        assert guid in every_template, f"{role} ({guid}) is not granted"
    storage = text(STORAGE)
    for role in ("Storage Blob Data Owner", "Storage Queue Data Contributor", "Storage Table Data Contributor"):
        assert ROLE_IDS[role] in storage
    assert ROLE_IDS["Key Vault Secrets User"] in text(KEY_VAULT)
    assert ROLE_IDS["Monitoring Metrics Publisher"] in text(MONITORING)
    # Assignment names are deterministic, so redeployments update instead of duplicating.
    for path in (STORAGE, KEY_VAULT, MONITORING):
        assert re.findall(r"name: guid\(", text(path))


def test_key_vault_uses_rbac_with_purge_protection() -> None:
    props = resource_of_type(KEY_VAULT, "Microsoft.KeyVault/vaults")["config"]["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enablePurgeProtection"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props


def test_monitoring_has_local_authentication_off() -> None:
    insights = resource_of_type(MONITORING, "Microsoft.Insights/components")["config"]["properties"]
    assert insights["DisableLocalAuth"] is True
    workspace = resource_of_type(MONITORING, "Microsoft.OperationalInsights/workspaces")["config"]["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


def test_main_is_subscription_scoped_with_one_storage_module_per_geography() -> None:
    tree = parse(MAIN)
    assert "targetScope = 'subscription'" in text(MAIN)
    modules = tree["modules"]
    for geography in ("americas", "emea", "apac"):
        module = modules[f"{geography}Storage"]
        assert module["detail"]["path"] == "app/storage.bicep"
        assert module["config"]["condition"] == f"deploy{geography.capitalize()}"
        assert module["config"]["config"]["params"]["location"] == f"{geography}Location"
    # The app's own storage is always deployed; only it gets blobs (host, deployment package).
    app = modules["appStorage"]["config"]
    assert "condition" not in app
    assert app["params"]["grantBlobDataOwner"] is True
    # Each geography's storage can only be placed in a region of that geography.
    americas, emea, apac = (_allowed(tree["parameters"][f"{g}Location"]) for g in ("americas", "emea", "apac"))
    assert "eastus2" in americas and "brazilsouth" in americas and "westeurope" not in americas
    assert "westeurope" in emea and "uksouth" in emea and "eastus" not in emea
    assert "southeastasia" in apac and "australiaeast" in apac and "westeurope" not in apac
    assert not (set(americas) & set(emea) or set(americas) & set(apac) or set(emea) & set(apac))


def test_no_secure_parameter_has_a_default_and_no_output_is_secret() -> None:
    for path in INFRA.rglob("*.bicep"):
        for name, param in parse(path)["parameters"].items():
            if any(d["type"] == "secure" for d in param["decorators"]):
                assert "default" not in param, f"{path.name}: secure parameter {name} has a default"
        for name in parse(path)["outputs"]:
            assert not re.search(r"secret|password|key$", name, flags=re.IGNORECASE) or name.endswith("KEY_VAULT_NAME")


def _allowed(param: dict[str, object]) -> list[str]:
    for decorator in param["decorators"]:  # type: ignore[attr-defined]
        if decorator["type"] == "allowed":
            return list(decorator["argument"])
    raise AssertionError("no @allowed list")
