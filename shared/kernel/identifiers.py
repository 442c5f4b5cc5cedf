"""Keyed, one-way identifiers: stored keys reveal no EHR identifiers.

Every derived identifier is an HMAC-SHA256 under ``CONNECTOR_SECRET`` with a purpose label,
so a key made for one use can never collide with or stand in for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def keyed_id(secret: str, purpose: str, *parts: str) -> str:
    """A stable 64-hex-character id for ``parts`` under ``purpose`` (Table-key safe)."""
    message = "\x1f".join((purpose, *parts)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def log_id(value: str) -> str:
    """A short unkeyed fingerprint for correlating logs without printing the value."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def random_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe token (default 256 bits)."""
    return secrets.token_urlsafe(nbytes)
