"""Signed visit tokens: bound to a visit, a role and an expiry; anything else is refused."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from shared.kernel.clock import FakeClock, use_clock
from shared.kernel.errors import Forbidden
from shared.kernel.settings import Geography
from shared.visits.events import Role
from shared.visits.tokens import VisitTokens

SECRET = "s" * 40


def issue(tokens: VisitTokens, **overrides: object) -> str:
    args: dict[str, object] = {
        "geography": Geography.EMEA,
        "key": "k1",
        "role": Role.PROVIDER,
        "configuration_id": "cfg",
    }
    args.update(overrides)
    return tokens.issue(**args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    tokens = VisitTokens(SECRET)
    grant = tokens.verify(issue(tokens), visit_key="k1")
    assert (grant.geography, grant.key, grant.role, grant.configuration_id) == (
        Geography.EMEA,
        "k1",
        Role.PROVIDER,
        "cfg",
    )


def test_token_for_another_visit_is_refused() -> None:
    tokens = VisitTokens(SECRET)
    with pytest.raises(Forbidden):
        tokens.verify(issue(tokens), visit_key="k2")


def test_expired_token_is_refused_with_its_own_code() -> None:
    tokens = VisitTokens(SECRET)
    old = issue(tokens, lifetime=timedelta(minutes=5), now=time.time() - 3600)
    with pytest.raises(Forbidden) as caught:
        tokens.verify(old, visit_key="k1")
    assert caught.value.code == "visit_token_expired"


def test_forged_and_tampered_tokens_are_refused() -> None:
    tokens = VisitTokens(SECRET)
    other = VisitTokens("t" * 40)
    with pytest.raises(Forbidden):
        tokens.verify(issue(other), visit_key="k1")
    claims = jwt.decode(issue(tokens), options={"verify_signature": False})
    claims["r"] = "provider"
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(Forbidden):
        tokens.verify(unsigned, visit_key="k1")
    with pytest.raises(Forbidden):
        tokens.verify("", visit_key="k1")


def test_the_key_is_derived_not_the_raw_secret() -> None:
    token = issue(VisitTokens(SECRET))
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET, algorithms=["HS256"], audience="teams-ehr-connector/visit")


def test_patient_tokens_live_shorter() -> None:
    tokens = VisitTokens(SECRET)
    now = time.time()
    provider = jwt.decode(issue(tokens, now=now), options={"verify_signature": False})
    patient = jwt.decode(issue(tokens, role=Role.PATIENT, now=now), options={"verify_signature": False})
    assert patient["exp"] < provider["exp"]


def test_token_times_follow_the_connectors_clock() -> None:
    """Issue and expiry read ``shared.kernel.clock``, so a waiting room on a fake clock ages its token too."""
    tokens = VisitTokens(SECRET)
    with use_clock(FakeClock()) as clock:
        assert isinstance(clock, FakeClock)
        token = issue(tokens, role=Role.PATIENT)
        grant = tokens.verify(token, visit_key="k1")
        assert grant.issued_at == int(clock().timestamp())
        clock.advance(timedelta(hours=2, seconds=31))  # PATIENT_LIFETIME + leeway
        with pytest.raises(Forbidden) as caught:
            tokens.verify(token, visit_key="k1")
        assert caught.value.code == "visit_token_expired"


def test_a_token_issued_in_the_future_is_refused() -> None:
    tokens = VisitTokens(SECRET)
    future = issue(tokens, now=time.time() + 3600)
    with pytest.raises(Forbidden) as caught:
        tokens.verify(future, visit_key="k1")
    assert caught.value.code == "visit_token_invalid"
