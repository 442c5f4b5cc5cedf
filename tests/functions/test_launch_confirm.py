"""The one-time sign-in's confirmation: the link between an EHR user and a Microsoft 365 user is stored only when
the clinician presses "Link my account", in the browser that signed in, on the page that names both."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote

import azure.functions as func
import pytest

from connector.launch import launch_signin_confirm
from shared.kernel.settings import Geography, Settings
from shared.launch.service import CONFIRM_STATE_KIND, INTRO_STATE_KIND
from shared.launch.user_map import UserMapping
from shared.storage.accounts import Storage
from shared.storage.state import TABLE as STATE_TABLE
from shared.visits.sealed_context import open_event
from tests.functions.test_launch import (
    FHIR,
    TENANT,
    Out,
    World,
    confirmation_fields,
    encounter_of,
    html,
    installed_world,
    request,
    share_with,
)
from tests.support.launch_fakes import Login, microsoft_user

pytestmark = pytest.mark.azurite

NURSE_KIM = microsoft_user(
    TENANT, "b0000000-0000-4000-8000-000000000004", upn="nurse.kim@contoso.example", name="Nurse Robin Kim"
)
LEE = {
    "resourceType": "Practitioner",
    "id": "eDocLee",
    "name": [
        {"use": "old", "family": "Former"},
        {"use": "official", "prefix": ["Dr."], "given": ["Morgan"], "family": "Lee"},
    ],
}


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    yield from installed_world(settings, storage)


def launch_to_confirmation(world: World, who: str = "eDocLee", csn: str = "7001") -> tuple[str, func.HttpResponse]:
    """An EHR launch by ``who`` and Nurse Kim's Microsoft sign-in: the confirmation page's HTML and response."""
    world.ehr_visit(csn, encounter_of(csn))  # the EHR's Encounter carries the CSN the launch URL names
    login = Login(
        claims={"sub": who, "fhirUser": f"{FHIR}/Practitioner/{who}"},
        fields={"patient": "eP1", "encounter": encounter_of(csn)},
    )
    redirect = world.authorize_and_return(world.launch("provider", csn=csn), login)
    assert redirect.status_code == 303 and redirect.headers["Location"].startswith("https://login.example/")
    page = world.microsoft_sign_in(redirect, NURSE_KIM)
    assert page.status_code == 200, html(page)
    return html(page), page


def stored(world: World, who: str = "eDocLee") -> UserMapping | None:
    return world.user_map.get(Geography.EMEA, world.config.id, f"Practitioner/{who}")


def test_the_confirmation_names_both_sides_and_nothing_is_stored_before_the_button(world: World) -> None:
    world.ehr.resources["Practitioner/eDocLee"] = LEE
    body, page = launch_to_confirmation(world)
    assert "Dr. Morgan Lee" in body and "Former" not in body
    assert "nurse.kim@contoso.example" in body and "Nurse Robin Kim" in body
    assert 'id="name-note"' not in body
    assert 'id="names-differ"' in body  # Dr. Morgan Lee and Nurse Robin Kim share no name
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("launch_signin=") and "SameSite=Strict" in cookie and "HttpOnly" in cookie
    assert stored(world) is None and world.graph.calls == []

    response = world.confirm(page)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{world.settings.public_base_url}/api/visits/")
    assert "launch_signin=;" in response.headers.get("Set-Cookie", "")
    mapping = stored(world)
    assert mapping is not None and mapping.object_id == NURSE_KIM.object_id
    assert world.graph.calls == ["createOrGet " + NURSE_KIM.object_id, "lobby meeting-1"]
    assert len(world.events) == 1 and world.events[0].participant is None  # sealed on the queue
    assert open_event(world.sealer, world.events[0]).participant == "Practitioner/eDocLee"


def test_a_name_the_ehr_will_not_give_still_lets_the_clinician_confirm(world: World) -> None:
    body, page = launch_to_confirmation(world)  # no Practitioner resource: the EHR answers 404
    assert "read Practitioner" in world.ehr.requests
    assert "name not available" in body and "The Practitioner user who started this visit" in body
    assert 'id="name-note"' in body and 'id="names-differ"' not in body
    assert world.confirm(page).status_code == 303
    assert stored(world) is not None


def test_a_confirmation_posted_from_another_browser_is_refused_and_stores_nothing(world: World) -> None:
    world.ehr.resources["Practitioner/eDocLee"] = LEE
    for csn, cookie in (("7010", ""), ("7011", "launch_signin=" + "x" * 43)):  # no binding cookie; somebody else's
        _, page = launch_to_confirmation(world, csn=csn)
        refused = world.confirm(page, cookie=cookie)
        assert refused.status_code == 400 and "nothing was linked" in html(refused)
        assert stored(world) is None and world.graph.calls == [] and world.events == []
        # The refusal used the confirmation up: the state is single-use whatever happens.
        assert "Please launch again from Epic" in html(world.confirm(page))
        assert stored(world) is None


def test_the_other_browser_gets_a_page_that_says_what_happened(world: World) -> None:
    _, page = launch_to_confirmation(world)
    refused = world.confirm(page, cookie="")
    assert refused.status_code == 400
    assert "Please confirm in your own browser" in html(refused) and "correlation id" in html(refused)


def test_a_confirmation_without_the_form_token_is_refused(world: World) -> None:
    _, page = launch_to_confirmation(world)
    refused = world.confirm(page, csrf="")
    assert refused.status_code == 403 and "Please confirm on the confirmation page" in html(refused)
    assert stored(world) is None and world.graph.calls == []
    _, page = launch_to_confirmation(world, csn="7002")
    wrong = world.confirm(page, csrf="not-the-token")
    assert wrong.status_code == 403 and stored(world) is None


def test_a_get_of_the_confirmation_url_stores_nothing_and_leaves_the_confirmation_usable(world: World) -> None:
    _, page = launch_to_confirmation(world)
    fields = confirmation_fields(page)
    query = f"state={fields['state']}&csrf={quote(fields['csrf'])}&action=link"
    out = Out()
    req = request("GET", f"http://localhost/api/launch/signin/confirm?{query}", headers={"cookie": world.cookie})
    response = launch_signin_confirm(req, events=out)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert "Please use the button on the confirmation page" in html(response)
    assert out.value is None and stored(world) is None and world.graph.calls == []
    assert world.confirm(page).status_code == 303


def test_this_is_not_me_stores_nothing(world: World) -> None:
    _, page = launch_to_confirmation(world)
    response = world.confirm(page, action="decline")
    assert response.status_code == 200 and "Nothing was linked" in html(response)
    assert stored(world) is None and world.graph.calls == [] and world.events == []
    assert world.confirm(page).status_code == 400


def test_an_unknown_button_is_refused_without_using_the_confirmation_up(world: World) -> None:
    _, page = launch_to_confirmation(world)
    assert world.confirm(page, action="other").status_code == 403
    assert stored(world) is None
    assert world.confirm(page).status_code == 303


def test_sign_in_states_are_sealed_and_consumed_rows_keep_nothing(world: World) -> None:
    world.ehr.resources["Practitioner/eDocLee"] = LEE
    table = world.storage.for_geography(world.config.geography).table(STATE_TABLE)  # launch states: the geography's

    def rows(kind: str) -> dict[str, dict[str, object]]:
        """The kind's rows by RowKey (other tests share this Azurite and table: compare by row, not by payload)."""
        query = table.query_entities("PartitionKey eq @k", parameters={"k": kind})
        return {str(e["RowKey"]): dict(e) for e in query}

    before_intro = set(rows(INTRO_STATE_KIND))
    body, page = launch_to_confirmation(world, csn="7100")
    for row in rows(CONFIRM_STATE_KIND).values():
        for secret in ("eDocLee", "Morgan", "nurse.kim", "7100"):
            assert secret not in str(row["Payload"])  # sealed: no EHR id, name, UPN or CSN in clear
    # This launch's intro state (the page before Microsoft's sign-in, whose Continue used it up): kept empty. (Here
    # Microsoft's sign-in is a fake with no state row of its own; tests/integration covers the real one's.)
    new_intros = [row for key, row in rows(INTRO_STATE_KIND).items() if key not in before_intro]
    consumed = [row for row in new_intros if row.get("Consumed")]
    assert consumed and all(row["Payload"] == "" for row in consumed)
    world.confirm(page)
    state = confirmation_fields(page)["state"]
    assert table.get_entity(CONFIRM_STATE_KIND, state)["Payload"] == ""
    app_rows = world.storage.app.table(STATE_TABLE).query_entities("RowKey eq @s", parameters={"s": state})
    assert not list(app_rows)  # never in the app's account


