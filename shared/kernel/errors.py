"""The connector's one exception hierarchy, and the page an error ends a request with.

Every error the product raises on purpose is a ``ConnectorError`` with one HTTP status. What
its page says is the error's own ``page`` when it means one thing wherever it surfaces (a
launch URL naming no configuration); a general error (an expired ``state``, an unreachable
upstream) is explained by the page book of the blueprint it ends in, because a patient in
the middle of a launch needs other words than an administrator in the portal. Both are
rendered in one place (``connector/web.py``); nothing else decides what a user sees.

    ConnectorError
    ├── ConfigurationError          settings missing or invalid (names every key)
    ├── BadRequest                  malformed or oversized input from a caller
    │   └── UnsafeUrl               a user-supplied URL we refuse to fetch
    ├── Unauthenticated             no or expired session / sign-in
    │   └── SignInRequired          a page needs a portal session: browsers are sent to sign in
    ├── Forbidden                   signed in, but not allowed
    ├── NotFound                    no such thing (or not yours to see)
    ├── Conflict                    concurrent edit lost an etag race, duplicate entry
    ├── StateError                  OAuth state unknown, expired or already used
    ├── UpstreamError               an external system failed us
    │   ├── UpstreamUnavailable     unreachable, timed out or 5xx (retryable)
    │   ├── UpstreamThrottled       429 with an optional Retry-After (retryable)
    │   └── UpstreamRejected        a definite "no" (OAuth error, 4xx; not retryable)
    ├── StorageUnavailable          Table/Queue storage unreachable (retryable)
    └── StoredDataError             a stored row cannot be read (a server fault, not the caller's)
        └── SealedValueInvalid      a sealed value does not open (tampered, moved, or its key retired)

``message`` is always safe to show a user: it never holds secrets, tokens or patient data.

Who reads the page is the error's ``audience`` when the code that raised it knew (a launch state's
kind, a visit token's role: ``speaking_to``); otherwise the route decides. A patient is never shown
an error's own page: those are written for whoever can fix the cause.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from shared.kernel.i18n import N_


class Audience(enum.StrEnum):
    """Who is at the screen when a request fails: a patient gets plain, kind words; a clinician the details."""

    PATIENT = "patient"
    CLINICIAN = "clinician"


@dataclass(frozen=True)
class ErrorPage:
    """What a person is shown when an error ends their request.

    ``title`` and ``message`` are plain words for whoever is at the screen (a patient, a
    clinician, an administrator); ``help`` (what to check or do) and ``code_block`` (a command
    to run) are for the analyst or administrator who can fix the cause. Like ``message``, none
    of it may hold a secret, a token or patient data.
    """

    title: str
    message: str
    help: tuple[str, ...] = ()
    code_block: str | None = None
    retry: bool = False  # the page offers "Try again" (reloading the same address can help)


class ConnectorError(Exception):
    """Base of every deliberate error. ``message`` is safe to show to users; ``page``, when set, is its own page."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False
    page: ErrorPage | None = None
    audience: Audience | None = None  # set by ``speaking_to`` where the code knows who is at the screen

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


@contextmanager
def speaking_to(audience: Audience) -> Iterator[None]:
    """Errors raised inside are for ``audience`` (unless an inner block already said whose they are)."""
    try:
        yield
    except ConnectorError as exc:
        if exc.audience is None:
            exc.audience = audience
        raise


class ConfigurationError(ConnectorError):
    """Settings are missing or invalid; ``problems`` names each key and why."""

    status = 503
    code = "configuration_error"

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(sorted(problems.items()))
        listing = "; ".join(f"{key}: {why}" for key, why in self.problems.items())
        super().__init__(f"Invalid or missing settings: {listing}")


class BadRequest(ConnectorError):
    status = 400
    code = "bad_request"


class UnsafeUrl(BadRequest):
    code = "unsafe_url"


class Unauthenticated(ConnectorError):
    status = 401
    code = "unauthenticated"


class SignInRequired(Unauthenticated):
    """A portal page was asked for without a session; pages answer with a redirect to ``signin_url``."""

    code = "signin_required"

    def __init__(self, signin_url: str) -> None:
        super().__init__("Please sign in to continue.")
        self.signin_url = signin_url


class Forbidden(ConnectorError):
    status = 403
    code = "forbidden"


class NotFound(ConnectorError):
    status = 404
    code = "not_found"


class Conflict(ConnectorError):
    status = 409
    code = "conflict"


class StateError(ConnectorError):
    """OAuth ``state`` (or any single-use token) is unknown, expired or already consumed."""

    status = 400
    code = "invalid_state"


class UpstreamError(ConnectorError):
    status = 502
    code = "upstream_error"

    def __init__(self, message: str, *, system: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.system = system


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"
    retryable = True


class UpstreamThrottled(UpstreamError):
    status = 503
    code = "upstream_throttled"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        system: str,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, system=system, code=code)
        self.retry_after = retry_after


class UpstreamRejected(UpstreamError):
    status = 502
    code = "upstream_rejected"


class StorageUnavailable(ConnectorError):
    status = 503
    code = "storage_unavailable"
    retryable = True


class StoredDataError(ConnectorError):
    """A row in storage is malformed (hand-edited, or written by an incompatible version): a server fault."""

    status = 500
    code = "stored_data_error"


class SealedValueInvalid(StoredDataError):
    """A sealed value that does not open: tampered with, moved to another place, or sealed under a retired key."""

    code = "sealed_value_invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(N_("A stored value could not be opened (%(reason)s).", reason=reason))
        self.reason = reason


class InvalidEvent(BadRequest):
    """A queue message that is not a valid event: permanent, never worth a retry."""

    code = "invalid_event"


class AlreadyWritten(Exception):  # noqa: N818 - an outcome, not a failure
    """The event's EHR effect is already recorded."""


class ClaimedElsewhere(Exception):  # noqa: N818
    """Another worker holds a live claim on this event."""


class InvalidIdToken(Exception):
    """The id_token failed validation; ``reason`` is safe to show (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
