"""The EHR's three error dialects: OAuth JSON (RFC 6749), FHIR OperationOutcome, and HTML pages."""

from __future__ import annotations

from starlette.responses import JSONResponse

FHIR_JSON = "application/fhir+json"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# HTTP status → OperationOutcome issue type
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "duplicate",
    415: "not-supported",
    429: "throttled",
    500: "exception",
    503: "transient",
    504: "timeout",
}


class FhirJSONResponse(JSONResponse):
    media_type = FHIR_JSON


def oauth_error(error: str, description: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers={**NO_STORE, **(headers or {})}
    )


def operation_outcome(
    status: int, diagnostics: str, code: str | None = None, headers: dict[str, str] | None = None
) -> FhirJSONResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error" if status >= 400 else "information",
                "code": code or _ISSUE_CODES.get(status, "processing"),
                "diagnostics": diagnostics,
            }
        ],
    }
    return FhirJSONResponse(body, status_code=status, headers=headers)


def epic_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Errors of Epic's non-FHIR web services (shape not public; ASP.NET Web API style ``Message``)."""
    return JSONResponse({"Message": message}, status_code=status, headers=headers)
