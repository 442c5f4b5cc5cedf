"""Parse Graph's ISO 8601 timestamps (``Z`` or offsets, up to seven fractional digits) to aware UTC."""

from __future__ import annotations

import datetime as dt
import re

_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def parse_time(value: str) -> dt.datetime:
    """Raise ``ValueError`` unless ``value`` is a date-time; naive values are taken as UTC (Graph does)."""
    text = _FRACTION.sub(r"\1", value.strip(), count=1)
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