def test_the_link_is_logged_with_hashed_ids_only(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.ehr.resources["Practitioner/eDocLee"] = LEE
    with caplog.at_level(logging.INFO, logger="shared.launch.service"):
        _, page = launch_to_confirmation(world)
        world.confirm(page)
    [line] = [r.getMessage() for r in caplog.records if "linked to a Microsoft 365 user" in r.getMessage()]
    for clear in ("eDocLee", "Morgan", "Lee", "nurse.kim", NURSE_KIM.object_id, TENANT, world.config.id):
        assert clear not in line


def test_sharing_stopped_while_the_confirmation_is_on_screen_stores_nothing(world: World) -> None:
    fabrikam = microsoft_user("33333333-3333-4333-8333-333333333333", "c0000000-0000-4000-8000-000000000009")
    share_with(world, fabrikam.tenant_id)
    world.ehr_visit("7200", encounter_of("7200"))
    login = Login(
        claims={"sub": "eDocG", "fhirUser": f"{FHIR}/Practitioner/eDocG"}, fields={"encounter": encounter_of("7200")}
    )
    redirect = world.authorize_and_return(world.launch("provider", csn="7200"), login)
    page = world.microsoft_sign_in(redirect, fabrikam)
    assert page.status_code == 200
    share_with(world)  # the owning admin presses Stop sharing meanwhile
    response = world.confirm(page)
    assert response.status_code == 403 and "Wrong Microsoft 365 account" in html(response)
    assert stored(world, "eDocG") is None and world.graph.calls == []


def test_this_is_not_me_works_even_if_the_configuration_is_gone(world: World) -> None:
    _, page = launch_to_confirmation(world, csn="7300")
    del world.configurations.configs[world.config.id]
    response = world.confirm(page, action="decline")
    assert response.status_code == 200 and "Nothing was linked" in html(response)


def test_a_configuration_moved_to_another_geography_meanwhile_stores_no_link_in_the_old_one(world: World) -> None:
    """Approving an edit that moves the geography deletes the old geography's links: none may be stored there after."""
    _, page = launch_to_confirmation(world, csn="7400")
    world.config = replace(world.config, geography=Geography.AMERICAS)  # the approver approved the move meanwhile
    world.configurations.configs[world.config.id] = world.config
    response = world.confirm(page)
    assert response.status_code == 404 and "Tenant config not found" in html(response)
    assert stored(world) is None
    assert world.user_map.get(Geography.AMERICAS, world.config.id, "Practitioner/eDocLee") is None
