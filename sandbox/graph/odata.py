"""Microsoft Graph's OData error body: ``{"error": {"code", "message", "innerError": {...}}}``.

msgraph-sdk turns a JSON error into ``ODataError`` (with ``error.code``); anything else becomes an
``APIError`` that no caller can branch on, so every error here is ``application/json``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class GraphError(Exception):
    """Raised by handlers; rendered as Graph renders errors."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def request_ids(request: Request) -> tuple[str, str]:
    request_id = str(uuid.uuid4())
    return request_id, request.headers.get("client-request-id") or request_id


def error_response(request: Request, error: GraphError) -> JSONResponse:
    request_id, client_request_id = request_ids(request)
    body: dict[str, Any] = {
        "error": {
            "code": error.code,
            "message": error.message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }
    headers = {"request-id": request_id, "client-request-id": client_request_id, **error.headers}
    return JSONResponse(body, status_code=error.status, headers=headers)


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def not_found(message: str, code: str = "NotFound") -> GraphError:
    return GraphError(404, code, message)
