"""Provider and patient launches, called as the host calls them, on Azurite with in-process EHR/Entra/Graph."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from unittest.mock import ANY
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func
import pytest

from connector.launch import (
    launch_callback,
    launch_patient,
    launch_provider,
    launch_signin_callback,
    launch_signin_confirm,
    launch_signin_start,
    visit_page,
    visit_presence,
)
from connector.services import ROUND_TRIP_STATE_KINDS, services
from connector.services import reset as reset_services
from shared.kernel.identifiers import random_token
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography, Settings
from shared.launch.service import CONFIGURATION_MEMORY_SECONDS, LAUNCH_STATE_KINDS, LaunchService
from shared.launch.user_map import UserMapRepository
from shared.microsoft.entra import PortalIdentity
from shared.storage.accounts import Storage
from shared.storage.state import GEOGRAPHY_TAGS, StateRouter
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event
from tests.support.audience import assert_patient_words
from tests.support.launch_fakes import (
    Config,
    Configurations,
    FakeEhr,
    FakeSignIn,
    Graph,
    Login,
    access_policy_error,
    microsoft_user,
    throttled,
)

pytestmark = pytest.mark.azurite

TENANT = "11111111-1111-4111-8111-111111111111"
DR_SMITH = microsoft_user(TENANT, "b0000000-0000-4000-8000-000000000001")
DR_LEE = microsoft_user(TENANT, "b0000000-0000-4000-8000-000000000002")
FHIR = "https://ehr.example/interconnect/api/FHIR/R4"
CSN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8"  # Epic's CSN OID (customer part 0.1)


def encounter_of(csn: str | None) -> str:
    """The Encounter the EHR names in the token response for the visit with this CSN."""
    return "eE1" if csn in (None, "1853") else f"eE{csn}"


class Out:
    def __init__(self) -> None:
        self.value: Any = None

    def set(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value


def request(
    method: str,
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    route_params: dict[str, str] | None = None,
) -> func.HttpRequest:
    parts = urlsplit(url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return func.HttpRequest(
        method, url, body=body, headers=headers or {}, params=params, route_params=route_params or {}
    )


@dataclass
class World:
    settings: Settings
    storage: Storage
    config: Config
    configurations: Configurations
    ehr: FakeEhr = field(default_factory=FakeEhr)
    sign_in: FakeSignIn = field(default_factory=FakeSignIn)
    graph: Graph = field(default_factory=Graph)
    events: list[VisitEvent] = field(default_factory=list)
    cookie: str = ""

    @property
    def sealer(self) -> Sealer:
        return Sealer.from_text(self.settings.sealing_keys.reveal())

    @property
    def user_map(self) -> UserMapRepository:
        return UserMapRepository(self.storage, self.settings.connector_secret.reveal(), self.sealer)

    def service(self, memory_clock: Callable[[], float] = time.monotonic) -> LaunchService:
        return LaunchService(
            public_base_url=self.settings.public_base_url,
            connector_secret=self.settings.connector_secret.reveal(),
            configurations=self.configurations,
            ehr=self.ehr,
            states=StateRouter(
                self.storage, self.sealer, in_geography=LAUNCH_STATE_KINDS, round_trips=ROUND_TRIP_STATE_KINDS
            ),
            user_map=self.user_map,
            visits=VisitRepository(self.storage, self.sealer),
            sign_in=lambda: self.sign_in,  # type: ignore[arg-type,return-value]
            meetings_for=self.graph.meetings_for,
            sealer=self.sealer,
            memory_clock=memory_clock,
        )

    # the EHR's side of a launch -----------------------------------------------------------------

    def ehr_visit(self, csn: str, encounter: str) -> None:
        """The EHR's Encounter for a visit carries its CSN as an identifier (any participants a test set stay)."""
        resource = self.ehr.resources.setdefault(f"Encounter/{encounter}", {"resourceType": "Encounter"})
        resource.update(id=encounter, identifier=[{"use": "usual", "system": CSN_SYSTEM, "value": csn}])

    def launch(
        self,
        kind: str,
        *,
        iss: str | None = None,
        csn: str | None = "1853",
        configuration_id: str | None = None,
        launch: str = "opaque+launch",
        lang: str | None = None,
    ) -> func.HttpResponse:
        query = f"iss={quote(iss or self.config.fhir_base_url, safe='')}&launch={quote(launch, safe='+')}"
        if csn:
            query += f"&sessionId={csn}"
        if lang:  # a launch URL built with a language (e.g. a Spanish MyChart's record)
            query += f"&lang={lang}"
        cid = configuration_id or self.config.id
        req = request("GET", f"http://localhost/api/launch/{cid}/{kind}?{query}", route_params={"configurationId": cid})
        handler = launch_provider if kind == "provider" else launch_patient
        return handler(req)

    def callback(self, query: str) -> tuple[func.HttpResponse, Out]:
        out = Out()
        response = launch_callback(request("GET", f"http://localhost/api/launch/callback?{query}"), events=out)
        if out.value:
            self.events.append(VisitEvent.from_json(out.value))
        return response, out

    def authorize_and_return(
        self, authorize: func.HttpResponse, login: Login, *, press_continue: bool = True
    ) -> func.HttpResponse:
        """The EHR's sign-in and its redirect back; on a clinician's first launch, "Continue" on the page that
        explains the one-time Microsoft sign-in is pressed too (unless ``press_continue`` is off)."""
        assert authorize.status_code == 303, authorize.get_body()
        url = authorize.headers["Location"]
        code = self.ehr.authorize(url, None, login)
        state = parse_qs(urlsplit(url).query)["state"][0]
        response, _ = self.callback(f"code={code}&state={state}")
        if press_continue and response.status_code == 200 and 'id="continue-signin"' in html(response):
            response = self.press_continue(response)
        return response

    def press_continue(
        self, page: func.HttpResponse, *, cookie: str | None = None, csrf: str | None = None
    ) -> func.HttpResponse:
        """ "Continue" on the page explaining the one-time sign-in (by default from its browser, with its token)."""
        fields = confirmation_fields(page)
        sent_cookie = page.headers["Set-Cookie"].split(";", 1)[0] if cookie is None else cookie
        body = f"state={fields['state']}&csrf={quote(fields['csrf'] if csrf is None else csrf)}"
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if sent_cookie:
            headers["cookie"] = sent_cookie
        req = request("POST", "http://localhost/api/launch/signin/start", body=body.encode(), headers=headers)
        return launch_signin_start(req)

    def provider(
        self,
        who: str = "eDoc1",
        *,
        csn: str | None = "1853",
        fields: dict[str, Any] | None = None,
        microsoft: PortalIdentity = DR_SMITH,
    ) -> func.HttpResponse:
        if csn:
            self.ehr_visit(csn, encounter_of(csn))
        login = Login(
            claims={"sub": who, "fhirUser": f"{FHIR}/Practitioner/{who}"},
            fields={"patient": "eP1", "encounter": encounter_of(csn), **(fields or {})},
        )
        response = self.authorize_and_return(self.launch("provider", csn=csn), login)
        location = response.headers.get("Location", "")
        if response.status_code == 303 and location.startswith("https://login.example/"):
            response = self.microsoft_sign_in(response, microsoft)
            if response.status_code == 200 and "Link my account" in html(response):
                response = self.confirm(response)
        return response

    def microsoft_sign_in(self, redirect: func.HttpResponse, microsoft: PortalIdentity) -> func.HttpResponse:
        """Microsoft's form_post back to the connector, from the browser holding the sign-in cookie."""
        self.sign_in.user = microsoft
        state = parse_qs(urlsplit(redirect.headers["Location"]).query)["state"][0]
        self.cookie = redirect.headers["Set-Cookie"].split(";", 1)[0]  # the browser keeps it for the callback
        req = request(
            "POST",
            "http://localhost/api/launch/signin/callback",
            body=f"code=abc&state={state}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded", "cookie": self.cookie},
        )
        response = launch_signin_callback(req)
        if response.status_code == 200:
            self.cookie = response.headers["Set-Cookie"].split(";", 1)[0]  # rotated for the confirmation
        return response

    def confirm(
        self, page: func.HttpResponse, *, action: str = "link", cookie: str | None = None, csrf: str | None = None
    ) -> func.HttpResponse:
        """Press a button of the confirmation page (by default from the same browser, with the page's token)."""
        fields = confirmation_fields(page)
        body = f"state={fields['state']}&csrf={quote(fields['csrf'] if csrf is None else csrf)}&action={action}"
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if (self.cookie if cookie is None else cookie) != "":
            headers["cookie"] = self.cookie if cookie is None else cookie
        out = Out()
        req = request("POST", "http://localhost/api/launch/signin/confirm", body=body.encode(), headers=headers)
        response = launch_signin_confirm(req, events=out)
        if out.value:
            self.events.append(VisitEvent.from_json(out.value))
        return response

    def patient(
        self, *, csn: str | None = "1853", fields: dict[str, Any] | None = None, lang: str | None = None
    ) -> func.HttpResponse:
        if csn:
            self.ehr_visit(csn, encounter_of(csn))
        login = Login(
            claims={"sub": "eP1", "fhirUser": f"{FHIR}/Patient/eP1"},
            fields={"patient": "eP1", "encounter": encounter_of(csn), **(fields or {})},
        )
        return self.authorize_and_return(self.launch("patient", csn=csn, lang=lang), login)

    def open(self, url: str) -> func.HttpResponse:
        parts = urlsplit(url)
        segments = parts.path.split("/")
        key = segments[3]
        req = request("GET", url, route_params={"visitKey": key})
        return visit_presence(req) if parts.path.endswith("/presence") else visit_page(req)


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    yield from installed_world(settings, storage)


