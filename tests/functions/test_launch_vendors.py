"""Launches of Oracle Health and generic SMART configurations, called as the host calls them: each vendor's scopes
are requested, an EHR that names the user by ``sub`` alone gets a stable key of its own, and Oracle's
appointment-less token response still puts provider and patient in one meeting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from connector.services import services
from shared.configurations.model import Vendor
from shared.ehr.vendors import profile_for
from shared.kernel.settings import Geography, Settings
from shared.storage.accounts import Storage
from tests.functions.test_launch import DR_SMITH, FHIR, World, html, installed_world
from tests.support.launch_fakes import Configurations, Login

pytestmark = pytest.mark.azurite


@pytest.fixture(params=[Vendor.ORACLE, Vendor.SMART])
def world(request: pytest.FixtureRequest, env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    for w in installed_world(settings, storage):
        w.config = replace(w.config, vendor=request.param)
        w.configurations = Configurations(w.config)
        services().launch = w.service()
        yield w


def requested_scope(world: World, kind: str) -> str:
    authorize = world.launch(kind, csn=None)
    assert authorize.status_code == 303, authorize.get_body()
    return parse_qs(urlsplit(authorize.headers["Location"]).query)["scope"][0]


def test_each_vendor_is_asked_for_its_own_scopes(world: World) -> None:
    profile = profile_for(world.config.vendor)
    assert requested_scope(world, "provider") == profile.provider_scopes
    assert requested_scope(world, "patient") == profile.patient_scopes


def test_a_user_named_by_sub_alone_gets_a_stable_key_and_a_plain_name_on_the_confirmation(world: World) -> None:
    login = Login(claims={"sub": "portal"}, fields={"patient": "eP1", "encounter": "eE1"})
    page = world.authorize_and_return(world.launch("provider", csn=None), login)
    assert page.status_code == 303  # to the Microsoft 365 sign-in first
    confirmation = world.microsoft_sign_in(page, DR_SMITH)
    assert confirmation.status_code == 200
    assert "The EHR user who started this visit" in html(confirmation)  # no FHIR type to name
    assert world.confirm(confirmation).status_code == 303
    mapping = world.user_map.get(Geography.EMEA, world.config.id, "OpenIdSubject/portal")
    assert mapping is not None
    again = world.authorize_and_return(world.launch("provider", csn=None), login)  # the same subject: no sign-in
    assert again.status_code == 303 and "/api/visits/" in again.headers["Location"]


def test_an_appointment_less_token_response_puts_both_in_one_meeting(world: World) -> None:
    provider = world.provider(csn=None, fields={"encounter": "eE7"})  # Oracle: patient and encounter only
    assert provider.status_code == 303
    patient = world.authorize_and_return(
        world.launch("patient", csn=None),
        Login(claims={"sub": "x", "fhirUser": f"{FHIR}/Patient/eP1"}, fields={"patient": "eP1", "encounter": "eE7"}),
    )
    assert patient.status_code == 303
    assert patient.headers["Location"] == "https://teams.example/l/meetup-join/1"  # the provider's meeting's lobby
