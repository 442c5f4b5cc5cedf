"""The clock: timezone-aware UTC, read in one place so every timestamp agrees."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
