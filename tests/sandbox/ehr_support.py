"""Test support for the EHR sandbox: a running EHR, a tiny JWKS server for the client's keys, a SMART client.

Import the fixtures into a test module with ``from tests.sandbox.ehr_support import *  # noqa: F403``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.ehr import EhrConfig, EhrSandbox, RegisteredClient
from sandbox.server import ServerThread, free_port

REDIRECT = "https://connector.example/api/launch/callback"
PROVIDER_LAUNCH_URL = "https://connector.example/api/launch/cfg-1/provider"
PATIENT_LAUNCH_URL = "https://connector.example/api/launch/cfg-1/patient"
CONTEXT_TOKENS = "sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%"
APP = "app-provider"
SECRET_APP = "app-secret"
BACKEND = "app-backend"
NO_SCS = "app-no-scs"
PUBLIC_APP = "app-public"
SECRET = "s3cret/with+chars"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class ClientKeys:
    """The app's signing keys and the JWK Set its JWKS server publishes (mutable, for rotation tests)."""

    rsa_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ec_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    rsa_kid: str = "rsa-1"
    ec_kid: str = "ec-1"
    extra: list[dict[str, Any]] = field(default_factory=list)
    hits: int = 0

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec_key.public_key()))
        rsa_jwk.update(kid=self.rsa_kid, alg="RS384", use="sig")
        ec_jwk.update(kid=self.ec_kid, alg="ES384", use="sig")
        return {"keys": [rsa_jwk, ec_jwk, *self.extra]}


@pytest.fixture(scope="module")
def client_keys() -> ClientKeys:
    return ClientKeys()


@pytest.fixture(scope="module")
def jwks_url(client_keys: ClientKeys) -> Iterator[str]:
    async def serve(request: Request) -> JSONResponse:
        client_keys.hits += 1
        return JSONResponse(client_keys.jwks())

    with ServerThread(Starlette(routes=[Route("/jwks.json", serve)])) as server:
        yield server.url + "/jwks.json"


def clients(jwks_url: str) -> tuple[RegisteredClient, ...]:
    return (
        RegisteredClient(APP, (REDIRECT,), jwks_url=jwks_url, name="Teams connector"),
        RegisteredClient(
            SECRET_APP, (REDIRECT,), client_secret=SECRET, name="Secret app", grant_types=("authorization_code",)
        ),
        RegisteredClient(BACKEND, (), jwks_url=jwks_url, grant_types=("client_credentials",)),
        RegisteredClient(NO_SCS, (), jwks_url=jwks_url, grant_types=("client_credentials",), epic_apis=()),
        RegisteredClient(PUBLIC_APP, (REDIRECT,), name="Public app"),
    )


def start_ehr(jwks_url: str, **config: Any) -> tuple[ServerThread, EhrSandbox]:
    port = free_port()
    ehr = EhrSandbox(EhrConfig(base_url=f"http://127.0.0.1:{port}", clients=clients(jwks_url), **config))
    ehr.add_record(
        name="Teams provider",
        kind="provider",
        launch_url=PROVIDER_LAUNCH_URL,
        context_tokens=CONTEXT_TOKENS,
        client_id=APP,
    )
    ehr.add_record(
        name="Teams patient",
        kind="patient",
        launch_url=PATIENT_LAUNCH_URL,
        context_tokens="sessionId=%CSN%",
        client_id=APP,
    )
    return ServerThread(ehr.app, port=port).start(), ehr


@pytest.fixture(scope="module")
def ehr_server(jwks_url: str) -> Iterator[tuple[ServerThread, EhrSandbox]]:
    server, ehr = start_ehr(jwks_url)
    try:
        yield server, ehr
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ehr(ehr_server: tuple[ServerThread, EhrSandbox]) -> EhrSandbox:
    return ehr_server[1]


@pytest.fixture
def http(ehr_server: tuple[ServerThread, EhrSandbox]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ehr_server[0].url, follow_redirects=False, timeout=10) as client:
        yield client


def record_id(ehr: EhrSandbox, kind: str) -> str:
    return ehr.state.records_of(kind)[0].id


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def assertion(
    keys: ClientKeys,
    token_url: str,
    client_id: str = APP,
    *,
    alg: str = "RS384",
    kid: str | None = None,
    lifetime: int = 240,
    jti: str | None = None,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti or str(uuid.uuid4()),
    }
    claims.update(overrides)
    key: Any = keys.ec_key if alg.startswith("ES") else keys.rsa_key
    header_kid = kid or (keys.ec_kid if alg.startswith("ES") else keys.rsa_kid)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": header_kid, "typ": "JWT"})


def authorize_params(ehr: EhrSandbox, challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": APP,
        "redirect_uri": REDIRECT,
        "scope": "launch openid fhirUser patient/*.read user/*.read",
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(16),
        "aud": ehr.config.fhir_base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


def launch_value(
    ehr: EhrSandbox, kind: str = "provider", appointment: str = "e-appt-001", user: str = "e-prac-smith"
) -> tuple[str, str]:
    url = ehr.create_launch(record_id(ehr, kind), appointment, user)
    return url, parse_qs(urlsplit(url).query)["launch"][-1]


def code_for(http: httpx.Client, ehr: EhrSandbox, verifier_challenge: tuple[str, str], **overrides: str) -> str:
    _, launch = launch_value(ehr)
    params = authorize_params(ehr, verifier_challenge[1], launch=launch, **overrides)
    return redirect_query(http.get("/oauth2/authorize", params=params))["code"]


def token_request(
    http: httpx.Client, ehr: EhrSandbox, keys: ClientKeys, code: str, verifier: str, **overrides: str
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion(keys, ehr.config.token_url),
    }
    form.update(overrides)
    return http.post("/oauth2/token", data={k: v for k, v in form.items() if v is not None})


def backend_token(http: httpx.Client, ehr: EhrSandbox, keys: ClientKeys, scope: str, client_id: str = BACKEND) -> str:
    response = http.post(
        "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion(keys, ehr.config.token_url, client_id),
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def user_token(http: httpx.Client, ehr: EhrSandbox, keys: ClientKeys, scope: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    code = code_for(http, ehr, (verifier, challenge), scope=scope)
    response = token_request(http, ehr, keys, code, verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
