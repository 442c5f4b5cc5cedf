"""What a patient's page may say: plain words, never the words of whoever configures or fixes the connector."""

from __future__ import annotations

import re

from shared.kernel.errors import (
    BadRequest,
    ConnectorError,
    Forbidden,
    NotFound,
    StateError,
    StorageUnavailable,
    UpstreamThrottled,
    UpstreamUnavailable,
)
from shared.launch.service import ConfigurationPending, EhrSignInRejected, TenantConfigNotFound, WrongTenant
from shared.microsoft.teams import AccessPolicyMissing

# Configuration and integration vocabulary a patient must never meet (the page's visible text, whole words).
TECHNICAL_WORDS = re.compile(
    r"\b(EHR|FHIR|FDI|iss|configuration|config|tenant|PowerShell|OAuth2?|SMART|client id|scope|token|Epic|"
    r"Graph|access policy|Grant-CsApplicationAccessPolicy|New-CsApplicationAccessPolicy|connector|stack|"
    r"traceback|correlation)\b",
    re.IGNORECASE,
)
_HIDDEN = re.compile(r"<(script|style)\b.*?</\1>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")


def visible_text(html: str) -> str:
    """The text a person reads: no tags, scripts, styles or attribute values."""
    return " ".join(_TAG.sub(" ", _HIDDEN.sub(" ", html)).split())


def technical_words(text: str) -> list[str]:
    return sorted({m.group(0) for m in TECHNICAL_WORDS.finditer(text)})


def assert_patient_words(html: str) -> None:
    found = technical_words(visible_text(html))
    assert not found, f"a patient's page says {found}"


# Every error a launch can end with, as a patient would meet it.
PATIENT_CASES: list[tuple[ConnectorError, str]] = [
    (TenantConfigNotFound(), "Please call your clinic"),
    (ConfigurationPending(), "Please call your clinic"),
    (AccessPolicyMissing("b0000000-0000-4000-8000-000000000001"), "Please call your clinic"),
    (EhrSignInRejected("unauthorized_client"), "Please call your clinic"),
    (WrongTenant(), "Please call your clinic"),
    (StateError("used"), "This link has expired"),
    (Forbidden("x", code="visit_token_expired"), "This link has expired"),
    (NotFound("gone", code="visit_gone"), "This video visit has ended"),
    (UpstreamUnavailable("The EHR could not be reached.", system="EHR"), "try again in a minute"),
    (UpstreamThrottled("busy", system="Microsoft Graph"), "try again in a minute"),
    (StorageUnavailable("down"), "try again in a minute"),
    (BadRequest("The launch request could not be read."), "Please call your clinic"),
]