def installed_world(settings: Settings, storage: Storage) -> Iterator[World]:
    """A ``World`` whose launch service is the one the blueprint uses, for the length of a test."""
    config = Config(id=str(uuid.uuid4()), tenant_id=TENANT, fhir_base_url=FHIR)
    pending = Config(id=str(uuid.uuid4()), tenant_id=TENANT, fhir_base_url=FHIR + "-pending", is_approved=False)
    w = World(settings=settings, storage=storage, config=config, configurations=Configurations(config, pending))
    w.ehr.base = FHIR
    w.ehr_visit("1853", "eE1")
    reset_services()
    services().launch = w.service()
    yield w
    reset_services()


def html(response: func.HttpResponse) -> str:
    return response.get_body().decode()


def confirmation_fields(page: func.HttpResponse) -> dict[str, str]:
    found = dict(re.findall(r'name="(state|csrf)" value="([^"]+)"', html(page)))
    assert set(found) == {"state", "csrf"}, html(page)
    return found


def join_link(page: str) -> str:
    found = re.search(r'id="join" href="([^"]+)"', page)
    assert found, page
    return found.group(1).replace("&amp;", "&")


# --- provider -----------------------------------------------------------------------------------


def test_provider_first_launch_signs_in_once_then_shows_the_meeting_page(world: World) -> None:
    response = world.provider()
    assert response.status_code == 303
    visit_url = response.headers["Location"]
    assert visit_url.startswith(f"{world.settings.public_base_url}/api/visits/")
    assert world.sign_in.begun == 1
    assert world.graph.calls == ["createOrGet " + DR_SMITH.object_id, "lobby meeting-1"]

    page = world.open(visit_url)
    assert page.status_code == 200
    assert join_link(html(page)) == "https://teams.example/l/meetup-join/1"
    assert 'target="_blank"' in html(page)
    assert "Not here yet" in html(page)

    [queued] = world.events
    assert queued.references == {} and queued.sealed  # nothing in clear on the queue
    event = open_event(world.sealer, queued)
    assert (event.kind, event.role, event.source) == (EventKind.CONNECTED, Role.PROVIDER, Source.LAUNCH)
    assert event.participant == "Practitioner/eDoc1" and event.csn == "1853" and event.encounter == "eE1"
    assert event.geography == "emea" and event.configuration_id == world.config.id

    mapping = world.user_map.get(Geography.EMEA, world.config.id, "Practitioner/eDoc1")
    assert mapping is not None and mapping.object_id == DR_SMITH.object_id


