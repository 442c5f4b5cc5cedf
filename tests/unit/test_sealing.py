"""Sealed values: AES-256-GCM round trip, binding to their place, tampering, and key rotation."""

from __future__ import annotations

import base64
import os

import pytest

from shared.kernel.errors import SealedValueInvalid, StoredDataError
from shared.kernel.sealing import Sealer, key_id, new_key_text, parse_keys

PURPOSE = "Visits.Context|emea|visit-key-1"


def _key() -> bytes:
    return os.urandom(32)


def test_round_trip_hides_the_plaintext() -> None:
    sealer = Sealer([_key()])
    sealed = sealer.seal("Encounter/e-enc-123|CSN 998877", purpose=PURPOSE)
    assert "e-enc-123" not in sealed and "998877" not in sealed
    assert sealed.startswith("s1.")
    assert sealer.open(sealed, purpose=PURPOSE) == "Encounter/e-enc-123|CSN 998877"


def test_each_seal_is_different() -> None:
    sealer = Sealer([_key()])
    assert sealer.seal("same", purpose=PURPOSE) != sealer.seal("same", purpose=PURPOSE)


def test_a_value_moved_to_another_place_does_not_open() -> None:
    sealer = Sealer([_key()])
    sealed = sealer.seal("Patient/p-1", purpose=PURPOSE)
    with pytest.raises(SealedValueInvalid):
        sealer.open(sealed, purpose="Visits.Context|americas|visit-key-1")


@pytest.mark.parametrize("position", [3, 12, 20, -1])
def test_a_tampered_value_does_not_open(position: int) -> None:
    sealer = Sealer([_key()])
    sealed = sealer.seal("Patient/p-1", purpose=PURPOSE)
    prefix, body = sealed.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position] ^= 0x01
    tampered = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(SealedValueInvalid) as caught:
        sealer.open(tampered, purpose=PURPOSE)
    assert isinstance(caught.value, StoredDataError)
    assert "Patient" not in caught.value.message


@pytest.mark.parametrize("value", ["", "plain text", "s1.", "s1.abcdef12.", "s2.abcdef12.AAAA", "s1.abcdef12.!!!!"])
def test_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(SealedValueInvalid):
        Sealer([_key()]).open(value, purpose=PURPOSE)


def test_rotation_new_key_seals_old_key_still_opens() -> None:
    old, new = _key(), _key()
    before = Sealer([old]).seal("Practitioner/pr-1", purpose=PURPOSE)
    rotating = Sealer([new, old])
    assert rotating.open(before, purpose=PURPOSE) == "Practitioner/pr-1"
    assert rotating.needs_resealing(before)
    after = rotating.seal("Practitioner/pr-1", purpose=PURPOSE)
    assert after.split(".")[1] == key_id(new)
    assert not rotating.needs_resealing(after)
    retired = Sealer([new])
    assert retired.open(after, purpose=PURPOSE) == "Practitioner/pr-1"
    with pytest.raises(SealedValueInvalid, match="no longer configured"):
        retired.open(before, purpose=PURPOSE)


def test_setting_text_parses_standard_and_url_safe_base64() -> None:
    key = _key()
    standard = base64.b64encode(key).decode()
    url_safe = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert parse_keys(standard) == (key,)
    assert parse_keys(f" {url_safe} , {new_key_text()} ")[0] == key
    assert len(base64.urlsafe_b64decode(new_key_text() + "=")) == 32


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one"),
        ("not base64 at all!", "not base64"),
        (base64.b64encode(b"too short").decode(), "32 bytes"),
        (",".join([new_key_text()] * 5), "at most"),
    ],
)
def test_setting_text_errors_say_why_without_the_key(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_keys(text)
    for part in filter(None, text.split(",")):
        assert part not in str(caught.value)


def test_the_same_key_twice_is_refused() -> None:
    key = new_key_text()
    with pytest.raises(ValueError, match="twice"):
        parse_keys(f"{key},{key}")


def test_only_the_spelling_seal_wrote_opens() -> None:
    """base64 ignores a last character's unused bits; a value used once is marked used by its text, so another
    spelling of the same bytes must not open (it would make a single-use launch state usable again)."""
    sealer = Sealer([_key()])
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelled = 0
    for size in range(1, 9):  # every length mod 3, so some bodies end in a character with unused bits
        value = sealer.seal("x" * size, purpose="p")
        assert sealer.open(value, purpose="p") == "x" * size
        for other in alphabet.replace(value[-1], ""):
            variant = value[:-1] + other
            body = variant.rsplit(".", 1)[1]
            if base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) == base64.urlsafe_b64decode(
                value.rsplit(".", 1)[1] + "=" * (-len(body) % 4)
            ):
                respelled += 1
            with pytest.raises(SealedValueInvalid):
                sealer.open(variant, purpose="p")
    assert respelled > 0  # the case the check exists for did occur
