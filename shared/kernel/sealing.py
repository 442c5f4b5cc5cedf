"""Sealed values: EHR identifiers kept at rest are encrypted, not merely hashed.

A sealed value is AES-256-GCM ciphertext under a key from ``SEALING_KEYS`` (Key Vault in Azure), bound by the
associated data to the place it is stored (``purpose``: e.g. the table, the geography and the row key), so a
sealed value copied into another row, table or geography does not open there.

Text form, safe in Table properties and queue messages::

    s1.<key id>.<base64url(nonce || ciphertext || tag)>

``key id`` is the first 8 hex digits of the SHA-256 of the key, so a value names the key that opens it.
Rotation works like the signing keys: put the new key first (it seals from then on) and keep the old one second
until every value sealed under it has expired; then drop it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.kernel.errors import SealedValueInvalid

VERSION = "s1"
KEY_BYTES = 32
NONCE_BYTES = 12  # 96-bit random nonces: safe for far more than 2**32 values per key
MAX_KEYS = 4


def parse_keys(text: str) -> tuple[bytes, ...]:
    """Keys from the setting's text: comma-separated base64 (standard or URL-safe) of 32 bytes each.

    Raises ``ValueError`` with a reason fit for the settings error (never the key material).
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("must hold at least one base64 key of 32 bytes")
    if len(parts) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} keys (the active one first, then those still being retired)")
    keys: list[bytes] = []
    for position, part in enumerate(parts, start=1):
        try:
            standard = part.replace("-", "+").replace("_", "/").rstrip("=")
            key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {position} is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {position} must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
        keys.append(key)
    if len(set(keys)) != len(keys):
        raise ValueError("the same key is listed twice")
    return tuple(keys)


def new_key_text() -> str:
    """A fresh key in the setting's form (for local settings and the deployment hook)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Sealer:
    """Seals with the first key; opens with any listed key."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self._active_id = key_id(keys[0])
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}

    @classmethod
    def from_text(cls, text: str) -> Sealer:
        return cls(parse_keys(text))

    def seal(self, plaintext: str, *, purpose: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._active_id].encrypt(nonce, plaintext.encode(), purpose.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}.{self._active_id}.{body}"

    def open(self, value: str, *, purpose: str) -> str:
        version, _, rest = value.partition(".")
        kid, _, body = rest.partition(".")
        if version != VERSION or not kid or not body:
            raise SealedValueInvalid("not a sealed value")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SealedValueInvalid("sealed under a key no longer configured")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if base64.urlsafe_b64encode(raw).decode().rstrip("=") != body:
                # Only the one spelling ``seal`` writes opens: base64 ignores a last character's unused bits, and
                # a value used once (a launch state) is marked used by its text, so no other spelling may open.
                raise ValueError("not the canonical spelling")
            plaintext = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
        except (binascii.Error, ValueError, InvalidTag):
            raise SealedValueInvalid("tampered with, or stored in another place") from None
        return plaintext.decode()

    def needs_resealing(self, value: str) -> bool:
        """True when ``value`` opens with a retiring key (callers may reseal it on their next write)."""
        return value.partition(".")[2].partition(".")[0] != self._active_id