def test_second_launch_goes_straight_in_to_the_same_meeting(world: World) -> None:
    first = world.provider()
    second = world.provider()
    assert world.sign_in.begun == 1
    assert first.headers["Location"].split("?")[0] == second.headers["Location"].split("?")[0]
    assert world.graph.calls.count("createOrGet " + DR_SMITH.object_id) == 1  # the visit row remembers it
    page = world.open(second.headers["Location"])
    assert join_link(html(page)) == "https://teams.example/l/meetup-join/1"
    assert len(world.events) == 2


def test_a_second_appointment_gets_another_meeting(world: World) -> None:
    first = world.open(world.provider(csn="1853").headers["Location"])
    second = world.open(world.provider(csn="1854").headers["Location"])
    assert join_link(html(first)) != join_link(html(second))


def test_appointment_primary_provider_organizes_when_mapped(world: World) -> None:
    pprf = [{"coding": [{"code": "PPRF"}]}]
    world.ehr.resources["Appointment/eA1"] = {
        "resourceType": "Appointment",
        "participant": [{"type": pprf, "actor": {"reference": "Practitioner/eDocLee"}}],
    }
    world.provider("eDocLee", csn="2001", fields={"appointment": "eA1"}, microsoft=DR_LEE)
    # Dr Lee's visit is organized by Dr Lee; a covering clinician launching another visit of Dr Lee's
    # appointment gets a meeting organized by Dr Lee.
    world.graph.calls.clear()
    world.provider("eDoc1", csn="2002", fields={"appointment": "eA1"}, microsoft=DR_SMITH)
    assert world.graph.calls[0] == "createOrGet " + DR_LEE.object_id


def test_unmapped_primary_provider_leaves_the_launching_provider_as_organizer(world: World) -> None:
    world.ehr.resources["Encounter/eE3001"] = {
        "participant": [{"type": [{"coding": [{"code": "PPRF"}]}], "individual": {"reference": "Practitioner/x"}}]
    }
    world.provider("eDoc1", csn="3001")
    assert world.graph.calls[0] == "createOrGet " + DR_SMITH.object_id
    assert "read Encounter" in world.ehr.requests


