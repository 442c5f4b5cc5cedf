"""The shared token signer, client assertions checked against it, and sign-out."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from sandbox.entra import RunningEntra, TokenIssuer
from sandbox.entra.client_auth import JWT_BEARER
from sandbox.entra.signing import b64url
from sandbox.seed import CONNECTOR_CLIENT_ID, CONTOSO
from tests.sandbox.conftest import CERTIFICATE_CLIENT_ID, ClientCertificate

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


def test_load_or_create_shares_one_key_between_instances(tmp_path: Path) -> None:
    first = TokenIssuer.load_or_create(tmp_path / "signing.pem")
    second = TokenIssuer.load_or_create(tmp_path / "signing.pem")
    assert first.jwks() == second.jwks()
    token = first.sign({"iss": "i", "aud": "a", "iat": int(time.time()), "nbf": int(time.time()),
                        "exp": int(time.time()) + 60})  # fmt: skip
    assert second.verify(token, audience="a", issuer="i")["aud"] == "a"
    assert oct((tmp_path / "signing.pem").stat().st_mode & 0o777) == "0o600"


def test_rotation_keeps_old_tokens_verifiable() -> None:
    issuer = TokenIssuer.generate()
    now = int(time.time())
    claims = {"iss": "i", "aud": "a", "iat": now, "nbf": now, "exp": now + 60}
    old = issuer.sign(claims)
    issuer.rotate()
    new = issuer.sign(claims)
    assert len(issuer.jwks()["keys"]) == 2
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    assert issuer.verify(old, audience="a")["iss"] == issuer.verify(new, audience="a")["iss"] == "i"
    with pytest.raises(jwt.InvalidAudienceError):
        issuer.verify(new, audience="someone-else")


def _assertion(certificate: ClientCertificate, audience: str, **overrides: object) -> str:
    key = serialization.load_pem_private_key(certificate.private_key_pem.encode(), password=None)
    cert = x509.load_pem_x509_certificate(certificate.certificate_pem.encode())
    now = int(time.time())
    claims = {"aud": audience, "iss": CERTIFICATE_CLIENT_ID, "sub": CERTIFICATE_CLIENT_ID, "jti": str(uuid.uuid4()),
              "nbf": now, "exp": now + 600, **overrides}  # fmt: skip
    headers = {"x5t#S256": b64url(cert.fingerprint(hashes.SHA256()))}
    return jwt.encode(claims, key, algorithm="PS256", headers=headers)  # type: ignore[arg-type]


def _token_request(api: httpx.Client, entra: RunningEntra, assertion: str) -> httpx.Response:
    return api.post(
        f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": CERTIFICATE_CLIENT_ID, "scope": GRAPH_DEFAULT,
              "client_assertion_type": JWT_BEARER, "client_assertion": assertion},
    )  # fmt: skip


def test_client_assertion_is_single_use(
    api: httpx.Client, entra: RunningEntra, client_certificate: ClientCertificate
) -> None:
    assertion = _assertion(client_certificate, f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token")
    assert _token_request(api, entra, assertion).status_code == 200
    replay = _token_request(api, entra, assertion)
    assert replay.status_code == 401 and replay.json()["error_codes"] == [50027]


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"aud": "https://elsewhere.example/token"}, 50027),
        ({"exp": int(time.time()) - 3600, "nbf": int(time.time()) - 7200}, 700024),
        ({"iss": CONNECTOR_CLIENT_ID, "sub": CONNECTOR_CLIENT_ID}, 700021),
    ],
    ids=["audience", "expired", "other-client"],
)
def test_bad_client_assertions_are_invalid_client(
    api: httpx.Client, entra: RunningEntra, client_certificate: ClientCertificate, overrides: dict[str, object],
    code: int,
) -> None:  # fmt: skip
    audience = f"{entra.issuer_host}/{CONTOSO.id}/oauth2/v2.0/token"
    response = _token_request(api, entra, _assertion(client_certificate, audience, **overrides))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client" and response.json()["error_codes"] == [code]


def test_logout_returns_only_to_a_registered_uri(entra: RunningEntra) -> None:
    logout = f"{entra.browser_host}/organizations/oauth2/v2.0/logout"
    registered = httpx.get(logout, params={"post_logout_redirect_uri": "http://localhost:7071/api/portal"})
    assert registered.status_code == 302 and registered.headers["location"] == "http://localhost:7071/api/portal"
    foreign = httpx.get(logout, params={"post_logout_redirect_uri": "https://attacker.example/"})
    assert foreign.status_code == 200 and "You signed out" in foreign.text and "location" not in foreign.headers
