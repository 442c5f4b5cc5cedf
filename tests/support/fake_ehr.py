"""A small SMART 2 authorization server that can misbehave on purpose, for the portal's and SmartClient's tests.

Why it exists beside the sandbox EHR (``sandbox/ehr/``, which ``tests/integration/test_portal_ehr.py`` already
drives through the portal's EHR sign-in): the sandbox must follow Epic's documented behaviour, and these tests
need a server that does what no faithful EHR does, switched per test:

- ``advertise_s256 = False``: a SMART configuration without PKCE S256 (the client must refuse it);
- ``fhir_version``: the CapabilityStatement's version (an STU3 or R5 server must be refused at entry);
- ``auth_methods``: the token endpoint's advertised client authentications (without ``private_key_jwt``: refused);
- ``id_token_audience``: an id_token minted for another client (the proof must fail);
- ``authorize_error`` / ``token_error``: any OAuth error code from either endpoint, on demand;
- ``/redirecting/.well-known/smart-configuration``: discovery answered with a redirect to the cloud metadata
  address (the outbound client must not follow it);
- every path ending in ``FHIR/R4``, or in ``r4/{tenant}`` as Oracle Health's service roots do, is a FHIR base, so
  one server serves a tenant's test and production URLs (and Oracle's provider and patient-access roots);
- ``fhir_versions``: the CapabilityStatement's version per FHIR base path (overrides ``fhir_version``);
- ``authorize`` signs the user in at once (no sign-in page to fill in), and ``token_requests`` records what the
  client sent, so a test can read the client assertion's form fields.

Everything else is checked as a real server checks it: PKCE S256, redirect_uri, single-use codes, and the client
assertion's signature against the connector's JWKS (fetched through ``client_jwks``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.server import ServerThread


@dataclass
class FakeEhr:
    client_jwks: Callable[[], dict[str, Any]]
    base: str = ""  # set once the server runs: http://127.0.0.1:port
    fhir_path: str = "/api/FHIR/R4"
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    advertise_s256: bool = True
    authorize_error: str | None = None
    token_error: str | None = None
    id_token_audience: str | None = None  # override to mint a token for another client
    fhir_version: str = "4.0.1"  # the CapabilityStatement's fhirVersion (e.g. "3.0.2": an STU3 server)
    fhir_versions: dict[str, str] = field(default_factory=dict)  # per FHIR base path (no leading slash)
    auth_methods: tuple[str, ...] = ("private_key_jwt",)  # token_endpoint_auth_methods_supported

    @property
    def fhir_base(self) -> str:
        return f"{self.base}{self.fhir_path}"

    @property
    def issuer(self) -> str:
        return f"{self.base}/oauth2"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/redirecting/.well-known/smart-configuration", self.redirect_away),
                Route("/{fhir:path}/.well-known/smart-configuration", self.smart_configuration),
                Route("/{fhir:path}/metadata", self.metadata),
                Route("/oauth2/authorize", self.authorize),
                Route("/oauth2/token", self.token, methods=["POST"]),
                Route("/oauth2/jwks", self.jwks),
            ]
        )

    async def smart_configuration(self, request: Request) -> Response:
        """Any path ending in FHIR/R4 is a FHIR server here (so tests can use a test and a production URL)."""
        if not _is_fhir_base(request.path_params["fhir"]):
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.base}/oauth2/jwks",
                "authorization_endpoint": f"{self.base}/oauth2/authorize",
                "token_endpoint": f"{self.base}/oauth2/token",
                "token_endpoint_auth_methods_supported": list(self.auth_methods),
                "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"] if self.advertise_s256 else [],
                "capabilities": ["launch-standalone", "client-confidential-asymmetric", "sso-openid-connect"],
            }
        )

    async def metadata(self, request: Request) -> Response:
        if not _is_fhir_base(request.path_params["fhir"]):
            return JSONResponse({"error": "not found"}, status_code=404)
        body = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance"}
        version = self.fhir_versions.get(request.path_params["fhir"], self.fhir_version)
        return JSONResponse({**body, "fhirVersion": version}, media_type="application/fhir+json")

    async def redirect_away(self, request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def authorize(self, request: Request) -> Response:
        """Signs the user in at once (a real EHR shows a sign-in page) and redirects back."""
        q = request.query_params
        if self.authorize_error:
            query = urlencode({"error": self.authorize_error, "state": q["state"]})
            return RedirectResponse(f"{q['redirect_uri']}?{query}", status_code=302)
        assert q["response_type"] == "code" and q["code_challenge_method"] == "S256" and q["aud"].startswith(self.base)
        code = secrets.token_urlsafe(16)
        self.codes[code] = dict(q)
        query = urlencode({"code": code, "state": q["state"]})
        return RedirectResponse(f"{q['redirect_uri']}?{query}", status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(await request.form())
        self.token_requests.append({k: str(v) for k, v in form.items()})
        if self.token_error:
            return JSONResponse({"error": self.token_error}, status_code=400)
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["code_challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        try:
            assertion = str(form["client_assertion"])
            kid = jwt.get_unverified_header(assertion)["kid"]
            jwk = next(k for k in self.client_jwks()["keys"] if k["kid"] == kid)
            claims = jwt.decode(
                assertion, jwt.PyJWK(jwk).key, algorithms=["RS384"], audience=f"{self.base}/oauth2/token"
            )
            assert claims["iss"] == claims["sub"] == grant["client_id"]
        except Exception:  # noqa: BLE001 - any failure is invalid_client, as at a real server
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        now = int(time.time())
        id_token = jwt.encode(
            {
                "iss": self.issuer,
                "sub": "eVfmO0VstOuhL2fVS-bl8cg3",
                "aud": self.id_token_audience or grant["client_id"],
                "iat": now,
                "exp": now + 300,
                "nonce": grant.get("nonce"),
                "fhirUser": f"{self.fhir_base}/Practitioner/eVfmO0VstOuhL2fVS-bl8cg3",
            },
            self.key,
            algorithm="RS256",
            headers={"kid": "ehr-key-1"},
        )
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(24),
                "token_type": "Bearer",
                "expires_in": 3240,
                "scope": grant["scope"],
                "id_token": id_token,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def jwks(self, request: Request) -> Response:
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**jwk, "kid": "ehr-key-1", "use": "sig", "alg": "RS256"}]})


@contextmanager
def running_fake_ehr(client_jwks: Callable[[], dict[str, Any]]) -> Iterator[FakeEhr]:
    """A ``FakeEhr`` serving on a free port of 127.0.0.1 for the ``with`` block."""
    ehr = FakeEhr(client_jwks=client_jwks)
    with ServerThread(ehr.app()) as server:
        ehr.base = server.url
        yield ehr


def _is_fhir_base(path: str) -> bool:
    """``…/FHIR/R4`` (Epic-style) or ``…/r4/{tenant}`` (Oracle Health's service roots)."""
    parts = path.rstrip("/").split("/")
    return path.endswith("FHIR/R4") or (len(parts) >= 2 and parts[-2] == "r4" and bool(parts[-1]))