def test_signin_with_another_tenant_is_refused(world: World) -> None:
    response = world.provider(microsoft=microsoft_user("33333333-3333-4333-8333-333333333333", "c1"))
    assert response.status_code == 403
    assert "Wrong Microsoft 365 account" in html(response)
    assert world.graph.calls == []


FABRIKAM = "33333333-3333-4333-8333-333333333333"
DR_FABRIKAM = microsoft_user(FABRIKAM, "c0000000-0000-4000-8000-000000000009")


def share_with(world: World, *tenants: str) -> None:
    world.config = replace(world.config, shared_with=tenants)
    world.configurations.configs[world.config.id] = world.config
    # As the portal's change does in its own process; other instances see it within CONFIGURATION_MEMORY_SECONDS.
    services().launch.forget_configuration(world.config.id)


def test_clinician_of_a_tenant_the_configuration_is_shared_with_meets_in_their_own_tenant(world: World) -> None:
    share_with(world, FABRIKAM)
    response = world.provider(microsoft=DR_FABRIKAM)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{world.settings.public_base_url}/api/visits/")
    assert list(world.graph.store) == [(FABRIKAM, DR_FABRIKAM.object_id, ANY)]  # organized in Fabrikam
    mapping = world.user_map.get(Geography.EMEA, world.config.id, "Practitioner/eDoc1")
    assert mapping is not None and (mapping.tenant_id, mapping.object_id) == (FABRIKAM, DR_FABRIKAM.object_id)


def test_after_sharing_stops_that_tenants_clinicians_must_sign_in_again_and_are_refused(world: World) -> None:
    share_with(world, FABRIKAM)
    assert world.provider(csn="5001", microsoft=DR_FABRIKAM).status_code == 303
    assert world.sign_in.begun == 1
    share_with(world)  # the owning tenant stops sharing
    world.graph.calls.clear()
    response = world.provider(csn="5002", microsoft=DR_FABRIKAM)
    assert world.sign_in.begun == 2  # the stored mapping to Fabrikam no longer counts
    assert response.status_code == 403 and "Wrong Microsoft 365 account" in html(response)
    assert world.graph.calls == []


