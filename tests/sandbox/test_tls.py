"""The sandbox CA: generated once, reused while valid, trusted only through the standard variables."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import certifi
import httpx
import pytest
import requests
import trustme
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sandbox.server import ServerThread
from sandbox.tls import SERVER_LIFETIME, TlsFiles, ensure_tls, trust_env


def _hello_app() -> Starlette:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hello over tls")

    return Starlette(routes=[Route("/", hello)])


def test_server_certificate_names_loopback_and_chains_to_the_ca(tls_files: TlsFiles) -> None:
    server = x509.load_pem_x509_certificate(tls_files.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(tls_files.ca_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert oct(tls_files.server_key.stat().st_mode & 0o777) == "0o600"
    assert oct(tls_files.ca_key.stat().st_mode & 0o777) == "0o600"


def test_server_certificate_is_for_tls_on_loopback_within_the_browser_lifetime(tls_files: TlsFiles) -> None:
    server = x509.load_pem_x509_certificate(tls_files.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in names.get_values_for_type(x509.IPAddress)
    assert ExtendedKeyUsageOID.SERVER_AUTH in server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert SERVER_LIFETIME <= lifetime <= SERVER_LIFETIME + dt.timedelta(minutes=5)
    assert server.not_valid_before_utc <= dt.datetime.now(dt.UTC)


def test_a_server_certificate_near_its_end_is_renewed(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path)
    ca = trustme.CA.from_pem(first.ca_cert.read_bytes(), first.ca_key.read_bytes())
    now = dt.datetime.now(dt.UTC)
    ending = ca.issue_cert("localhost", "127.0.0.1", "::1", not_before=now, not_after=now + dt.timedelta(days=3))
    first.server_cert.write_bytes(ending.cert_chain_pems[0].bytes())
    first.server_key.write_bytes(ending.private_key_pem.bytes())
    again = ensure_tls(tmp_path)  # three days left: less than the week it wants
    renewed = x509.load_pem_x509_certificate(again.server_cert.read_bytes())
    assert renewed.not_valid_after_utc > now + dt.timedelta(days=300)
    renewed.verify_directly_issued_by(x509.load_pem_x509_certificate(again.ca_cert.read_bytes()))


def test_bundle_is_certifi_plus_our_ca(tls_files: TlsFiles) -> None:
    bundle = tls_files.bundle.read_text()
    assert bundle.startswith(Path(certifi.where()).read_text().rstrip("\n"))
    assert bundle.rstrip().endswith(tls_files.ca_cert.read_text().rstrip())
    assert trust_env(tls_files) == {"REQUESTS_CA_BUNDLE": str(tls_files.bundle), "SSL_CERT_FILE": str(tls_files.bundle)}


def test_valid_material_is_reused_and_broken_material_regenerated(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path)
    ca_pem = first.ca_cert.read_bytes()
    assert ensure_tls(tmp_path).ca_cert.read_bytes() == ca_pem  # reused

    first.server_cert.write_text("not a certificate")
    again = ensure_tls(tmp_path)
    assert again.ca_cert.read_bytes() != ca_pem  # regenerated as a whole
    x509.load_pem_x509_certificate(again.server_cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(again.ca_cert.read_bytes())
    )


def test_requests_httpx_and_ssl_trust_the_server_via_environment_only(
    tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _hello_app()
    with ServerThread(app, ssl_certfile=str(tls_files.server_cert), ssl_keyfile=str(tls_files.server_key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url)  # certifi alone does not know our CA

        for key, value in trust_env(tls_files).items():
            monkeypatch.setenv(key, value)
        assert httpx.get(server.url).text == "hello over tls"
        assert requests.get(server.url, timeout=10).text == "hello over tls"
        localhost = server.url.replace("127.0.0.1", "localhost")
        assert httpx.get(localhost).text == "hello over tls"

        # A fresh interpreter with only the variables set: the standard library's default context trusts it.
        code = (
            "import ssl, urllib.request, sys; "
            f"print(urllib.request.urlopen({server.url!r}, context=ssl.create_default_context()).read().decode())"
        )
        result = subprocess.run(  # noqa: S603 - fixed interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False,
            env={"PATH": "/usr/bin:/bin", **trust_env(tls_files)},
        )  # fmt: skip
        assert result.stdout.strip() == "hello over tls", result.stderr
