"""The launch's SMART steps with the real SMART client against the sandbox EHR, in each of its vendor flavours
(Epic, Oracle Health, a plain SMART 2 server): a valid launch completes with the vendor's token response; a
tampered id_token, an id_token for another nonce and a replayed code are all refused; ``Epic-Client-ID`` goes
to Epic only."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.ehr.config import RegisteredClient
from sandbox.local_settings import private_key_pem
from sandbox.stand_ins import RunningStandIns, start_stand_ins
from shared.ehr.launch_params import AuthorizationResponse, LaunchKind, LaunchParams
from shared.ehr.smart import SmartClient
from shared.ehr.vendors import profile_for
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.jose.keys import SigningKeys
from shared.kernel.errors import StateError, UpstreamRejected
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Settings
from shared.launch.service import LAUNCH_STATE_KINDS, LaunchService, WaitForClinician
from shared.launch.user_map import UserMapRepository
from shared.storage.accounts import Storage
from shared.storage.state import StateRouter
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import open_event
from tests.support.launch_fakes import Config, Configurations, FakeSignIn, Graph
from tests.support.launch_world import FLAVOUR_VENDORS
from tests.support.sealing import sealer_for

pytestmark = pytest.mark.azurite

CLIENT_ID = "launch-integration-patient"
BASE = "http://connector.invalid"
Tamper = Callable[[dict[str, object]], None]


class TamperingTransport(httpx.HTTPTransport):
    """Lets a test rewrite the token endpoint's JSON answer (what a man in the middle or a bad EHR could send),
    and keeps every request's headers and the token endpoint's last answer."""

    def __init__(self, token_path: str) -> None:
        super().__init__()
        self.tamper: Tamper | None = None
        self.token_path = token_path
        self.sent: list[tuple[str, httpx.Headers]] = []
        self.token_response: dict[str, object] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((str(request.url), request.headers))
        response = super().handle_request(request)
        if request.url.path != self.token_path:
            return response
        response.read()
        self.token_response = response.json()
        if self.tamper is None:
            return httpx.Response(
                response.status_code, headers={"content-type": "application/json"}, content=response.content
            )
        body = response.json()
        self.tamper(body)
        return httpx.Response(response.status_code, headers={"content-type": "application/json"}, json=body)


@pytest.fixture(scope="module", params=sorted(FLAVOUR_VENDORS))
def stand_ins(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStandIns]:
    folder = Path(tmp_path_factory.mktemp(f"sandbox-{request.param}"))
    running = start_stand_ins(folder, ehr_options={"flavour": request.param})
    yield running
    running.stop()


@pytest.fixture
def transport(stand_ins: RunningStandIns) -> TamperingTransport:
    return TamperingTransport(stand_ins.ehr.config.spec.token_path)


@pytest.fixture
def service(stand_ins: RunningStandIns, settings: Settings, storage: Storage, transport: TamperingTransport):  # type: ignore[no-untyped-def]
    keys = SigningKeys.from_pem(private_key_pem())
    stand_ins.ehr.state.register_client(
        RegisteredClient(CLIENT_ID, (f"{BASE}/api/launch/callback",), jwks=keys.jwks(), name="integration")
    )
    policy = OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
    smart = SmartClient(SafeHttp(policy, transport=transport), keys)
    vendor = FLAVOUR_VENDORS[stand_ins.ehr.config.flavour]
    config = Config(
        id=str(uuid.uuid4()),
        tenant_id="11111111-1111-4111-8111-111111111111",
        fhir_base_url=stand_ins.ehr.config.fhir_base,
        patient_client_id=CLIENT_ID,
        vendor=vendor,
        # Oracle: the patient-access root its patient launches carry as iss (the FHIR base elsewhere)
        patient_fhir_base_url=stand_ins.ehr.config.patient_fhir_base,
    )
    secret = settings.connector_secret.reveal()
    sealer = Sealer.from_text(settings.sealing_keys.reveal())
    launch_service = LaunchService(
        public_base_url=BASE,
        connector_secret=secret,
        configurations=Configurations(config),  # type: ignore[arg-type]
        ehr=smart,
        states=StateRouter(storage, sealer, in_geography=LAUNCH_STATE_KINDS),
        user_map=UserMapRepository(storage, secret, sealer),
        visits=VisitRepository(storage, sealer),
        sign_in=lambda: FakeSignIn(),  # type: ignore[arg-type,return-value]
        meetings_for=Graph().meetings_for,
        sealer=sealer,
    )
    record = stand_ins.ehr.add_record(
        name="integration patient", kind="patient", launch_url=f"{BASE}/api/launch/{config.id}/patient",
        context_tokens=profile_for(vendor).patient_context_tokens, client_id=CLIENT_ID,
    )  # fmt: skip
    return launch_service, config, record


def authorize(stand_ins: RunningStandIns, service, *, nonce: str | None = None) -> AuthorizationResponse:  # type: ignore[no-untyped-def]
    launch_service, config, record = service
    visit = stand_ins.ehr.clinic.visits[0]
    url = stand_ins.ehr.create_launch(record.id, visit.appointment_id, visit.patient_id)
    query = parse_qs(urlsplit(url).query)
    params = LaunchParams(iss=query["iss"][0], launch=query["launch"][0], session_id=query.get("sessionId", [None])[0])
    request = launch_service.begin(LaunchKind.PATIENT, config.id, params)
    assert request.method == "GET"
    if nonce is not None:  # a code obtained for another sign-in, injected into this one
        parts = urlsplit(request.url)
        fields = {k: v[0] for k, v in parse_qs(parts.query).items()}
        fields["nonce"] = nonce
        request_url = urlunsplit(parts._replace(query=urlencode(fields)))
    else:
        request_url = request.url
    answer = httpx.get(request_url, follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    returned = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    assert "code" in returned, returned
    return AuthorizationResponse(state=returned["state"], code=returned["code"])


def test_a_valid_patient_launch_completes(  # type: ignore[no-untyped-def]
    stand_ins: RunningStandIns, service, settings: Settings, transport: TamperingTransport
) -> None:
    outcome = service[0].complete(authorize(stand_ins, service))
    assert isinstance(outcome, WaitForClinician)  # no organizer known yet
    assert outcome.event is not None and outcome.event.csn is None  # sealed for the queue
    event = open_event(sealer_for(settings), outcome.event)
    visit = stand_ins.ehr.clinic.visits[0]
    body = transport.token_response
    flavour = stand_ins.ehr.config.flavour
    if flavour == "epic":  # the CSN (Epic's OID) names the visit; Epic's string boolean and extras
        assert event.csn == visit.csn and event.appointment == visit.appointment_id
        assert body["need_patient_banner"] == "false" and "__epic.dstu2.patient" in body
    elif flavour == "oracle":  # no appointment: the encounter names the visit; Millennium's fields
        assert event.csn is None and event.appointment is None and event.encounter == visit.encounter_id
        assert body["need_patient_banner"] is False and body["tenant"] in stand_ins.ehr.config.fhir_base
        assert "appointment" not in body and body["expires_in"] == 570 and "username" in body
    else:  # plain SMART: the Appointment in fhirContext
        assert event.csn is None and event.appointment == visit.appointment_id
        assert "appointment" not in body and body["fhirContext"] == [
            {"reference": f"Appointment/{visit.appointment_id}"}
        ]
        assert body["need_patient_banner"] is False
    assert event.participant == f"Patient/{visit.patient_id}"  # the patient the token response names


def test_epic_client_id_goes_to_epic_only(  # type: ignore[no-untyped-def]
    stand_ins: RunningStandIns, service, transport: TamperingTransport
) -> None:
    service[0].complete(authorize(stand_ins, service))
    base = stand_ins.ehr.config.patient_fhir_base  # a patient launch's FHIR base (Oracle: its patient-access root)
    on_fhir = [headers.get("epic-client-id") for url, headers in transport.sent if url.startswith(base)]
    elsewhere = [headers.get("epic-client-id") for url, headers in transport.sent if not url.startswith(base)]
    assert on_fhir, "discovery and reads went to the FHIR base"
    if stand_ins.ehr.config.flavour == "epic":  # Epic: on its API calls (discovery, FHIR reads)
        assert set(on_fhir) == {CLIENT_ID}
    else:  # nobody else is told about Epic
        assert set(on_fhir) == set(elsewhere) == {None}


def test_the_id_tokens_kid_follows_the_vendor(  # type: ignore[no-untyped-def]
    stand_ins: RunningStandIns, service, transport: TamperingTransport
) -> None:
    service[0].complete(authorize(stand_ins, service))
    header = jwt.get_unverified_header(str(transport.token_response["id_token"]))
    claims = jwt.decode(str(transport.token_response["id_token"]), options={"verify_signature": False})
    assert ("kid" in header) is (stand_ins.ehr.config.flavour != "smart")  # the plain server signs kid-less
    relative = stand_ins.ehr.config.flavour == "smart"
    assert str(claims["fhirUser"]).startswith("Patient/") is relative


def _flip_signature(body: dict[str, object]) -> None:
    header, payload, signature = str(body["id_token"]).split(".")
    body["id_token"] = f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"


def _other_subject(body: dict[str, object]) -> None:
    header, payload, signature = str(body["id_token"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "e-prac-smith"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    body["id_token"] = f"{header}.{forged}.{signature}"


def _signed_by_someone_else(body: dict[str, object]) -> None:
    header = jwt.get_unverified_header(str(body["id_token"]))
    claims = jwt.decode(str(body["id_token"]), options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = {"kid": header["kid"]} if "kid" in header else {}  # the same kid, or none as the EHR signed it
    body["id_token"] = jwt.encode(claims, key, algorithm="RS256", headers=kid)


def _unsigned(body: dict[str, object]) -> None:
    claims = jwt.decode(str(body["id_token"]), options={"verify_signature": False})
    body["id_token"] = jwt.encode(claims, None, algorithm="none")


@pytest.mark.parametrize("tamper", [_flip_signature, _other_subject, _signed_by_someone_else, _unsigned])
def test_tampered_id_tokens_are_refused(  # type: ignore[no-untyped-def]
    stand_ins: RunningStandIns, service, transport: TamperingTransport, tamper: Tamper
) -> None:
    response = authorize(stand_ins, service)
    transport.tamper = tamper
    with pytest.raises(UpstreamRejected) as caught:
        service[0].complete(response)
    assert caught.value.code == "invalid_id_token"


def test_an_id_token_for_another_nonce_is_refused(stand_ins: RunningStandIns, service) -> None:  # type: ignore[no-untyped-def]
    response = authorize(stand_ins, service, nonce="a-nonce-from-another-sign-in")
    with pytest.raises(UpstreamRejected) as caught:
        service[0].complete(response)
    assert caught.value.code == "invalid_id_token" and "nonce" in caught.value.message


def test_state_is_single_use_and_a_replayed_code_is_refused(stand_ins: RunningStandIns, service) -> None:  # type: ignore[no-untyped-def]
    response = authorize(stand_ins, service)
    service[0].complete(response)
    with pytest.raises(StateError):
        service[0].complete(response)


def test_long_authorization_requests_are_posted_and_the_ehr_accepts_them(  # type: ignore[no-untyped-def]
    stand_ins: RunningStandIns, service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.ehr import smart

    capabilities = httpx.get(f"{stand_ins.ehr.config.fhir_base}/.well-known/smart-configuration").json()["capabilities"]
    if "authorize-post" not in capabilities:  # the plain SMART server does not offer it
        pytest.skip("this EHR flavour does not advertise authorize-post")
    monkeypatch.setattr(smart, "MAX_AUTHORIZE_GET_URL", 100)  # as if the launch token were a long JWT
    launch_service, config, record = service
    visit = stand_ins.ehr.clinic.visits[1]
    url = stand_ins.ehr.create_launch(record.id, visit.appointment_id, visit.patient_id)
    query = parse_qs(urlsplit(url).query)
    params = LaunchParams(iss=query["iss"][0], launch=query["launch"][0], session_id=query.get("sessionId", [None])[0])
    request = launch_service.begin(LaunchKind.PATIENT, config.id, params)
    assert request.method == "POST" and "?" not in request.url
    answer = httpx.post(request.url, data=dict(request.fields), follow_redirects=False)
    returned = {k: v[0] for k, v in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    outcome = launch_service.complete(AuthorizationResponse(state=returned["state"], code=returned["code"]))
    assert isinstance(outcome, WaitForClinician)
