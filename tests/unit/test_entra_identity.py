"""Who a validated Entra id_token names: never an unverified ``email`` claim."""

from __future__ import annotations

import pytest

from shared.kernel.errors import Unauthenticated
from shared.microsoft.entra import identity_from_claims

BASE = {"tid": "11111111-1111-4111-8111-111111111111", "oid": "a0000000-0000-4000-8000-000000000002"}


def test_the_user_name_is_the_preferred_username() -> None:
    identity = identity_from_claims({**BASE, "preferred_username": "Analyst@Contoso.example", "name": "Erin"})
    assert identity.upn == "analyst@contoso.example" and identity.object_id == BASE["oid"]


def test_the_email_claim_never_stands_in_for_the_user_name() -> None:
    """``email`` is user-editable in Entra: it must not make someone the named approver."""
    with pytest.raises(Unauthenticated) as caught:
        identity_from_claims({**BASE, "email": "analyst@contoso.example", "name": "Mallory"})
    assert caught.value.code == "no_user_name"


def test_email_does_not_override_the_upn() -> None:
    identity = identity_from_claims({**BASE, "upn": "erin@contoso.example", "email": "analyst@contoso.example"})
    assert identity.upn == "erin@contoso.example" and identity.name == "erin@contoso.example"
