"""azd wiring: azure.yaml, main.parameters.json and the post-provision hook."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shared.kernel.sealing import parse_keys
from tests.infra.bicep import INFRA, MAIN, ROOT, parse

HOOK = INFRA / "hooks" / "postprovision.sh"
BASE = "https://func-abc123.azurewebsites.net"
# The app's routes a hospital registers (portal, Entra and EHR redirect URIs, JWKS, Graph).
REGISTERED_URLS = [
    f"{BASE}/api/portal",
    f"{BASE}/api/portal/signin/callback",
    f"{BASE}/api/launch/signin/callback",
    f"{BASE}/api/launch/callback",
    f"{BASE}/api/portal/ehr/callback",
    f"{BASE}/api/.well-known/jwks.json",
    f"{BASE}/api/graph/notifications",
]

PKCS8_HEADER = "-----BEGIN " + "PRIVATE KEY-----"  # split so scanners do not take the test for a key


def test_azure_yaml_deploys_the_function_app_and_runs_the_hook() -> None:
    azure_yaml = (ROOT / "azure.yaml").read_text()
    assert re.search(r"services:\n  api:\n    project: \.\n    language: python\n    host: function\n", azure_yaml)
    assert "path: infra" in azure_yaml and "module: main" in azure_yaml
    assert "run: ./infra/hooks/postprovision.sh" in azure_yaml
    assert HOOK.stat().st_mode & stat.S_IXUSR
    # azd finds the deployed app by this tag.
    assert "'azd-service-name': 'api'" in (INFRA / "app" / "api.bicep").read_text()


def test_parameters_file_matches_main_bicep() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parse(MAIN)["parameters"]
    assert set(params) <= set(declared), f"unknown parameters: {sorted(set(params) - set(declared))}"
    required = {name for name, p in declared.items() if "default" not in p}
    assert required <= set(params), f"azd cannot fill {sorted(required - set(params))}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_outputs_the_hook_reads_exist() -> None:
    outputs = parse(MAIN)["outputs"]
    for name in re.findall(r"\$\{?(PUBLIC_BASE_URL|AZURE_KEY_VAULT_NAME)", HOOK.read_text()):
        assert name in outputs


# --- running the hook against a stand-in `az` that keeps secrets in a directory ------------------

FAKE_AZ = """#!/bin/sh
# Records each call; 'keyvault secret list' lists $VAULT_DIR, 'keyvault secret set' copies --file there.
echo "$*" >> "$VAULT_DIR/../az.log"
case "$1 $2 $3" in
  "keyvault secret list") ls "$VAULT_DIR" ;;
  "keyvault secret set")
    name=""; file=""
    while [ $# -gt 0 ]; do
      case $1 in --name) name=$2; shift ;; --file) file=$2; shift ;; esac
      shift
    done
    cp "$file" "$VAULT_DIR/$name" ;;
  *) echo "unexpected az call: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    directory = tmp_path / "vault"
    directory.mkdir()
    return directory


def run_hook(vault: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{vault.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VAULT_DIR": str(vault),
        "PUBLIC_BASE_URL": BASE + "/",
        "AZURE_KEY_VAULT_NAME": "kv-abc123",
        "SEED_RETRY_SECONDS": "0",
        **extra,
    }
    hook = [shutil.which("sh") or "/bin/sh", str(HOOK)]
    return subprocess.run(hook, env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the hook generates keys with openssl")
def test_hook_prints_the_urls_and_seeds_missing_secrets(vault: Path) -> None:
    result = run_hook(vault)
    assert result.returncode == 0, result.stderr
    printed = re.findall(r"https://\S+", result.stdout)
    assert all(url in printed for url in REGISTERED_URLS), result.stdout
    assert "//api" not in result.stdout
    secrets = {p.name: p.read_text() for p in vault.iterdir()}
    assert set(secrets) == {
        "connector-secret",
        "sealing-keys",
        "graph-client-state",
        "signing-keys",
        "graph-encryption-certificate",
    }
    assert parse_keys(secrets["sealing-keys"]) and "," not in secrets["sealing-keys"]
    assert re.fullmatch(r"[0-9a-f]{64}", secrets["connector-secret"])
    assert re.fullmatch(r"[0-9a-f]{64}", secrets["graph-client-state"])
    assert secrets["connector-secret"] != secrets["graph-client-state"]
    _assert_rsa_private_key(secrets["signing-keys"])
    _assert_certificate_and_key(secrets["graph-encryption-certificate"])
    assert "entra-client-secret: missing" in result.stdout
    assert not any(value in result.stdout + result.stderr for value in secrets.values())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the hook generates keys with openssl")
def test_hook_never_replaces_an_existing_secret(vault: Path) -> None:
    (vault / "connector-secret").write_text("kept-as-is")
    (vault / "entra-client-secret").write_text("from-the-app-registration")
    result = run_hook(vault)
    assert result.returncode == 0, result.stderr
    assert (vault / "connector-secret").read_text() == "kept-as-is"
    assert "connector-secret: present, kept" in result.stdout
    assert "entra-client-secret: present, kept" in result.stdout
    log = (vault.parent / "az.log").read_text()
    assert "--name connector-secret" not in log and "--name entra-client-secret" not in log


def test_hook_fails_clearly_when_the_vault_cannot_be_read(vault: Path) -> None:
    result = run_hook(vault, VAULT_DIR=str(vault / "missing"), SEED_RETRIES="2")
    assert result.returncode == 1
    assert "Cannot list the secrets of Key Vault kv-abc123" in result.stderr
    assert f"{BASE}/api/portal" in result.stdout  # the URLs are printed first all the same


def test_hook_needs_the_deployment_outputs(vault: Path) -> None:
    result = run_hook(vault, PUBLIC_BASE_URL="")
    assert result.returncode != 0
    assert "PUBLIC_BASE_URL is not set" in result.stderr


def _assert_rsa_private_key(pem: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
    assert pem.startswith(PKCS8_HEADER)  # PKCS#8, as sandbox.local_settings writes


def _assert_certificate_and_key(pem: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    certificate = x509.load_pem_x509_certificate(pem.encode())
    key = load_pem_private_key(pem[pem.index(PKCS8_HEADER) :].encode(), password=None)
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
