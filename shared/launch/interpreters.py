"""Interpreter guest links: issued from the clinician's page, signed, time-bound and usable once.

An interpreter without an EHR account (an agency's, say) joins through a link the clinician issues on the
provider page, whose own token the EHR vouched for at the provider launch. The link is:

* **signed**: an HS256 JWT under a key derived from ``CONNECTOR_SECRET`` for this purpose only, with its own
  audience, so it can never open a visit page (``shared.visits.tokens``) nor be made by anyone else;
* **time-bound**: valid ``LINK_LIFETIME`` from its issue, on the connector's one clock;
* **single-use**: its ``j`` claim is a state row (``INTERPRETER_LINK_KIND``, in the configuration's geography,
  holding only the visit's key) that the first opening consumes; a second opening, or one after the expiry,
  is refused and changes nothing.

Opening it shows a page that sends the interpreter to the meeting's lobby and asks them to join under the name
"Interpreter", which is what Teams shows the organizer in the lobby; an interpreter is admitted like anyone else.
The link names no patient, and the page shows nothing about who is in the meeting.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import jwt

from shared.kernel.clock import utcnow
from shared.kernel.errors import ErrorPage, Forbidden, StateError
from shared.kernel.i18n import N_
from shared.kernel.identifiers import keyed_id, log_id
from shared.kernel.settings import Geography
from shared.storage.state import StateRouter

logger = logging.getLogger(__name__)

INTERPRETER_LINK_KIND = "interpreter-link"
LINK_LIFETIME = timedelta(hours=2)
AUDIENCE = "teams-ehr-connector/interpreter"
ALGORITHM = "HS256"
MAX_TOKEN = 2048


class InterpreterLinkRefused(Forbidden):
    """Used before, expired, or not ours: the interpreter asks the clinician for a new link."""

    code = "interpreter_link_refused"
    page = ErrorPage(
        N_("This interpreter link cannot be used"),
        N_("This link has already been used, has expired, or is not valid, so it was not opened."),
        help=(N_("Ask the clinician for a new interpreter link: each link opens the meeting once."),),
    )

    def __init__(self, why: str) -> None:
        super().__init__(N_("This interpreter link has been used, has expired, or is not valid."))
        self.why = why


@dataclass(frozen=True)
class InterpreterPass:
    """What an opened link allows: the interpreter may be sent to this visit's lobby, once."""

    geography: Geography
    key: str
    configuration_id: str


class InterpreterLinks:
    def __init__(self, connector_secret: str, states: StateRouter) -> None:
        self._key = keyed_id(connector_secret, "interpreter-link-key")
        self._states = states

    def issue(self, *, geography: Geography, key: str, configuration_id: str) -> str:
        """A fresh link token for the visit ``key`` (each press of the clinician's button makes another)."""
        now = utcnow()
        single_use = self._states.create(INTERPRETER_LINK_KIND, {"v": key}, ttl=LINK_LIFETIME, geography=geography)
        claims = {
            "aud": AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + LINK_LIFETIME).timestamp()),
            "g": geography.value,
            "v": key,
            "c": configuration_id,
            "j": single_use,
        }
        logger.info("Interpreter link issued for visit %s", log_id(key))
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def redeem(self, visit_key: str, token: str) -> InterpreterPass:
        """Check the signature, the expiry and the visit, then use the link up; anything else is refused."""
        if not token or len(token) > MAX_TOKEN:
            raise InterpreterLinkRefused("malformed")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["aud", "exp", "iat", "g", "v", "c", "j"], "verify_exp": False},
            )
            expires, geography = int(claims["exp"]), Geography(claims["g"])
        except (jwt.PyJWTError, TypeError, ValueError):
            raise InterpreterLinkRefused("signature") from None
        if expires <= utcnow().timestamp():
            raise InterpreterLinkRefused("expired")
        if claims["v"] != visit_key:
            raise InterpreterLinkRefused("another_visit")
        try:
            held = self._states.consume(INTERPRETER_LINK_KIND, str(claims["j"]))
        except StateError as exc:
            logger.info("Interpreter link refused for visit %s: %s", log_id(visit_key), exc.code)
            raise InterpreterLinkRefused("used") from None
        if held.get("v") != visit_key:
            raise InterpreterLinkRefused("another_visit")
        logger.info("Interpreter link used for visit %s (%s)", log_id(visit_key), _fingerprint(token))
        return InterpreterPass(geography, visit_key, str(claims["c"]))


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]
