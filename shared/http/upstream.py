"""Classify outbound HTTP outcomes into the connector's error hierarchy.

Retryable: transport failures, timeouts, 408, 429 (with Retry-After), 5xx. Permanent: any
other 4xx. Used by every adapter that speaks plain HTTP (EHR, FHIR), so retry decisions are
made in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from shared.kernel.clock import utcnow
from shared.kernel.errors import UpstreamError, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header as seconds from now, at least 0; None when absent or unreadable.

    RFC 9110 §10.2.3: delay-seconds or an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime
    forms, which are GMT by definition). A fractional delay is accepted; an infinite one is not.
    """
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = ((when if when.tzinfo else when.replace(tzinfo=UTC)) - utcnow()).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_for_response(response: httpx.Response, *, system: str) -> UpstreamError | None:
    """None for 2xx/3xx; otherwise the error to raise for this response."""
    status = response.status_code
    if status < 400:
        return None
    if status == 429:
        return UpstreamThrottled(
            f"{system} is throttling requests.", system=system, retry_after=retry_after_seconds(response.headers)
        )
    if status == 408 or status >= 500:
        return UpstreamUnavailable(f"{system} is temporarily unavailable (HTTP {status}).", system=system)
    return UpstreamRejected(f"{system} rejected the request (HTTP {status}).", system=system, code=f"http_{status}")


def error_for_transport(exc: httpx.TransportError, *, system: str) -> UpstreamUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamUnavailable(f"{system} did not answer in time.", system=system)
    return UpstreamUnavailable(f"{system} could not be reached.", system=system)
