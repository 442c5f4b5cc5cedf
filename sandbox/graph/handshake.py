"""The subscription validation handshake: POST ``{url}?validationToken=…`` and expect the token back."""

from __future__ import annotations

import functools
import ssl
import uuid

import httpx

from sandbox.graph.odata import GraphError

FAILED = "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request."
MISMATCH = "Subscription validation request failed. Response must exactly match validationToken query parameter."
CONTENT_TYPE = "Subscription validation request failed. Response must have Content-Type text/plain."
TIMED_OUT = "Subscription validation request timed out."


def new_validation_token() -> str:
    # Graph's tokens are opaque text with spaces and colons, so receivers must URL-decode them.
    return f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()  # building one costs ~50 ms; a context is safe to share


async def validate_endpoint(url: str, timeout: float) -> None:
    """Raise a 400 ``ValidationError`` unless ``url`` echoes a fresh token in time, as text/plain, with 200."""
    token = new_validation_token()
    target = httpx.URL(url).copy_add_param("validationToken", token)
    try:
        async with httpx.AsyncClient(timeout=timeout, verify=_tls()) as client:
            response = await client.post(target, headers={"Content-Type": "text/plain; charset=utf-8"}, content=b"")
    except httpx.TimeoutException:
        raise GraphError(400, "ValidationError", TIMED_OUT) from None
    except httpx.HTTPError:
        raise GraphError(400, "ValidationError", FAILED) from None
    if response.status_code != 200:
        raise GraphError(400, "ValidationError", FAILED)
    if not response.headers.get("content-type", "").lower().startswith("text/plain"):
        raise GraphError(400, "ValidationError", CONTENT_TYPE)
    if response.text != token:
        raise GraphError(400, "ValidationError", MISMATCH)
