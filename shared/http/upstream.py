"""Classify outbound HTTP outcomes into the connector's error hierarchy.

Retryable: transport failures, timeouts, 408, 429 (with Retry-After), 5xx. Permanent: any
other 4xx. Used by every adapter that speaks plain HTTP (EHR, FHIR), so retry decisions are
made in one place. OAuth 2 / OpenID Connect error answers (EHRs, Entra ID) are made safe to
show and log by ``sanitise_oauth_error``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

import httpx

from shared.kernel.clock import utcnow
from shared.kernel.errors import UpstreamError, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.i18n import N_

OAUTH_ERROR_MAX = 64
OAUTH_DESCRIPTION_MAX = 300


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
    return error_for_status(response.status_code, response.headers, system=system)


def error_for_status(status: int, headers: Mapping[str, str], *, system: str) -> UpstreamError | None:
    """None for 2xx/3xx; otherwise the error to raise for an answer with this status and these headers."""
    if status < 400:
        return None
    if status == 429:
        return UpstreamThrottled(
            N_("%(system)s is throttling requests.", system=system),
            system=system,
            retry_after=retry_after_seconds(headers),
        )
    if status == 408 or status >= 500:
        return UpstreamUnavailable(
            N_("%(system)s is temporarily unavailable (HTTP %(status)s).", system=system, status=status), system=system
        )
    return UpstreamRejected(
        N_("%(system)s rejected the request (HTTP %(status)s).", system=system, status=status),
        system=system,
        code=f"http_{status}",
    )


def error_for_transport(exc: httpx.TransportError, *, system: str) -> UpstreamUnavailable:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamUnavailable(N_("%(system)s did not answer in time.", system=system), system=system)
    return UpstreamUnavailable(N_("%(system)s could not be reached.", system=system), system=system)


@dataclass(frozen=True)
class OAuthErrorText:
    """An OAuth 2 error answer's ``error`` and ``error_description``, safe to put in a message, a log or a code."""

    code: str
    description: str


def sanitise_oauth_error(error: object, description: object = None) -> OAuthErrorText:
    """The safe form of an ``error`` / ``error_description`` pair that a remote server (or a browser) sent us.

    ``code``: ASCII letters, digits and ``_ - .`` only, at most 64, ``unknown_error`` when nothing is left.
    ``description``: printable ASCII without quote or backslash (RFC 6749 §5.2), at most 300, "" when absent.
    """
    code = "".join(c for c in str(error or "") if c.isascii() and (c.isalnum() or c in "_-."))[:OAUTH_ERROR_MAX]
    text = description if isinstance(description, str) else ""
    safe = "".join(c for c in text if " " <= c <= "~" and c not in '"\\')
    return OAuthErrorText(code=code or "unknown_error", description=safe.strip()[:OAUTH_DESCRIPTION_MAX])
