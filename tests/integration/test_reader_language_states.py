"""The reader's language choice travels with the states of their own round trips (``shared.kernel.reader``).

A state created or sealed while the reader has chosen a language keeps it beside the payload; consuming the state
hands it back to the request that consumes it, unless that request's reader chose one. Callers never see it in
the payload, and a state someone else opens (an interpreter's link) keeps nothing.
"""

from __future__ import annotations

import pytest

from connector.services import ROUND_TRIP_STATE_KINDS
from shared.kernel import reader
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.launch.interpreters import INTERPRETER_LINK_KIND
from shared.launch.service import CONFIRM_STATE_KIND, LAUNCH_STATE_KINDS, STATE_KIND
from shared.microsoft.entra import STATE_KIND as PORTAL_SIGNIN_KIND
from shared.storage.accounts import Storage
from shared.storage.state import READER_LANGUAGE, TABLE, StateRouter

pytestmark = pytest.mark.azurite

PAYLOAD = {"flow": "msal flow", "nested": {"a": 1}}


@pytest.fixture
def router(storage: Storage, sealer: Sealer) -> StateRouter:
    return StateRouter(storage, sealer, in_geography=LAUNCH_STATE_KINDS, round_trips=ROUND_TRIP_STATE_KINDS)


def test_the_round_trips_are_the_readers_own_sign_ins_and_launches() -> None:
    assert {PORTAL_SIGNIN_KIND, STATE_KIND, CONFIRM_STATE_KIND, "portal-ehr-signin"} <= ROUND_TRIP_STATE_KINDS
    assert INTERPRETER_LINK_KIND not in ROUND_TRIP_STATE_KINDS  # opened by the interpreter, not the clinician


def test_a_stored_state_brings_the_choice_back_to_the_request_consuming_it(router: StateRouter) -> None:
    with reader.choosing("it"):
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
    with reader.choosing(None):  # the callback: Microsoft's form_post carries no ?lang=
        assert router.consume(PORTAL_SIGNIN_KIND, state) == PAYLOAD  # the payload as it was given
        assert reader.chosen_language() == "it"
    assert reader.chosen_language() is None  # only for that request


def test_a_sealed_launch_state_brings_it_back_too(router: StateRouter) -> None:
    with reader.choosing("es"):
        state = router.seal(STATE_KIND, {"c": "config-1"}, geography=Geography.AMERICAS)
    with reader.choosing(None):
        assert router.consume_sealed(STATE_KIND, state) == {"c": "config-1"}
        assert reader.chosen_language() == "es"


def test_without_a_choice_nothing_is_kept_and_the_browsers_language_stays(router: StateRouter) -> None:
    with reader.choosing(None):
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
        assert router.consume(PORTAL_SIGNIN_KIND, state) == PAYLOAD
        assert reader.chosen_language() is None


def test_a_choice_made_on_the_consuming_request_wins(router: StateRouter) -> None:
    with reader.choosing("de"):
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
    with reader.choosing("fr"):
        router.consume(PORTAL_SIGNIN_KIND, state)
        assert reader.chosen_language() == "fr"


def test_an_interpreters_link_keeps_nothing_of_the_clinicians_choice(router: StateRouter, storage: Storage) -> None:
    with reader.choosing("it"):
        state = router.create(INTERPRETER_LINK_KIND, {"visit": "key"}, geography=Geography.EMEA)
    with reader.choosing(None):
        assert router.consume(INTERPRETER_LINK_KIND, state) == {"visit": "key"}
        assert reader.chosen_language() is None  # the interpreter's page follows their own browser


def test_a_value_that_is_not_a_language_tag_is_never_taken(router: StateRouter) -> None:
    with reader.choosing("<script>"):  # not a tag: the web edge would not give one, and nothing keeps it
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
    with reader.choosing(None):
        router.consume(PORTAL_SIGNIN_KIND, state)
        assert reader.chosen_language() is None
    forged = router.create(PORTAL_SIGNIN_KIND, {**PAYLOAD, READER_LANGUAGE: "x" * 40})  # however it got there
    with reader.choosing(None):
        assert router.consume(PORTAL_SIGNIN_KIND, forged) == PAYLOAD
        assert reader.chosen_language() is None


def test_the_choice_is_sealed_with_the_payload(router: StateRouter, storage: Storage) -> None:
    with reader.choosing("it"):
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
    row = storage.app.table(TABLE).get_entity(PORTAL_SIGNIN_KIND, state)
    assert "it" not in {str(value) for value in row.values()} and READER_LANGUAGE not in str(row["Payload"])


def test_outside_a_request_nothing_is_resumed(router: StateRouter) -> None:
    """A state consumed by no request (a timer, a tool) hands its choice to nobody: no later work inherits it."""
    with reader.choosing("it"):
        state = router.create(PORTAL_SIGNIN_KIND, PAYLOAD)
    assert router.consume(PORTAL_SIGNIN_KIND, state) == PAYLOAD
    assert reader.chosen_language() is None
