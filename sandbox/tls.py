"""A local certificate authority so sandbox stand-ins can speak real HTTPS on 127.0.0.1.

msal refuses plain-http authorities, and the product code must not know it talks to the sandbox, so
the sandbox serves TLS with a server certificate from a private CA, and processes are told to trust
that CA through the standard variables only (``trust_env``):

- ``REQUESTS_CA_BUNDLE`` — requests, hence msal and azure-identity;
- ``SSL_CERT_FILE`` — httpx (``trust_env=True``, its default) and the standard ``ssl`` module.

Both point at one bundle file = certifi's bundle + our CA, so public hosts stay verifiable.

    python -m sandbox.tls [DIRECTORY]      # create or reuse, print the variables to export

trustme makes the CA and the server certificate; this module keeps them on disk for every process to share.
Files (``.sandbox/tls/`` by default, never committed): ``ca.pem``, ``ca-key.pem``, ``server.pem``,
``server-key.pem``, ``ca-bundle.pem``. Existing files are reused while they are valid (parse, chain,
key pair, names, more than a week left); otherwise everything is regenerated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIRECTORY = ROOT / ".sandbox" / "tls"
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
SERVER_LIFETIME = dt.timedelta(days=397)  # the CA/Browser Forum maximum, so browsers accept it too
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the sandbox TLS material; ``server_cert``/``server_key`` go to uvicorn."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    bundle: Path

    @classmethod
    def in_directory(cls, directory: Path) -> TlsFiles:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.pem",
            ca_key=directory / "ca-key.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server-key.pem",
            bundle=directory / "ca-bundle.pem",
        )


def ensure_tls(directory: Path | str | None = None) -> TlsFiles:
    """Create (or reuse, when still valid) the CA, the server certificate and the CA bundle."""
    files = TlsFiles.in_directory(Path(directory) if directory is not None else DEFAULT_DIRECTORY)
    files.directory.mkdir(parents=True, exist_ok=True)
    with _locked(files.directory / ".lock"):
        if not _is_valid(files):
            _generate(files)
        expected_bundle = _bundle_text(files.ca_cert.read_text())
        if not files.bundle.exists() or files.bundle.read_text() != expected_bundle:
            _write(files.bundle, expected_bundle)
    return files


def trust_env(files: TlsFiles) -> dict[str, str]:
    """The environment variables that make requests/msal/azure-identity and httpx/ssl trust the sandbox CA."""
    bundle = str(files.bundle)
    return {"REQUESTS_CA_BUNDLE": bundle, "SSL_CERT_FILE": bundle}


def _bundle_text(ca_pem: str) -> str:
    public = Path(certifi.where()).read_text()
    return public.rstrip("\n") + "\n\n# Teams EHR connector sandbox CA (local only)\n" + ca_pem


def _is_valid(files: TlsFiles) -> bool:
    paths = (files.ca_cert, files.ca_key, files.server_cert, files.server_key)
    if not all(path.exists() for path in paths):
        return False
    try:
        ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        server_key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
        server.verify_directly_issued_by(ca)
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    keys_match = _same_key(ca_key, ca.public_key()) and _same_key(server_key, server.public_key())
    renew_at = dt.datetime.now(dt.UTC) + RENEW_BEFORE
    has_names = set(DNS_NAMES) <= set(names.get_values_for_type(x509.DNSName)) and {
        ipaddress.ip_address(ip) for ip in IP_ADDRESSES
    } <= set(names.get_values_for_type(x509.IPAddress))
    return keys_match and has_names and ca.not_valid_after_utc > renew_at and server.not_valid_after_utc > renew_at


def _same_key(private: PrivateKeyTypes, public: PublicKeyTypes) -> bool:
    def der(key: PublicKeyTypes) -> bytes:
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    return der(private.public_key()) == der(public)


def _generate(files: TlsFiles) -> None:
    organization = "Teams EHR connector sandbox"
    ca = trustme.CA(organization_name=organization, organization_unit_name=f"{organization} local CA")
    now = dt.datetime.now(dt.UTC)
    server = ca.issue_cert(
        *DNS_NAMES,
        *IP_ADDRESSES,
        common_name="localhost",
        organization_name=organization,
        not_before=now - dt.timedelta(minutes=5),  # tolerate small clock differences
        not_after=now + SERVER_LIFETIME,
    )
    _write(files.ca_key, ca.private_key_pem.bytes().decode(), private=True)
    _write(files.server_key, server.private_key_pem.bytes().decode(), private=True)
    _write(files.ca_cert, ca.cert_pem.bytes().decode())
    _write(files.server_cert, server.cert_chain_pems[0].bytes().decode())


def _write(path: Path, text: str, *, private: bool = False) -> None:
    """Atomic replace, so a concurrent reader never sees half a file; keys are readable by the owner only."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise generation between processes (pytest-xdist workers, the demo) sharing one directory."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv: list[str]) -> int:
    files = ensure_tls(argv[0] if argv else None)
    for key, value in trust_env(files).items():
        print(f"export {key}={value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
