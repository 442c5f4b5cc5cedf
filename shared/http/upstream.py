"""Classify outbound HTTP outcomes into the connector's error hierarchy.

Retryable: transport failures, timeouts, 408, 429 (with Retry-After), 5xx. Permanent: any
other 4xx. Used by every adapter that speaks plain HTTP (EHR, FHIR), so retry decisions are
made in one place.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

import httpx

from shared.kernel.clock import utcnow
from shared.kernel.errors import UpstreamError, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable

MAX_ERROR_BODY = 2048


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def error_for_response(response: httpx.Response, *, system: str) -> UpstreamError | None:
    """None for 2xx/3xx; otherwise the error to raise for this response."""
    status = response.status_code
    if status < 400:
        return None
    if status == 429:
        return UpstreamThrottled(
            f"{system} is throttling requests.", system=system, retry_after=retry_after_seconds(response)
        )
    if status == 408 or status >= 500:
        return UpstreamUnavailable(f"{system} is temporarily unavailable (HTTP {status}).", system=system)
    return UpstreamRejected(f"{system} rejected the request (HTTP {status}).", system=system, code=f"http_{status}")


def error_for_transport(exc: httpx.TransportError, *, system: str) -> UpstreamUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamUnavailable(f"{system} did not answer in time.", system=system)
    return UpstreamUnavailable(f"{system} could not be reached.", system=system)