def test_sharing_stopped_while_the_clinician_is_on_the_sign_in_page_refuses_them(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    share_with(world, FABRIKAM)
    finish = world.sign_in.complete_with_carry

    def stop_sharing_first(*args: Any, **kwargs: Any) -> Any:
        share_with(world)  # the owning admin presses Stop sharing meanwhile
        return finish(*args, **kwargs)

    monkeypatch.setattr(world.sign_in, "complete_with_carry", stop_sharing_first)
    response = world.provider(csn="5101", microsoft=DR_FABRIKAM)
    assert response.status_code == 403 and "Wrong Microsoft 365 account" in html(response)
    assert world.graph.calls == []
    assert world.user_map.get(Geography.EMEA, world.config.id, "Practitioner/eDoc1") is None  # nothing stored for good


def test_a_configuration_deleted_while_the_clinician_signs_in_stores_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish = world.sign_in.complete_with_carry

    def delete_first(*args: Any, **kwargs: Any) -> Any:
        del world.configurations.configs[world.config.id]
        return finish(*args, **kwargs)

    monkeypatch.setattr(world.sign_in, "complete_with_carry", delete_first)
    response = world.provider(csn="5102")
    assert response.status_code == 404 and "Tenant config not found" in html(response)
    assert world.graph.calls == []


def test_a_patient_is_not_put_in_a_meeting_of_a_tenant_no_longer_shared_with(world: World) -> None:
    share_with(world, FABRIKAM)
    world.provider("eDocG", csn="5201", microsoft=DR_FABRIKAM)  # Dr Garcia signed in while shared
    world.ehr.resources["Appointment/eA52"] = {
        "participant": [{"type": [{"coding": [{"code": "PPRF"}]}], "actor": {"reference": "Practitioner/eDocG"}}]
    }
    share_with(world)
    world.graph.calls.clear()
    response = world.patient(csn="5202", fields={"appointment": "eA52"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{world.settings.public_base_url}/api/visits/")  # waiting
    assert world.graph.calls == []  # no meeting organized by Garcia in Fabrikam's tenant


def test_patient_signed_in_on_the_provider_launch_is_refused(world: World) -> None:
    login = Login(claims={"sub": "eP1", "fhirUser": f"{FHIR}/Patient/eP1"}, fields={"encounter": "e"})
    response = world.authorize_and_return(world.launch("provider"), login)
    assert response.status_code == 403 and "clinicians" in html(response)


# --- patient ------------------------------------------------------------------------------------


def test_patient_after_the_provider_goes_to_the_same_meeting_lobby(world: World) -> None:
    provider_page = world.open(world.provider().headers["Location"])
    response = world.patient()
    assert response.status_code == 303
    assert response.headers["Location"] == join_link(html(provider_page))
    patient_event = open_event(world.sealer, world.events[-1])
    assert patient_event.role is Role.PATIENT and patient_event.participant == "Patient/eP1"
    assert patient_event.kind is EventKind.LOBBY  # sent to the lobby: the panel must not say "in meeting"


def test_patient_before_the_provider_waits_then_moves_on(world: World) -> None:
    waiting = world.patient(csn="4001")
    assert waiting.status_code == 303
    waiting_url = waiting.headers["Location"]
    assert "/api/visits/" in waiting_url and world.graph.calls == []

    page = world.open(waiting_url)
    assert page.status_code == 200
    body = html(page)
    assert "Your clinician will start the visit shortly" in body
    assert "Test your camera and microphone" in body
    status_url = re.search(r'data-status="([^"]+)"', body)
    assert status_url
    status = world.open(status_url.group(1).replace("&amp;", "&"))
    assert json.loads(status.get_body()) == {"meeting": False, "overdue": False}

    world.provider(csn="4001")
    status = world.open(status_url.group(1).replace("&amp;", "&"))
    assert json.loads(status.get_body()) == {"meeting": True, "overdue": False}
    moved = world.open(waiting_url)
    assert moved.status_code == 303 and moved.headers["Location"].startswith("https://teams.example/")


def test_patient_first_with_a_mapped_primary_provider_creates_the_meeting(world: World) -> None:
    world.provider("eDocLee", csn="5000", microsoft=DR_LEE)  # Dr Lee signed in once, some day
    world.ehr.resources["Appointment/eA5"] = {
        "participant": [{"type": [{"coding": [{"code": "PPRF"}]}], "actor": {"reference": "Practitioner/eDocLee"}}]
    }
    world.graph.calls.clear()
    response = world.patient(csn="5001", fields={"appointment": "eA5"})
    assert response.status_code == 303 and response.headers["Location"].startswith("https://teams.example/")
    assert world.graph.calls[0] == "createOrGet " + DR_LEE.object_id


# --- configuration checks: nothing leaves ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "status", "text"),
    [
        ("unknown configuration", 404, "Tenant config not found"),
        ("other iss", 404, "Tenant config not found"),
        ("pending", 403, "start your video visit right now"),  # a patient launch: a patient's words
    ],
)
def test_launches_that_match_no_approved_configuration_send_nothing(
    world: World, case: str, status: int, text: str
) -> None:
    if case == "unknown configuration":
        response = world.launch("provider", configuration_id=str(uuid.uuid4()))
    elif case == "other iss":
        response = world.launch("provider", iss="https://ehr.example/interconnect-test/api/FHIR/R4")
    else:
        pending = next(c for c in world.configurations.configs.values() if not c.is_approved)
        response = world.launch("patient", configuration_id=pending.id, iss=pending.fhir_base_url)
    assert response.status_code == status
    assert text in html(response)
    assert re.search(r"(correlation id|this reference:) <code>[0-9a-f-]{36}</code>", html(response))
    assert world.ehr.requests == []


def test_trailing_slash_on_iss_is_tolerated(world: World) -> None:
    response = world.launch("provider", iss=FHIR + "/")
    assert response.status_code == 303
    params = parse_qs(urlsplit(response.headers["Location"]).query)
    assert params["aud"] == [FHIR + "/"]


def test_authorize_request_carries_pkce_state_aud_launch_and_scopes(world: World) -> None:
    response = world.launch("patient", launch="a+b")
    params = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["launch"] == "a+b" and params["aud"] == FHIR
    assert params["scope"] == "launch openid fhirUser patient/*.read"
    assert params["client_id"] == "patient-client"
    tag, _, sealed = params["state"].partition(".")  # the geography's tag, then the launch sealed (AES-256-GCM)
    assert tag == GEOGRAPHY_TAGS[world.config.geography] and sealed.startswith("s1.")
    assert len(params["state"]) < 600  # fits a GET authorize URL
    body = sealed.split(".")[2]
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) > 12 + 32 + 16  # nonce, payload, tag
    assert FHIR not in params["state"] and "ehr.example" not in params["state"]  # nothing in clear
    assert params["redirect_uri"] == f"{world.settings.public_base_url}/api/launch/callback"


def test_long_launch_posts_to_authorize_when_advertised(world: World) -> None:
    response = world.launch("provider", launch="x" * 3000)
    assert response.status_code == 200
    body = html(response)
    assert 'method="post" action="https://ehr.example/oauth2/authorize"' in body
    assert 'name="launch" value="' + "x" * 3000 in body
    world.ehr.advertise_post = False
    response = world.launch("provider", launch="x" * 3000)
    assert response.status_code == 303


def test_launch_by_post_form(world: World) -> None:
    body = f"iss={quote(FHIR, safe='')}&launch=eyJ+abc".encode()
    req = request(
        "POST",
        f"http://localhost/api/launch/{world.config.id}/provider",
        body=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
        route_params={"configurationId": world.config.id},
    )
    response = launch_provider(req)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["Location"]).query)["launch"] == ["eyJ+abc"]


