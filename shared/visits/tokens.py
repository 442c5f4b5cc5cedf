"""Signed visit tokens: how a provider page or a patient's waiting page proves which visit it may see.

Epic's embedded browsers drop cookies, so the visit pages carry their authority in the URL:
an HS256 JWT (PyJWT) under a key derived from ``CONNECTOR_SECRET`` for this purpose only,
naming the visit (geography + key), the role and an expiry. Pages send it back as ``?t=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import jwt

from shared.kernel.clock import utcnow
from shared.kernel.errors import Forbidden
from shared.kernel.i18n import N_
from shared.kernel.identifiers import keyed_id
from shared.kernel.settings import Geography
from shared.visits.events import Role

AUDIENCE = "teams-ehr-connector/visit"
ALGORITHM = "HS256"
PROVIDER_LIFETIME = timedelta(hours=12)
PATIENT_LIFETIME = timedelta(hours=2)
# A patient's email/SMS join link (Oracle Health: patients join "from email or SMS notifications"): a patient
# token for one visit, issued from the clinician's page, valid long enough to be sent ahead of the call.
JOIN_LINK_LIFETIME = timedelta(hours=12)
LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class VisitGrant:
    """What a valid token allows: ``role`` may see visit ``key`` in ``geography``."""

    geography: Geography
    key: str
    role: Role
    configuration_id: str
    expires_at: int
    issued_at: int = 0  # when the launch issued it: for a patient, when they started waiting


class VisitTokens:
    def __init__(self, connector_secret: str) -> None:
        # A derived key: a visit token can never be confused with any other HMAC the connector makes.
        self._key = keyed_id(connector_secret, "visit-token-key")

    def issue(
        self,
        *,
        geography: Geography,
        key: str,
        role: Role,
        configuration_id: str,
        lifetime: timedelta | None = None,
        now: float | None = None,
    ) -> str:
        issued = int(now if now is not None else utcnow().timestamp())
        ttl = lifetime or (PROVIDER_LIFETIME if role is not Role.PATIENT else PATIENT_LIFETIME)
        claims = {
            "aud": AUDIENCE,
            "iat": issued,
            "exp": issued + int(ttl.total_seconds()),
            "g": geography.value,
            "v": key,
            "r": role.value,
            "c": configuration_id,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, *, visit_key: str) -> VisitGrant:
        """The grant of a valid token for ``visit_key``; anything else raises ``Forbidden``."""
        if not token or len(token) > 2048:
            raise _denied()
        try:
            # Times are checked below against the connector's one clock (``shared.kernel.clock``), not PyJWT's.
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={
                    "require": ["aud", "exp", "iat", "g", "v", "r", "c"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            issued, expires = int(claims["iat"]), int(claims["exp"])
        except (jwt.PyJWTError, TypeError, ValueError):
            raise _denied() from None
        now = utcnow().timestamp()
        if issued > now + LEEWAY_SECONDS:
            raise _denied()
        if expires <= now - LEEWAY_SECONDS:
            raise Forbidden(
                N_("This visit link has expired. Please launch the visit again from Epic or MyChart."),
                code="visit_token_expired",
            )
        if claims["v"] != visit_key:
            raise _denied()
        try:
            return VisitGrant(
                geography=Geography(claims["g"]),
                key=str(claims["v"]),
                role=Role(claims["r"]),
                configuration_id=str(claims["c"]),
                expires_at=int(claims["exp"]),
                issued_at=int(claims["iat"]),
            )
        except (ValueError, TypeError):
            raise _denied() from None


def _denied() -> Forbidden:
    return Forbidden(
        N_("This visit link is not valid. Please launch the visit again from Epic or MyChart."),
        code="visit_token_invalid",
    )
