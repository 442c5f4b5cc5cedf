"""Entra ID errors as the Microsoft identity platform returns them.

Token-endpoint errors are JSON with ``error``, ``error_description`` ("AADSTS70008: ... Trace ID: ...
Correlation ID: ... Timestamp: ..."), ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id`` and
``error_uri``; authorize errors go back to the redirect URI as ``error``/``error_description``/``state``
unless the redirect URI itself cannot be trusted, in which case an error page is shown.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

# AADSTS code → short description used by the /error page.
CATALOGUE: dict[int, str] = {
    50011: "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
    50020: "User account from identity provider does not exist in tenant and cannot access the application.",
    50058: "A silent sign-in request was sent but no user is signed in.",
    50059: "No tenant-identifying information found in either the request or implied by any provided credentials.",
    50148: "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
    50194: "Application is not configured as a multi-tenant application.",
    54005: "OAuth2 Authorization code was already redeemed.",
    65001: "The user or administrator has not consented to use the application.",
    70000: "The provided value for the 'code' parameter is not valid.",
    70003: "The app requested an unsupported grant type.",
    70008: "The provided authorization code or refresh token has expired due to inactivity.",
    70011: "The provided value for the input parameter 'scope' is not valid.",
    90002: "Tenant not found.",
    28000: "Provided value for the input parameter scope is not valid because it contains more than one resource.",
    500011: "The resource principal was not found in the tenant.",
    500112: "The reply address does not match the reply address provided when requesting Authorization code.",
    700005: "Provided Authorization Code is intended to use against other tenant, thus rejected.",
    700016: "Application was not found in the directory.",
    700021: "Client assertion application identifier doesn't match 'client_id' parameter.",
    700024: "Client assertion is not within its valid time range.",
    700027: "Client assertion failed signature validation.",
    700051: "response_type is not enabled for the application.",
    700082: "The refresh token has expired due to inactivity.",
    900144: "The request body must contain the following parameter.",
    900561: "The endpoint only accepts POST requests.",
    1002012: "Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
    7000215: "Invalid client secret provided.",
    7000218: "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    9002313: "Invalid request. Request is malformed or invalid.",
    9002325: "Proof Key for Code Exchange is required.",
    50027: "JWT token is invalid or malformed.",
}

STATUS_BY_ERROR = {"invalid_client": 401}


@dataclass
class EntraError(Exception):
    """An error the identity platform reports: OAuth ``error`` + AADSTS code and message."""

    error: str
    code: int
    message: str

    @property
    def status(self) -> int:
        return STATUS_BY_ERROR.get(self.error, 400)

    def description(self, trace_id: str, correlation_id: str, timestamp: str) -> str:
        return (
            f"AADSTS{self.code}: {self.message} Trace ID: {trace_id} Correlation ID: {correlation_id} "
            f"Timestamp: {timestamp}"
        )


def missing_parameter(name: str) -> EntraError:
    return EntraError("invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


def timestamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def correlation_id(request: Request) -> str:
    """msal sends ``client-request-id``; Entra echoes it as the correlation id."""
    given = request.headers.get("client-request-id", "")
    try:
        return str(uuid.UUID(given))
    except ValueError:
        return str(uuid.uuid4())


def error_fields(error: EntraError, request: Request, issuer_host: str) -> dict[str, Any]:
    trace, correlation, when = str(uuid.uuid4()), correlation_id(request), timestamp()
    return {
        "error": error.error,
        "error_description": error.description(trace, correlation, when),
        "error_codes": [error.code],
        "timestamp": when,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"{issuer_host}/error?code={error.code}",
    }


def json_error(error: EntraError, request: Request, issuer_host: str) -> JSONResponse:
    return JSONResponse(
        error_fields(error, request, issuer_host),
        status_code=error.status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