def test_missing_or_repeated_parameters_get_a_clear_page(world: World) -> None:
    req = request(
        "GET",
        f"http://localhost/api/launch/{world.config.id}/provider?launch=a&launch=b",
        route_params={"configurationId": world.config.id},
    )
    response = launch_provider(req)
    assert response.status_code == 400 and "repeats" in html(response)
    assert world.ehr.requests == []


# --- state, tokens, errors ------------------------------------------------------------------------


def test_replayed_and_forged_state_are_refused(world: World) -> None:
    authorize = world.launch("provider")
    url = authorize.headers["Location"]
    state = parse_qs(urlsplit(url).query)["state"][0]
    login = Login(claims={"sub": "eDoc1"}, fields={"encounter": "eE1"})
    code = world.ehr.authorize(url, None, login)
    world.sign_in.user = DR_SMITH
    first, _ = world.callback(f"code={code}&state={state}")
    assert first.status_code == 200 and "Link your EHR account to Microsoft 365 once" in html(first)
    replay, out = world.callback(f"code={code}&state={state}")
    # A used or unknown state names no launch kind: words a patient may read, and that fit a clinician too.
    assert replay.status_code == 400 and "This link has expired" in html(replay)
    assert out.value is None
    forged, _ = world.callback(f"code={code}&state={random_token()}")
    assert forged.status_code == 400 and "This link has expired" in html(forged)


def test_wrong_nonce_and_tampered_id_token_are_refused(world: World) -> None:
    bad_nonce = Login(claims={"sub": "eDoc1", "nonce": "not-the-one-we-sent"}, fields={"encounter": "e"})
    response = world.authorize_and_return(world.launch("provider"), bad_nonce)
    assert response.status_code == 502 and "invalid_id_token" in html(response)
    other_client = Login(claims={"sub": "eDoc1", "aud": "someone-else"}, fields={"encounter": "e"})
    response = world.authorize_and_return(world.launch("provider"), other_client)
    assert response.status_code == 502
    assert world.graph.calls == []


def test_ehr_oauth_error_shows_its_code_and_uses_up_the_state(world: World) -> None:
    authorize = world.launch("provider")
    state = parse_qs(urlsplit(authorize.headers["Location"]).query)["state"][0]
    response, _ = world.callback(f"error=unauthorized_client&error_description=x&state={state}")
    assert response.status_code == 502
    assert "EHR sign-in failed" in html(response) and "unauthorized_client" in html(response)
    again, _ = world.callback(f"code=x&state={state}")
    assert again.status_code == 400


def test_graph_access_policy_error_page_shows_the_powershell(world: World) -> None:
    world.graph.fail_with = access_policy_error()
    response = world.provider()
    assert response.status_code == 502
    assert "Grant-CsApplicationAccessPolicy" in html(response)


def test_graph_throttling_gets_a_friendly_page(world: World) -> None:
    world.graph.fail_with = throttled()
    response = world.provider()
    assert response.status_code == 503 and "Microsoft Teams is busy" in html(response)


def test_unreachable_ehr(world: World) -> None:
    world.ehr.unreachable = True
    response = world.launch("provider")
    assert response.status_code == 503 and "EHR is unreachable" in html(response)


def test_launch_without_any_appointment_context_is_explained(world: World) -> None:
    login = Login(claims={"sub": "eP1"}, fields={"patient": "eP1"})
    response = world.authorize_and_return(world.launch("patient", csn=None), login)
    assert response.status_code == 400 and "Please call your clinic" in html(response)
    assert_patient_words(html(response))


# --- visit pages --------------------------------------------------------------------------------


def test_presence_panel_json_and_token_checks(world: World) -> None:
    visit_url = world.provider().headers["Location"]
    key = urlsplit(visit_url).path.split("/")[3]
    token = parse_qs(urlsplit(visit_url).query)["t"][0]
    presence = world.open(f"http://localhost/api/visits/{key}/presence?t={quote(token, safe='')}")
    assert presence.status_code == 200
    nobody = {"state": "not_arrived", "since": None, "lobbyWaitSeconds": None}
    assert json.loads(presence.get_body()) == {
        "meeting": True,
        "ended": False,
        "endedAt": None,
        "participants": {"patient": nobody, "provider": nobody, "staff": nobody},
    }
    denied = world.open(f"http://localhost/api/visits/{key}/presence?t=forged")
    assert denied.status_code == 403 and denied.mimetype == "application/problem+json"
    other = world.open(f"http://localhost/api/visits/{'0' * 64}?t={quote(token, safe='')}")
    assert other.status_code == 403
    assert "Traceback" not in html(other)


