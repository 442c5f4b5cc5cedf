"""Client authentication at the token endpoint: client_secret (post or basic) or a certificate client_assertion."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sandbox.entra.config import AppRegistration
from sandbox.entra.context import Entra
from sandbox.entra.errors import EntraError, missing_parameter
from sandbox.entra.signing import b64url

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str | None = None
    assertion: str | None = None

    @property
    def acr(self) -> str:
        """``appidacr``/``azpacr``: 1 = shared secret, 2 = certificate."""
        return "2" if self.assertion else "1"


def read_credentials(form: Mapping[str, str], authorization: str | None) -> ClientCredentials:
    basic_id = basic_secret = None
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise EntraError("invalid_client", 50027, "Invalid HTTP Basic authorization header.") from error
        user, _, password = decoded.partition(":")
        basic_id, basic_secret = unquote(user), unquote(password)  # RFC 6749 §2.3.1 form-encodes both
    client_id = form.get("client_id") or basic_id
    if not client_id:
        raise missing_parameter("client_id")
    assertion = form.get("client_assertion")
    if assertion and form.get("client_assertion_type") != JWT_BEARER:
        raise EntraError(
            "invalid_request",
            9002313,
            f"Invalid request. Request is malformed or invalid. client_assertion_type must be '{JWT_BEARER}'.",
        )
    return ClientCredentials(client_id, secret=form.get("client_secret") or basic_secret, assertion=assertion)


def authenticate(entra: Entra, app: AppRegistration, credentials: ClientCredentials, audiences: list[str]) -> None:
    if credentials.assertion:
        _check_assertion(entra, app, credentials.assertion, audiences)
        return
    if credentials.secret is None:
        raise EntraError(
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if not any(hmac.compare_digest(credentials.secret.encode(), s.encode()) for s in app.secrets):
        raise EntraError(
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
            f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
        )


def _check_assertion(entra: Entra, app: AppRegistration, assertion: str, audiences: list[str]) -> None:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as error:
        raise EntraError("invalid_client", 50027, "JWT token is invalid or malformed.") from error
    certificate = _registered_certificate(app, header)
    if certificate is None:
        raise EntraError(
            "invalid_client",
            700027,
            "Client assertion failed signature validation. The certificate with the identifier used to sign the "
            f"client assertion is not registered on application '{app.client_id}'.",
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            certificate.public_key(),  # type: ignore[arg-type]
            algorithms=["RS256", "PS256"],
            audience=audiences,
            options={"require": ["exp", "aud", "iss", "sub", "jti"]},
            leeway=300,
        )
    except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as error:
        raise EntraError("invalid_client", 700024, "Client assertion is not within its valid time range.") from error
    except jwt.InvalidSignatureError as error:
        raise EntraError("invalid_client", 700027, "Client assertion failed signature validation.") from error
    except jwt.InvalidAudienceError as error:
        raise EntraError(
            "invalid_client", 50027, f"JWT token is invalid or malformed: audience must be '{audiences[0]}'."
        ) from error
    except jwt.InvalidTokenError as error:
        raise EntraError("invalid_client", 50027, "JWT token is invalid or malformed.") from error
    if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
        raise EntraError(
            "invalid_client", 700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    if not entra.store.first_use_of_assertion(str(claims["jti"]), float(claims["exp"]) + 300, entra.now()):
        raise EntraError("invalid_client", 50027, "JWT token is invalid or malformed: the assertion was replayed.")


def _registered_certificate(app: AppRegistration, header: Mapping[str, Any]) -> x509.Certificate | None:
    for pem in app.certificates:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        der_sha1 = certificate.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is defined as SHA-1
        thumbprints = {
            "x5t": b64url(der_sha1),
            "x5t#S256": b64url(certificate.fingerprint(hashes.SHA256())),
            "kid": der_sha1.hex().upper(),
        }
        for name, expected in thumbprints.items():
            given = header.get(name)
            if not isinstance(given, str):
                continue
            # A hex thumbprint's case does not matter; base64url thumbprints are exact (msal pads them).
            given = given.upper() if name == "kid" else given.rstrip("=")
            if hmac.compare_digest(given.encode(), expected.encode()):
                return certificate
    return None


def s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())
