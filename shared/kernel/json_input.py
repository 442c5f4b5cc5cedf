"""Parsing JSON that someone else wrote: a refusal for anything malformed, never a crash.

``json.loads`` raises ``RecursionError`` (not ``ValueError``) on deeply nested input such as
``[[[[…`` a few thousand levels deep, and accepts nesting just under the interpreter's
recursion limit, which then breaks whatever walks the value next. Every parse of outside input
(webhook bodies, EHR documents, queue messages, our own stored JSON) goes through
``parse_json``, which turns every way a text can fail to be JSON, and nesting deeper than
``MAX_DEPTH``, into one ``MalformedJson`` (a ``ValueError``) that callers map to a 400 or a refusal.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # FHIR resources, Graph notifications and OAuth documents nest a dozen levels at most


class MalformedJson(ValueError):
    """The text is not JSON (nor in an encoding JSON allows: UTF-8, -16 or -32), or nests deeper than ``MAX_DEPTH``."""


def parse_json(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed value; ``MalformedJson`` for anything that is not JSON of an acceptable depth."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError, TypeError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise MalformedJson("not JSON") from None
    if _openings(data) > max_depth and _deeper_than(value, max_depth):
        raise MalformedJson(f"nested deeper than {max_depth} levels")
    return value


def _openings(data: str | bytes | bytearray) -> int:
    """How many ``[`` and ``{`` the text holds: no value nests deeper than that (a bracket inside a string only
    counts one more), so a text with no more than the limit needs no walk of its value (queue messages, tokens)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels (iteratively: the check itself cannot recurse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
