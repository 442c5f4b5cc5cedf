"""What a patient's page may say: plain words, never the words of whoever configures or fixes the connector."""

from __future__ import annotations

import re

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
