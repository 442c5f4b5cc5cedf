"""A person's display name from a FHIR resource's ``name`` (HumanName), for showing on a page, never for storing.

FHIR R4 HumanName: ``use`` (usual, official, temp, nickname, anonymous, old, maiden), ``text`` (the whole name
as it should be shown), ``prefix`` / ``given`` / ``family`` / ``suffix``, ``period``. Preference: a current
``usual`` name, then ``official``, then any current name that is not ``old``, ``maiden`` or ``anonymous``;
``text`` wins over the parts. Control characters are dropped and the result is capped, because the EHR is an
outside system and the name goes onto a page (autoescaped there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_NAME = 120
_USE_ORDER = ("usual", "official", None, "temp", "nickname")  # None = a name without ``use``
_NEVER = frozenset({"old", "maiden", "anonymous"})


def display_name(resource: Mapping[str, Any]) -> str | None:
    """``Dr. Morgan Lee`` for a Practitioner/Patient/RelatedPerson, or None when it carries no usable name."""
    names = [n for n in resource.get("name") or () if isinstance(n, Mapping) and n.get("use") not in _NEVER]
    for use in _USE_ORDER:
        for name in names:
            if name.get("use") == use and not _ended(name):
                shown = _shown(name)
                if shown:
                    return shown
    return None


def _ended(name: Mapping[str, Any]) -> bool:
    period = name.get("period")
    return isinstance(period, Mapping) and bool(period.get("end"))


def _shown(name: Mapping[str, Any]) -> str | None:
    text = name.get("text")
    if isinstance(text, str) and _clean(text):
        return _clean(text)
    parts = [*_strings(name.get("prefix")), *_strings(name.get("given")), *_strings(name.get("family"))]
    parts += _strings(name.get("suffix"))
    return _clean(" ".join(parts)) or None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


def _clean(value: str) -> str:
    printable = "".join(c if c.isprintable() else " " for c in value)
    return " ".join(printable.split())[:MAX_NAME]
