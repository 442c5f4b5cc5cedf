"""OAuth 2 / OpenID Connect error answers are made safe before any message, log line or code uses them."""

from __future__ import annotations

from typing import Any

import pytest

from shared.ehr.smart import OAuthError
from shared.http.upstream import sanitise_oauth_error


def test_a_well_formed_error_passes_unchanged() -> None:
    safe = sanitise_oauth_error("invalid_grant", "PKCE verification failed")
    assert (safe.code, safe.description) == ("invalid_grant", "PKCE verification failed")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("<script>alert(1)</script>", "scriptalert1script"),
        ("invalid_client\r\nSet-Cookie: x=1", "invalid_clientSet-Cookiex1"),
        ("ìnvalid_grant", "nvalid_grant"),  # letters outside ASCII are dropped, not passed on
        ("x" * 500, "x" * 64),
        ("", "unknown_error"),
        (None, "unknown_error"),
        ("<>", "unknown_error"),
    ],
)
def test_the_code_keeps_only_ascii_letters_digits_and_separators(error: Any, code: str) -> None:
    assert sanitise_oauth_error(error).code == code


def test_the_description_is_printable_ascii_and_bounded() -> None:
    assert sanitise_oauth_error("e", 'say "hi"\\\n\x00 <b>now</b>').description == "say hi <b>now</b>"
    assert len(sanitise_oauth_error("e", "d" * 1000).description) == 300
    assert sanitise_oauth_error("e", None).description == ""
    assert sanitise_oauth_error("e", ["not", "text"]).description == ""


def test_the_ehr_oauth_error_carries_the_safe_forms() -> None:
    error = OAuthError("access_denied\n<x>", "user\x07 cancelled")
    assert (error.code, error.error, error.description) == ("access_deniedx", "access_deniedx", "user cancelled")
    assert error.message == "OAuth2 error from the EHR: access_deniedx"