def test_warm_launches_read_no_mapping_or_visit_rows(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.provider()
    world.patient()
    reads: list[str] = []
    for cls, name in ((UserMapRepository, "get"), (VisitRepository, "get_or_create"), (VisitRepository, "get")):
        original = getattr(cls, name)

        def spy(self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    assert world.provider().status_code == 303
    assert world.patient().headers["Location"].startswith("https://teams.example/")
    assert reads == []
    assert world.ehr.requests.count("read Encounter") == 1  # only the cold provider launch looked for the organizer


def test_sign_in_link_of_someone_elses_launch_is_refused(world: World) -> None:
    """A provider cannot send the Microsoft sign-in link of their launch to a colleague to capture their account."""
    login = Login(
        claims={"sub": "eDoc1", "fhirUser": f"{FHIR}/Practitioner/eDoc1"}, fields={"patient": "eP1", "encounter": "eE1"}
    )
    response = world.authorize_and_return(world.launch("provider"), login)
    assert response.headers["Set-Cookie"].startswith("launch_signin=")  # refreshed on "Continue"
    assert "SameSite=None" in response.headers["Set-Cookie"] and "Secure" in response.headers["Set-Cookie"]
    world.sign_in.user = DR_SMITH
    state = parse_qs(urlsplit(response.headers["Location"]).query)["state"][0]
    req = request(
        "POST",
        "http://localhost/api/launch/signin/callback",
        body=f"code=abc&state={state}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},  # the colleague's browser: no cookie
    )
    refused = launch_signin_callback(req)
    assert refused.status_code == 400
    assert "launch_signin=;" in refused.headers.get("Set-Cookie", "")
    assert world.graph.calls == []


# --- the one-time sign-in, explained first -----------------------------------------------------------


def first_launch_page(world: World, *, lang: str | None = None) -> func.HttpResponse:
    login = Login(
        claims={"sub": "eDoc1", "fhirUser": f"{FHIR}/Practitioner/eDoc1"}, fields={"patient": "eP1", "encounter": "eE1"}
    )
    return world.authorize_and_return(world.launch("provider", lang=lang), login, press_continue=False)


def test_a_launch_urls_language_is_kept_over_the_ehr_sign_in(world: World) -> None:
    """The EHR's redirect back cannot carry ``?lang=``; the launch's sealed state does, so the pages after it speak
    the language the launch URL named, and their links keep it."""
    waiting = world.patient(csn="4101", lang="es")
    assert waiting.status_code == 303 and "lang=es" in waiting.headers["Location"]
    page = world.open(waiting.headers["Location"])
    assert page.headers["Content-Language"] == "es" and 'lang="es"' in html(page)

    explained = first_launch_page(world, lang="it")  # a clinician's first launch: the page before Microsoft
    assert explained.status_code == 200 and explained.headers["Content-Language"] == "it"
    assert 'action="/api/launch/signin/start?lang=it"' in html(explained)
    authorize = world.launch("patient", csn="4101", lang="es")  # nothing of it is sent to the EHR
    assert authorize.status_code == 303 and "lang" not in parse_qs(urlsplit(authorize.headers["Location"]).query)


def test_without_a_language_in_the_launch_url_the_browsers_is_used(world: World) -> None:
    waiting = world.patient(csn="4102")
    assert waiting.status_code == 303 and "lang=" not in waiting.headers["Location"]


def test_a_clinicians_first_launch_explains_the_one_time_sign_in_before_microsoft(world: World) -> None:
    page = first_launch_page(world)
    body = html(page)
    assert page.status_code == 200 and world.sign_in.begun == 0  # Microsoft is not reached before "Continue"
    assert "Link your EHR account to Microsoft 365 once" in body
    assert 'aria-current="step"><span class="step-number">1</span> Sign in to Microsoft 365' in body
    assert 'method="post" action="/api/launch/signin/start"' in body
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("launch_signin=") and "SameSite=None" in cookie and "Secure" in cookie

    started = world.press_continue(page)
    assert started.status_code == 303 and started.headers["Location"].startswith("https://login.example/")
    assert world.sign_in.begun == 1
    confirm = world.microsoft_sign_in(started, DR_SMITH)
    assert 'aria-current="step"><span class="step-number">2</span> Check and confirm the link' in html(confirm)
    assert world.confirm(confirm).status_code == 303


@pytest.mark.parametrize("attack", ["no cookie", "other cookie", "no token", "wrong token"])
def test_continue_from_another_browser_or_without_the_pages_token_starts_nothing(world: World, attack: str) -> None:
    page = first_launch_page(world)
    cookie = {"no cookie": "", "other cookie": "launch_signin=" + random_token()}.get(attack)
    csrf = {"no token": "", "wrong token": random_token()}.get(attack)
    refused = world.press_continue(page, cookie=cookie, csrf=csrf)
    assert refused.status_code == 403 and "Please start the sign-in from your own visit" in html(refused)
    assert world.sign_in.begun == 0
    assert world.press_continue(page).status_code == 400  # the page is used up: a second try starts nothing


def test_opening_the_sign_in_start_as_a_link_starts_nothing(world: World) -> None:
    first_launch_page(world)
    response = launch_signin_start(request("GET", "http://localhost/api/launch/signin/start?state=x&csrf=y"))
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert "Please use the Continue button" in html(response) and world.sign_in.begun == 0


# --- the launch context is the EHR's word -----------------------------------------------------------


def test_a_url_csn_the_launchs_encounter_does_not_carry_is_refused_before_anything_happens(world: World) -> None:
    world.ehr_visit("7001", "eE7001")
    login = Login(claims={"sub": "eDoc1"}, fields={"patient": "eP1", "encounter": "eE7001"})
    response = world.authorize_and_return(world.launch("provider", csn="7002"), login)
    assert response.status_code == 403 and "This visit link does not match your appointment" in html(response)
    assert world.sign_in.begun == 0 and world.graph.calls == [] and world.events == []


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"patient": "eP1"}, "launch_context_unverifiable"),
        ({"patient": "eP1", "encounter": "eE-unknown"}, "launch_context_unverifiable"),
    ],
)
def test_a_url_csn_nothing_confirms_is_refused_with_what_to_configure(
    world: World, fields: dict[str, Any], code: str, caplog: pytest.LogCaptureFixture
) -> None:
    login = Login(claims={"sub": "eP1"}, fields=fields)
    response = world.authorize_and_return(world.launch("patient", csn="7003"), login)
    # The patient is asked to call; what to configure is the analyst's, in the log under the correlation id.
    assert response.status_code == 403 and "Please call your clinic" in html(response)
    assert_patient_words(html(response))
    assert code in caplog.text
    assert world.graph.calls == [] and world.events == []


