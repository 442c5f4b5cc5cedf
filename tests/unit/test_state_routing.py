"""Where a state row lives: the geography tag of a launch's state, and the router that reads it before any lookup.

The accounts here point at a port nothing listens on: a refusal that looked anything up would surface as
``StorageUnavailable``, so each ``StateError`` below also proves that nothing was read, anywhere.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import pytest

from sandbox.local_settings import local_values
from shared.kernel.errors import BadRequest, StateError, StorageUnavailable
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography, Settings
from shared.launch.service import (
    CONFIRM_STATE_KIND,
    INTRO_STATE_KIND,
    LAUNCH_STATE_KINDS,
    SIGNIN_STATE_KIND,
    STATE_KIND,
    LaunchService,
)
from shared.microsoft.entra import STATE_KIND as PORTAL_SIGNIN_KIND
from shared.storage.accounts import Storage
from shared.storage.state import GEOGRAPHY_TAGS, StateRouter, geography_state, state_geography

DEAD_PORT_BASE = 9  # discard, and the two ports after it: nothing answers there
TOKEN = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")  # fixed: test ids must not vary


@pytest.fixture
def router() -> StateRouter:
    """Americas and emea configured, apac not (as in a deployment without an apac account)."""
    env = {k: v for k, v in local_values(DEAD_PORT_BASE).items() if k != "STORAGE_APAC"}
    return StateRouter(
        Storage(Settings.from_env(env)), Sealer.from_text(new_key_text()), in_geography=LAUNCH_STATE_KINDS
    )


# --- the tag ---------------------------------------------------------------------------------------


def test_every_geography_has_its_own_fixed_two_letter_tag() -> None:
    assert dict(GEOGRAPHY_TAGS) == {Geography.AMERICAS: "am", Geography.EMEA: "eu", Geography.APAC: "ap"}
    assert set(GEOGRAPHY_TAGS) == set(Geography)  # a new geography cannot ship without one


@pytest.mark.parametrize("geography", list(Geography))
def test_a_geography_state_names_its_geography_and_keeps_256_random_bits(geography: Geography) -> None:
    states = {geography_state(geography) for _ in range(100)}
    assert len(states) == 100
    for state in states:
        tag, separator, token = state.partition(".")
        assert (tag, separator) == (GEOGRAPHY_TAGS[geography], ".")
        assert len(base64.urlsafe_b64decode(token + "=")) == 32
        assert state_geography(state) is geography
        assert quote(state, safe="") == state  # URL-safe: travels through Epic and Entra ID unencoded
        assert len(state) == 46


@pytest.mark.parametrize(
    "state",
    [
        "",
        TOKEN,  # no tag: a state of the app's account
        "eu",
        "eu.",
        f"eu{TOKEN}",  # no separator
        f".{TOKEN}",  # an empty tag
        f"xx.{TOKEN}",  # a tag of no geography
        f"EU.{TOKEN}",  # tags are exact
        f"emea.{TOKEN}",  # the geography's name is no tag
        f"eu..{TOKEN}",
        f"eu.{TOKEN}.am",  # one tag only
        f"am.eu.{TOKEN}",
        "eu.short",  # too little randomness after the tag
        "eu." + "a" * 200,
        f"eu.{TOKEN[:-2]}/x",  # not a Table key
        f"eu.{TOKEN[:-2]}é",
        f" eu.{TOKEN}",
    ],
)
def test_a_missing_unknown_or_malformed_tag_names_no_geography(state: str) -> None:
    assert state_geography(state) is None


# --- consuming: the tag routes, before anything is read ---------------------------------------------


@pytest.mark.parametrize("kind", sorted(LAUNCH_STATE_KINDS))
@pytest.mark.parametrize(
    "state",
    [
        "",
        TOKEN,  # missing tag
        f"xx.{TOKEN}",  # unknown tag
        f"ap.{TOKEN}",  # a geography this deployment has no account for
        f"EU.{TOKEN}",  # tampered
        f"eu.{TOKEN}/../x",
    ],
)
def test_a_launch_state_without_a_tag_of_this_deployment_is_unknown_and_nothing_is_read(
    router: StateRouter, kind: str, state: str
) -> None:
    with pytest.raises(StateError) as refused:
        router.consume(kind, state)
    assert refused.value.code == "state_unknown"


def test_a_well_tagged_state_is_looked_up_in_its_account(router: StateRouter) -> None:
    """The control: a state these tests refuse without a lookup would otherwise reach the (dead) account."""
    with pytest.raises(StorageUnavailable, match="STORAGE_EMEA"):
        router.consume(STATE_KIND, f"eu.{TOKEN}")


@pytest.mark.parametrize("geography", [Geography.AMERICAS, Geography.EMEA, Geography.APAC])
def test_a_tagged_state_offered_as_a_portal_sign_in_is_unknown_and_nothing_is_read(
    router: StateRouter, geography: Geography
) -> None:
    with pytest.raises(StateError) as refused:
        router.consume(PORTAL_SIGNIN_KIND, geography_state(geography))
    assert refused.value.code == "state_unknown"


def test_the_launch_kinds_are_the_geography_kinds_and_the_portals_are_not(router: StateRouter) -> None:
    kinds = {STATE_KIND, INTRO_STATE_KIND, SIGNIN_STATE_KIND, CONFIRM_STATE_KIND}
    assert kinds == LAUNCH_STATE_KINDS == router.in_geography
    assert PORTAL_SIGNIN_KIND not in router.in_geography


# --- creating: a launch's state must name its geography, a portal's must not -------------------------


@pytest.mark.parametrize(
    ("kind", "arguments"),
    [
        (STATE_KIND, {}),  # no geography
        (STATE_KIND, {"state": TOKEN}),  # an untagged state for a geography's row
        (SIGNIN_STATE_KIND, {"state": f"xx.{TOKEN}"}),
        (CONFIRM_STATE_KIND, {"state": f"eu.{TOKEN}", "geography": Geography.AMERICAS}),  # tag and geography disagree
        (PORTAL_SIGNIN_KIND, {"geography": Geography.EMEA}),  # the portal's states live in the app's account
        (PORTAL_SIGNIN_KIND, {"state": f"eu.{TOKEN}"}),
    ],
)
def test_a_state_in_the_wrong_place_is_a_programming_error_not_a_silent_move(
    router: StateRouter, kind: str, arguments: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        router.create(kind, {"x": 1}, **arguments)


def test_a_launch_state_for_a_geography_without_an_account_is_refused_clearly(router: StateRouter) -> None:
    with pytest.raises(BadRequest, match="apac"):
        router.create(STATE_KIND, {"x": 1}, geography=Geography.APAC)
    with pytest.raises(BadRequest, match="apac"):
        router.create(SIGNIN_STATE_KIND, {"x": 1}, state=router.new_state(Geography.APAC))


def test_the_launch_refuses_a_router_that_would_keep_its_states_in_the_app_account(router: StateRouter) -> None:
    settings = Settings.from_env(local_values(DEAD_PORT_BASE))
    app_only = StateRouter(Storage(settings), Sealer.from_text(new_key_text()), in_geography={STATE_KIND})
    unused: Any = None
    with pytest.raises(ValueError, match="geography"):
        LaunchService(
            public_base_url="https://connector.example",
            connector_secret="s" * 32,
            configurations=unused,
            ehr=unused,
            states=app_only,
            user_map=unused,
            visits=unused,
            sign_in=unused,
            meetings_for=unused,
            sealer=unused,
        )
