"""How Epic turns an FDI record into a launch: expand context tokens, append ``iss`` and ``launch``.

A record's context tokens are the query string the analyst typed, e.g.
``sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%``. Each ``%NAME%`` or ``%NAME;args%`` is
replaced by its value for this visit (unknown names expand to an empty string); literal text keeps
its meaning. The result is appended to the launch URL with ``iss`` (the FHIR base) and ``launch``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlencode


class LaunchError(ValueError):
    """A launch cannot be built (unknown record, visit or user, or a mismatch between them)."""


TOKEN = re.compile(r"%([A-Z][A-Z0-9_]*)(?:;[^%]*)?%")


def expand_value(raw: str, values: dict[str, str]) -> str:
    parts: list[str] = []
    position = 0
    for match in TOKEN.finditer(raw):
        parts.append(unquote_plus(raw[position : match.start()]))
        parts.append(values.get(match.group(1), ""))
        position = match.end()
    parts.append(unquote_plus(raw[position:]))
    return "".join(parts)


def expand_context_tokens(context_tokens: str, values: dict[str, str]) -> list[tuple[str, str]]:
    """``[(name, expanded value), …]`` in the record's order."""
    pairs = []
    for part in context_tokens.strip().lstrip("?&").split("&"):
        if not part:
            continue
        name, _, raw = part.partition("=")
        name = unquote_plus(name).strip()
        if name:
            pairs.append((name, expand_value(raw, values)))
    return pairs


def build_launch_url(launch_url: str, context: list[tuple[str, str]], iss: str, launch: str) -> str:
    query = urlencode([*context, ("iss", iss), ("launch", launch)])
    base, _, fragment = launch_url.partition("#")
    separator = "&" if "?" in base else "?"
    if base.endswith(("?", "&")):
        separator = ""
    return base + separator + query + (("#" + fragment) if fragment else "")