def test_a_csn_field_in_the_token_response_confirms_the_url_without_a_read(world: World) -> None:
    login = Login(claims={"sub": "eP1"}, fields={"patient": "eP1", "csn": "7004"})
    response = world.authorize_and_return(world.launch("patient", csn="7004"), login)
    assert response.status_code == 303 and "/api/visits/" in response.headers["Location"]
    assert not any(r.startswith("read") for r in world.ehr.requests)
    assert world.events[-1].csn is None  # sealed on the queue
    assert open_event(world.sealer, world.events[-1]).csn == "7004"


def test_a_configuration_sent_back_to_approval_stops_launches_once_its_memory_lapses(world: World) -> None:
    now = [1000.0]
    services().launch = world.service(memory_clock=lambda: now[0])
    assert world.launch("provider").status_code == 303
    world.config = replace(world.config, is_approved=False)
    world.configurations.configs[world.config.id] = world.config
    now[0] += CONFIGURATION_MEMORY_SECONDS - 1
    assert world.launch("provider").status_code == 303  # this instance still remembers it approved
    now[0] += 2
    response = world.launch("provider")
    assert response.status_code == 403 and "pending approval" in html(response)


def test_a_deleted_configuration_stops_launches_once_its_memory_lapses(world: World) -> None:
    now = [1000.0]
    services().launch = world.service(memory_clock=lambda: now[0])
    assert world.launch("patient").status_code == 303
    del world.configurations.configs[world.config.id]
    now[0] += CONFIGURATION_MEMORY_SECONDS + 1
    response = world.launch("patient")
    assert response.status_code == 404 and "Please call your clinic" in html(response)  # a patient's words
    assert "Tenant config not found" not in html(response)


def test_a_launch_in_flight_meets_its_configuration_as_it_is_at_the_callback(world: World) -> None:
    begun = world.launch("provider")
    world.config = replace(world.config, is_approved=False)
    world.configurations.configs[world.config.id] = world.config
    services().launch.forget_configuration(world.config.id)  # as after the memory's lifetime
    login = Login(claims={"sub": "eDoc1", "fhirUser": f"{FHIR}/Practitioner/eDoc1"}, fields={"encounter": "eE1"})
    response = world.authorize_and_return(begun, login)
    assert response.status_code == 403 and "pending approval" in html(response)
