"""Fixtures for the sandbox Graph tests: our own token signer, a running Graph, a webhook receiver.

Import the fixtures a test module uses (``graph_fixture`` provides ``graph``, and so on). Nothing here
talks to the sandbox Entra ID: access tokens and notification validation tokens are minted with keys
generated per test module.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sandbox.certificates import self_signed
from sandbox.graph import GraphConfig, GraphSandbox
from sandbox.seed import CONNECTOR_CLIENT_ID, CONTOSO
from sandbox.server import ServerThread, free_port

SMITH = "b0000000-0000-4000-8000-000000000001"
LEE = "b0000000-0000-4000-8000-000000000002"
NOPOLICY = "b0000000-0000-4000-8000-000000000003"
NURSE = "b0000000-0000-4000-8000-000000000004"
FABRIKAM_ADMIN = "c0000000-0000-4000-8000-000000000001"
ENTRA_HOST = "https://127.0.0.1:7201"

# One client for every test request: creating an httpx client per call costs ~50-250 ms.
http = httpx.Client(timeout=20)


class Keys:
    """An RSA key published as a JWKS, signing RS256 tokens."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwks = {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


@dataclass
class Tokens:
    keys: Keys
    audience: str

    def app_token(self, **overrides: Any) -> str:
        """An app-only Graph token for the connector in Contoso, as the sandbox Entra would mint it."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.audience,
            "iss": f"https://sts.windows.net/{CONTOSO.id}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": CONNECTOR_CLIENT_ID,
            "appidacr": "1",
            "idtyp": "app",
            "oid": "d0000000-0000-4000-8000-00000000000a",
            "roles": ["OnlineMeetings.ReadWrite.All"],
            "tid": CONTOSO.id,
            "ver": "1.0",
        }
        claims.update(overrides)
        return self.keys.sign({k: v for k, v in claims.items() if v is not None})


@dataclass
class RunningGraph:
    sandbox: GraphSandbox
    url: str
    tokens: Tokens
    notification_keys: Keys

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.tokens.app_token()}"}


@pytest.fixture(scope="module", name="graph")
def graph_fixture() -> Iterator[RunningGraph]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    access_keys, notification_keys = Keys("access-1"), Keys("notify-1")
    config = GraphConfig(
        base_url=url,
        jwks=lambda: access_keys.jwks,
        sign_validation_token=notification_keys.sign,
        entra_host=ENTRA_HOST,
        handshake_timeout=2.0,
        delivery_timeout=2.0,
        delivery_retry_delays=(0.05, 0.1),
        expose_delivery_log=True,
    )
    sandbox = GraphSandbox(config)
    with ServerThread(sandbox.app, port=port):
        yield RunningGraph(sandbox, url, Tokens(access_keys, url), notification_keys)
    sandbox.close()


# -- a webhook receiver ---------------------------------------------------------------------------
@dataclass
class Receiver:
    """Records what arrives. Paths: /ok (a correct webhook), /wrong-echo, /status-500, /json-echo,
    /flaky (answers 503 to the first ``flaky_failures`` notifications), /slow (sleeps ``slow_seconds``)."""

    url: str = ""
    handshakes: list[tuple[str, str, str | None]] = field(default_factory=list)  # (path, token, content type)
    notifications: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    flaky_failures: int = 1
    slow_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, body in self.notifications if p == path]

    def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"expected {count} notifications on {path}, got {len(self.received(path))}")

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        token = request.query_params.get("validationToken")
        if token is not None:
            with self.lock:
                self.handshakes.append((path, token, request.headers.get("content-type")))
            if path == "/wrong-echo":
                return PlainTextResponse(token + "x")
            if path == "/status-500":
                return PlainTextResponse("no", status_code=500)
            if path == "/json-echo":
                return JSONResponse(token)
            if path == "/slow":
                time.sleep(self.slow_seconds)
            return PlainTextResponse(token)
        body = await request.json()
        with self.lock:
            self.notifications.append((path, body))
            failing = path == "/flaky" and len([p for p, _ in self.notifications if p == path]) <= self.flaky_failures
        return Response(status_code=503 if failing else 202)


@pytest.fixture(scope="module", name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    state = Receiver()
    paths = ["/ok", "/ok2", "/lifecycle", "/wrong-echo", "/status-500", "/json-echo", "/flaky", "/slow"]
    app = Starlette(routes=[Route(p, state.endpoint, methods=["POST"]) for p in paths])
    with ServerThread(app) as server:
        state.url = server.url
        yield state


# -- the subscriber's certificate and the documented decryption ---------------------------------
@dataclass
class Certificate:
    private_key: rsa.RSAPrivateKey
    base64_der: str
    thumbprint: str


@pytest.fixture(scope="session", name="cert")
def certificate_fixture() -> Certificate:
    key, cert = self_signed("graph-notifications-test", days=2)
    der = cert.public_bytes(serialization.Encoding.DER)
    thumbprint = hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
    return Certificate(key, base64.b64encode(der).decode(), thumbprint)


def decrypt(encrypted: dict[str, str], private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """Graph's documented scheme: RSA-OAEP-SHA1 unwrap, HMAC-SHA256 check, AES-CBC (IV = key[:16]), PKCS7."""
    key = private_key.decrypt(
        base64.b64decode(encrypted["dataKey"]),
        OAEP(mgf=MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
    )
    data = base64.b64decode(encrypted["data"])
    expected = hmac.new(key, data, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, base64.b64decode(encrypted["dataSignature"])):
        raise ValueError("dataSignature mismatch")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return json.loads(unpadder.update(padded) + unpadder.finalize())


def create_meeting(graph: RunningGraph, organizer: str = SMITH, external_id: str | None = None) -> dict[str, Any]:
    response = http.post(
        f"{graph.url}/v1.0/users/{organizer}/onlineMeetings/createOrGet",
        headers=graph.headers(),
        json={"externalId": external_id or str(uuid.uuid4()), "subject": "Virtual visit"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def subscription_body(join_web_url: str, notification_url: str, cert: Certificate, **extra: Any) -> dict[str, Any]:
    from urllib.parse import quote

    expiration = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    return {
        "changeType": "updated",
        "notificationUrl": notification_url,
        "resource": f"communications/onlineMeetings(joinWebUrl='{quote(join_web_url, safe='')}')/meetingCallEvents",
        "includeResourceData": True,
        "encryptionCertificate": cert.base64_der,
        "encryptionCertificateId": "notifications-2026",
        "expirationDateTime": expiration.isoformat().replace("+00:00", "Z"),
        "clientState": "a-client-state-of-at-least-32-characters!",
        **extra,
    }
