"""Reading an EHR launch request and the EHR's authorization response, strictly.

Epic calls the launch URL with ``iss`` and ``launch`` (GET, or POST form), plus the context
tokens the integration record appends (``sessionId=%CSN%``, ``departmentId=%PERFDEPID...%``).

``launch`` is opaque and may be a long JWT or base64 text containing ``+``: it is
percent-decoded but never form-decoded (``+`` stays ``+``), and a space — what an
intermediary's form-decoding turned a ``+`` into — is turned back. Missing, empty or repeated
parameters are refused rather than guessed at.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from shared.kernel.errors import BadRequest
from shared.kernel.i18n import N_

MAX_ISS = 2048
MAX_LAUNCH = 8192
MAX_CONTEXT = 256
MAX_BODY = 64 * 1024
# Parameters we read; any other parameter an EHR appends is ignored.
_LAUNCH_NAMES = frozenset({"iss", "launch", "sessionId", "departmentId", "conferenceId"})
# ``%CSN%``, ``%PERFDEPID;;; ; ;;NONE;%``: a context token Epic did not substitute.
_UNSUBSTITUTED = re.compile(r"%[A-Za-z][A-Za-z0-9_]*(?:;[^%]*)?%")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # one C-level scan, not a Python loop per character
_CALLBACK_NAMES = frozenset({"code", "state", "error", "error_description", "error_uri", "iss"})


class LaunchKind(enum.StrEnum):
    PROVIDER = "provider"
    PATIENT = "patient"


class InvalidLaunch(BadRequest):
    code = "invalid_launch"


@dataclass(frozen=True)
class LaunchParams:
    iss: str
    launch: str
    session_id: str | None = None  # the CSN
    department_id: str | None = None
    conference_id: str | None = None  # a group visit's %CONFERENCEID% (group-visit records only)

    def __repr__(self) -> str:  # the launch token never reaches logs
        return f"LaunchParams(iss={self.iss!r}, session_id={'set' if self.session_id else None})"


@dataclass(frozen=True)
class AuthorizationResponse:
    state: str
    code: str | None = None
    error: str | None = None
    error_description: str | None = None

    def __repr__(self) -> str:
        return f"AuthorizationResponse(error={self.error!r})"


def parse_launch(query: str, body: str | None = None) -> LaunchParams:
    """The launch parameters from the raw query string and, for POST, the raw form body."""
    if body is not None and len(body) > MAX_BODY:
        raise InvalidLaunch(N_("The launch request is too large."))
    values = _collect(_LAUNCH_NAMES, query, body, keep_plus={"launch"}, what="launch")
    iss = values.get("iss", "").strip()
    launch = values.get("launch", "").strip().replace(" ", "+")
    missing = [name for name, value in (("iss", iss), ("launch", launch)) if not value]
    if missing:
        raise InvalidLaunch(
            N_(
                "The launch request is missing %(names)s. Start the visit from the EHR "
                "(the launch URL must be opened by Epic, which adds these parameters).",
                names=", ".join(missing),
            ),
            code="launch_parameter_missing",
        )
    if len(iss) > MAX_ISS or len(launch) > MAX_LAUNCH:
        raise InvalidLaunch(N_("The launch request has an over-long parameter."))
    return LaunchParams(
        iss=iss,
        launch=launch,
        session_id=context_value(values.get("sessionId")),
        department_id=context_value(values.get("departmentId")),
        conference_id=context_value(values.get("conferenceId")),
    )


def parse_authorization_response(query: str) -> AuthorizationResponse:
    values = _collect(_CALLBACK_NAMES, query, None, keep_plus={"code", "state"}, what="sign-in response")
    state = values.get("state", "")
    if not state:
        raise InvalidLaunch(
            N_("The EHR's response is missing its state. Please launch the visit again from Epic."),
            code="state_missing",
        )
    error = values.get("error") or None
    code = values.get("code") or None
    if error is None and code is None:
        raise InvalidLaunch(N_("The EHR's response carries neither a code nor an error."), code="code_missing")
    return AuthorizationResponse(
        state=state, code=code, error=error, error_description=(values.get("error_description") or None)
    )


def _collect(names: frozenset[str], query: str, body: str | None, *, keep_plus: set[str], what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, raw in _pairs(query, body or ""):
        if name not in names:
            continue
        if name in found:
            raise InvalidLaunch(
                N_("The %(what)s repeats the parameter %(name)s.", what=what, name=repr(name)),
                code="parameter_repeated",
            )
        try:
            value = unquote(raw, errors="strict") if name in keep_plus else unquote_plus(raw, errors="strict")
        except UnicodeDecodeError:
            raise InvalidLaunch(
                N_("The %(what)s has an unreadable %(name)s parameter.", what=what, name=repr(name))
            ) from None
        if _CONTROL.search(value):
            raise InvalidLaunch(N_("The %(what)s has an invalid %(name)s parameter.", what=what, name=repr(name)))
        found[name] = value
    return found


def _pairs(*sources: str) -> Iterable[tuple[str, str]]:
    for source in sources:
        for item in source.split("&"):
            if not item:
                continue
            name, _, raw = item.partition("=")
            try:
                yield unquote_plus(name, errors="strict"), raw
            except UnicodeDecodeError:
                raise InvalidLaunch(N_("The request could not be read.")) from None


def context_value(value: str | None) -> str | None:
    """A context token's value, or None when it carries none.

    Epic fills a context token it cannot substitute with the record's default text (``NONE``) or
    leaves it as written (``%CSN%``); an empty value is no value either. Taking any of these for
    an id would make every such launch the same appointment. Used alike for the launch URL's
    tokens and the token response's fields.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or value.upper() == "NONE" or len(value) > MAX_CONTEXT or _UNSUBSTITUTED.search(value):
        return None
    return value
