"""Local settings for the sandbox: the sample's values plus freshly generated secrets.

Private keys are never committed. This module generates them on the machine that runs
the sandbox or the tests: the key that seals stored EHR identifiers, the connector's signing
key (RS384 for private_key_jwt and SMART Backend Services) and the certificate Graph encrypts
change notifications with.

    python -m sandbox.local_settings          # writes local.settings.json from the sample
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox import azurite, certificates
from shared.kernel.sealing import new_key_text

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "local.settings.sample.json"
TARGET = ROOT / "local.settings.json"


def private_key_pem(bits: int = 2048) -> str:
    return certificates.private_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def self_signed_certificate_pem(common_name: str = "teams-ehr-connector-notifications") -> str:
    """A self-signed RSA certificate followed by its private key (Graph uses only the public key)."""
    key, certificate = certificates.self_signed(common_name, days=365)
    return certificates.certificate_pem(certificate) + certificates.private_key_pem(key)


def generated_secrets() -> dict[str, str]:
    return {
        "SIGNING_KEYS": private_key_pem(),
        "GRAPH_ENCRYPTION_CERTIFICATE": self_signed_certificate_pem(),
        "CONNECTOR_SECRET": secrets.token_urlsafe(48),
        "SEALING_KEYS": new_key_text(),
        "GRAPH_CLIENT_STATE": secrets.token_urlsafe(48),
    }


def sample_values() -> dict[str, str]:
    values: dict[str, str] = json.loads(SAMPLE.read_text())["Values"]
    return values


def storage_values(port_base: int) -> dict[str, str]:
    """Storage connection strings for an Azurite on ``port_base`` (one account per geography)."""
    return {
        "AzureWebJobsStorage": azurite.connection_string(azurite.DEV_ACCOUNT, port_base),
        **{f"STORAGE_{geo.upper()}": azurite.connection_string(geo, port_base) for geo in azurite.GEOGRAPHY_ACCOUNTS},
    }


def local_values(port_base: int = azurite.DEFAULT_PORT_BASE, **overrides: str) -> dict[str, str]:
    return {**sample_values(), **storage_values(port_base), **generated_secrets(), **overrides}


def write_local_settings(values: dict[str, str], target: Path = TARGET) -> Path:
    target.write_text(json.dumps({"IsEncrypted": False, "Values": values}, indent=2) + "\n")
    target.chmod(0o600)
    return target


def add_missing_values(target: Path, port_base: int = azurite.DEFAULT_PORT_BASE) -> list[str]:
    """Give an existing settings file the keys a newer release reads (e.g. SEALING_KEYS); keep every value it has.

    Returns the names of the keys added (never their values).
    """
    document = json.loads(target.read_text())
    values: dict[str, str] = document.setdefault("Values", {})
    missing = {key: value for key, value in local_values(port_base).items() if key not in values}
    if missing:
        values.update(missing)
        write_local_settings(values, target)
    return sorted(missing)


def main() -> int:
    if TARGET.exists():
        added = add_missing_values(TARGET)
        note = f"; added {', '.join(added)}" if added else ""
        print(f"{TARGET.name} exists; kept its values{note} (delete it to regenerate).")
        return 0
    write_local_settings(local_values())
    print(f"Wrote {TARGET.name} with freshly generated keys.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
