"""The events feature end to end on the local Functions host, against the wired sandbox stand-ins.

Sandbox Graph performs the real validation handshake against our webhook, then sends encrypted rich
notifications with validationTokens signed by the sandbox Entra ID's published keys; the webhook
validates and decrypts them, queues events, and the queue trigger writes presence and Epic
connection statuses into the sandbox EHR.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msal
import pytest
from azure.core.credentials import AccessToken

from benchmarks.writeback_load import seed_configuration, visit_context
from connector.services import reset as reset_services
from connector.services import services
from function_app import build_app
from sandbox.ehr.__main__ import DEMO_PROVIDER_CLIENT_ID
from sandbox.graph.delivery import Delivery
from sandbox.host import LocalHost
from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO
from sandbox.server import free_port
from sandbox.stand_ins import RunningStandIns, start_stand_ins
from shared.configurations.model import WritebackMode
from shared.kernel.errors import UpstreamRejected
from shared.kernel.settings import Geography, Settings
from shared.microsoft.notifications import ClientStates, SubscriptionTarget
from shared.microsoft.teams import TeamsClient
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.model import Visit, VisitContext, with_meeting, without_subscription
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import seal_event
from shared.visits.subscriptions import CallEventSubscriptions
from tests.support.outbound import LOCAL_POLICY
from tests.support.sealing import sealer_for

pytestmark = pytest.mark.azurite

SMITH = "b0000000-0000-4000-8000-000000000001"


class MsalCredential:
    """App-only Graph tokens from the sandbox Entra ID through msal (client credentials)."""

    def __init__(self, authority_host: str) -> None:
        self.app = msal.ConfidentialClientApplication(
            CONNECTOR_CLIENT_ID,
            client_credential=CONNECTOR_CLIENT_SECRET,
            authority=f"{authority_host}/{CONTOSO.id}",
            instance_discovery=False,
        )

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        result = self.app.acquire_token_for_client(list(scopes))
        assert "access_token" in result, result
        return AccessToken(result["access_token"], int(time.time()) + int(result["expires_in"]))


@dataclass
class Pipeline:
    stand_ins: RunningStandIns
    host: LocalHost
    settings: Settings
    storage: Storage
    configuration_id: str
    subscriptions: CallEventSubscriptions
    teams: TeamsClient

    @property
    def webhook(self) -> str:
        return f"{self.host.url}/api/graph/notifications"


@pytest.fixture(scope="module")
def pipeline(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    port = free_port()
    connector_url = f"http://127.0.0.1:{port}"
    stand_ins = start_stand_ins(
        tmp_path_factory.mktemp("stand-ins"),
        connector_url=connector_url,
        graph_options={"delivery_retry_delays": (0.2, 0.5), "expose_delivery_log": True},
    )
    try:
        env = {
            **base_env,
            **stand_ins.settings,
            "PUBLIC_BASE_URL": connector_url,
            "WRITEBACK_QUEUE_NAME": f"wb-{uuid.uuid4().hex[:10]}",
            "AzureWebJobs.subscription_upkeep.Disabled": "true",
            "AzureWebJobs.sweep_expired_state.Disabled": "true",
        }
        settings = Settings.from_env(env)
        storage = Storage(settings)
        ehr = stand_ins.ehr
        # The demo provider client's key set is our own /api/.well-known/jwks.json.
        configuration_id = seed_configuration(
            storage, ehr.config.fhir_base, DEMO_PROVIDER_CLIENT_ID, WritebackMode.EPIC
        ).id
        reset_services()
        host_json = {
            "version": "2.0",
            "extensions": {
                "http": {"routePrefix": "api"},
                "queues": {"maxDequeueCount": 5, "visibilityTimeout": "00:00:01", "maxPollingInterval": "00:00:00.200"},
            },
        }
        trust = pytest.MonkeyPatch()
        for key in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):  # trust the sandbox CA, as the demo does
            trust.setenv(key, stand_ins.settings[key])
        with LocalHost(build_app(), env, port=port, host_json=host_json) as host:
            teams = TeamsClient(
                settings.graph_base_url, MsalCredential(settings.entra_authority_host), policy=LOCAL_POLICY
            )
            subscriptions = services().subscriptions  # the production wiring, from the host's settings
            yield Pipeline(stand_ins, host, settings, storage, configuration_id, subscriptions, teams)
        trust.undo()
    finally:
        reset_services()
        stand_ins.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def open_visit(pipeline: Pipeline) -> tuple[Visit, Any]:
    """A visit whose meeting exists in sandbox Graph (as the launch would leave it), subscribed."""
    clinic_visit = pipeline.stand_ins.ehr.clinic.visits[2]
    context = visit_context(clinic_visit)
    repository = VisitRepository(pipeline.storage, sealer_for(pipeline.settings))
    visit = repository.get_or_create(Geography.AMERICAS, uuid.uuid4().hex, pipeline.configuration_id, context)
    start = datetime.now(UTC)
    meeting = pipeline.teams.create_or_get_meeting(
        organizer_object_id=SMITH,
        external_id=visit.key,
        subject="Virtual visit",
        start=start,
        end=start + timedelta(hours=1),
    )
    pipeline.teams.secure_lobby(organizer_object_id=SMITH, meeting_id=meeting.id)
    visit = repository.update(
        visit,
        with_meeting(
            meeting_id=meeting.id,
            join_web_url=meeting.join_web_url,
            organizer_tenant_id=CONTOSO.id,
            organizer_object_id=SMITH,
        ),
    )
    visit = pipeline.subscriptions.ensure(visit)
    return visit, clinic_visit


def test_validation_handshake_echoes_the_token_as_plain_text(pipeline: Pipeline) -> None:
    for path in ("graph/notifications", "graph/lifecycle"):
        response = httpx.post(
            f"{pipeline.host.url}/api/{path}",
            params={"validationToken": "Validation: Testing client application reachability <&>"},
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Validation: Testing client application reachability <&>"


def test_forged_client_state_is_accepted_but_queues_nothing(pipeline: Pipeline) -> None:
    body = {"value": [{"subscriptionId": "s", "clientState": "guess", "tenantId": CONTOSO.id, "changeType": "updated"}]}
    response = httpx.post(pipeline.webhook, json=body)
    assert response.status_code == 202
    queue = pipeline.storage.app.queue(pipeline.settings.writeback_queue_name)
    assert queue.get_queue_properties().approximate_message_count == 0


def test_our_client_state_with_a_forged_validation_token_is_refused(pipeline: Pipeline) -> None:
    target = SubscriptionTarget(Geography.AMERICAS, "k" * 64, SMITH, pipeline.configuration_id)
    state = ClientStates(pipeline.settings.graph_client_state.reveal()).issue(target)
    item = {"subscriptionId": "s", "clientState": state, "tenantId": CONTOSO.id, "encryptedContent": {}}
    response = httpx.post(pipeline.webhook, json={"value": [item], "validationTokens": ["e30.e30.sig"]})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_validation_token"


def test_malformed_body_is_a_400_problem(pipeline: Pipeline) -> None:
    response = httpx.post(pipeline.webhook, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


def test_lobby_admit_leave_become_presence_and_epic_connect_disconnect(pipeline: Pipeline) -> None:
    graph, ehr = pipeline.stand_ins.graph, pipeline.stand_ins.ehr
    visit, clinic_visit = open_visit(pipeline)
    assert visit.subscription_id and visit.subscription_expires_at
    subscription = graph.subscription(visit.subscription_id)
    assert subscription is not None and subscription.notification_url == pipeline.webhook
    repository = VisitRepository(pipeline.storage, sealer_for(pipeline.settings))

    def presence() -> dict[Role, EventKind]:
        current = repository.get(Geography.AMERICAS, visit.key)
        assert current is not None
        return {role: p.state for role, p in current.presence.items()}

    def recorded(external_id: str, status: str) -> int:
        return ehr.count_status_changes(conference_id=clinic_visit.csn, external_id=external_id, status=status)

    assert visit.meeting_id is not None
    doctor = graph.join_user(visit.meeting_id, SMITH)
    wait_for(lambda: presence().get(Role.PROVIDER) is EventKind.CONNECTED)
    patient = graph.join_anonymous(visit.meeting_id, "Pat Example")
    wait_for(lambda: presence().get(Role.PATIENT) is EventKind.LOBBY)
    assert recorded(clinic_visit.patient_id, "1") == 0  # waiting in the lobby is not "connected"
    graph.admit(visit.meeting_id, patient.id)
    wait_for(lambda: presence().get(Role.PATIENT) is EventKind.CONNECTED)
    graph.leave(visit.meeting_id, patient.id)
    graph.leave(visit.meeting_id, doctor.id)
    wait_for(lambda: presence() == {Role.PROVIDER: EventKind.DISCONNECTED, Role.PATIENT: EventKind.DISCONNECTED})
    wait_for(lambda: recorded(clinic_visit.practitioner_id, "2") and recorded(clinic_visit.patient_id, "2"))
    for external_id in (clinic_visit.practitioner_id, clinic_visit.patient_id):
        assert (recorded(external_id, "1"), recorded(external_id, "2")) == (1, 1)

    def visit_deliveries() -> list[Delivery]:
        return [d for d in graph.deliveries() if d.subscription_id == visit.subscription_id]

    # The last leave's roster notification can still be in flight once presence shows it: wait for every one.
    wait_for(lambda: bool(visit_deliveries()) and all(d.state != "pending" for d in visit_deliveries()))
    deliveries = visit_deliveries()
    assert all(d.state == "delivered" for d in deliveries)
    slowest = max((a.finished_at - a.started_at).total_seconds() for d in deliveries for a in d.attempts)
    assert slowest < 3.0  # Graph's budget per delivery


def test_reauthorization_required_renews_the_subscription(pipeline: Pipeline) -> None:
    graph = pipeline.stand_ins.graph
    visit, _ = open_visit(pipeline)
    assert visit.subscription_id is not None and visit.subscription_expires_at is not None
    subscription = graph.subscription(visit.subscription_id)
    assert subscription is not None
    subscription.expiration = datetime.now(UTC) + timedelta(minutes=5)  # Graph wants it reauthorized soon
    delivery = graph.send_lifecycle_notification(visit.subscription_id)
    wait_for(lambda: delivery.state == "delivered")
    assert delivery.attempts[-1].status_code == 202
    renewed = graph.subscription(visit.subscription_id)
    assert renewed is not None
    assert abs((renewed.expiration - visit.subscription_expires_at).total_seconds()) < 1  # PATCHed back


def meeting_visit(pipeline: Pipeline) -> tuple[Visit, Any]:
    """A visit with a meeting but no subscription yet (as the launch leaves it)."""
    clinic_visit = pipeline.stand_ins.ehr.clinic.visits[3]
    context = VisitContext(
        csn=clinic_visit.csn,
        patient=f"Patient/{clinic_visit.patient_id}",
        provider=f"Practitioner/{clinic_visit.practitioner_id}",
    )
    repository = VisitRepository(pipeline.storage, sealer_for(pipeline.settings))
    visit = repository.get_or_create(Geography.AMERICAS, uuid.uuid4().hex, pipeline.configuration_id, context)
    start = datetime.now(UTC)
    meeting = pipeline.teams.create_or_get_meeting(
        organizer_object_id=SMITH,
        external_id=visit.key,
        subject="Visit",
        start=start,
        end=start + timedelta(hours=1),
    )
    visit = repository.update(
        visit,
        with_meeting(
            meeting_id=meeting.id,
            join_web_url=meeting.join_web_url,
            organizer_tenant_id=CONTOSO.id,
            organizer_object_id=SMITH,
        ),
    )
    return visit, clinic_visit


def test_provider_launch_event_subscribes_the_visits_meeting(pipeline: Pipeline) -> None:
    visit, clinic_visit = meeting_visit(pipeline)
    launch = VisitEvent(
        configuration_id=visit.configuration_id,
        geography=visit.geography.value,
        visit_key=visit.key,
        kind=EventKind.CONNECTED,
        role=Role.PROVIDER,
        occurred_at=datetime.now(UTC),
        source=Source.LAUNCH,
        participant=f"Practitioner/{clinic_visit.practitioner_id}",
        csn=clinic_visit.csn,
    )
    sealed = seal_event(sealer_for(pipeline.settings), launch)  # as the launch queues it
    pipeline.storage.app.queue(pipeline.settings.writeback_queue_name).send_message(sealed.to_json())
    repository = VisitRepository(pipeline.storage, sealer_for(pipeline.settings))
    subscribed = wait_for(lambda: (v := repository.get(Geography.AMERICAS, visit.key)) and v.subscription_id and v)
    live = pipeline.stand_ins.graph.subscription(subscribed.subscription_id)
    assert live is not None and live.notification_url == pipeline.webhook
    assert subscribed.presence[Role.PROVIDER].state is EventKind.CONNECTED


def test_a_subscription_graph_has_but_the_visit_lost_is_recorded_not_refused(pipeline: Pipeline) -> None:
    """A worker crashed between Graph's 201 and recording the subscription: Graph now answers 409."""
    visit, _ = open_visit(pipeline)
    assert visit.subscription_id is not None
    lost = VisitRepository(pipeline.storage, sealer_for(pipeline.settings)).update(
        visit, without_subscription(visit.subscription_id)
    )
    assert lost.subscription_id is None
    again = pipeline.subscriptions.ensure(lost)
    assert again.subscription_id == visit.subscription_id
    stored = VisitRepository(pipeline.storage, sealer_for(pipeline.settings)).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.subscription_id == visit.subscription_id


def test_an_unrecorded_subscription_encrypted_for_a_retired_certificate_is_replaced(pipeline: Pipeline) -> None:
    graph = pipeline.stand_ins.graph
    visit, _ = open_visit(pipeline)
    assert visit.subscription_id is not None
    old = graph.subscription(visit.subscription_id)
    assert old is not None
    current_certificate = old.encryption_certificate_id
    old.encryption_certificate_id = "retired-certificate"  # subscribed before a certificate rotation
    lost = VisitRepository(pipeline.storage, sealer_for(pipeline.settings)).update(
        visit, without_subscription(visit.subscription_id)
    )
    again = pipeline.subscriptions.ensure(lost)
    assert again.subscription_id not in (None, visit.subscription_id)
    assert graph.subscription(visit.subscription_id) is None  # the old one was deleted
    replacement = graph.subscription(str(again.subscription_id))
    assert replacement is not None and replacement.encryption_certificate_id == current_certificate


def test_concurrent_subscribes_of_one_visit_end_with_one_recorded_subscription(pipeline: Pipeline) -> None:
    visit, _ = meeting_visit(pipeline)

    def ensure(_: int) -> Visit | BaseException:
        try:
            return pipeline.subscriptions.ensure(visit)
        except Exception as exc:  # noqa: BLE001 - each outcome is checked below
            return exc

    with ThreadPoolExecutor(2) as pool:  # two queue workers handling the same visit's events at once
        results = list(pool.map(ensure, range(2)))
    winners = [r for r in results if isinstance(r, Visit)]
    assert winners and all(w.subscription_id == winners[0].subscription_id for w in winners)
    for loser in (r for r in results if not isinstance(r, Visit)):  # still in Graph's handshake: upkeep retries
        assert isinstance(loser, UpstreamRejected) and loser.code == "graph_subscription_exists"
    stored = VisitRepository(pipeline.storage, sealer_for(pipeline.settings)).get(Geography.AMERICAS, visit.key)
    assert stored is not None and stored.subscription_id == winners[0].subscription_id
    live = [s for s in pipeline.stand_ins.graph.subscriptions.all() if s.meeting_id == visit.meeting_id]
    assert [s.id for s in live] == [stored.subscription_id]


def test_upkeep_subscribes_missing_and_deletes_finished(pipeline: Pipeline) -> None:
    graph = pipeline.stand_ins.graph
    missing, _ = meeting_visit(pipeline)
    finished, _ = open_visit(pipeline)
    assert finished.meeting_id is not None and finished.subscription_id is not None
    doctor = graph.join_user(finished.meeting_id, SMITH)
    graph.leave(finished.meeting_id, doctor.id)
    repository = VisitRepository(pipeline.storage, sealer_for(pipeline.settings))
    wait_for(
        lambda: (
            (v := repository.get(Geography.AMERICAS, finished.key))
            and v.presence.get(Role.PROVIDER)
            and v.presence[Role.PROVIDER].state is EventKind.DISCONNECTED
        )
    )
    later = datetime.now(UTC) + timedelta(minutes=11)
    scanned: list[str] = []
    result = pipeline.subscriptions.upkeep(Geography.AMERICAS, now=later, also=lambda v: scanned.append(v.key))
    assert result.created >= 1 and result.deleted >= 1  # other modules' visits may share the table
    assert {missing.key, finished.key} <= set(scanned)  # every live visit is offered to the context release
    now_missing = repository.get(Geography.AMERICAS, missing.key)
    now_finished = repository.get(Geography.AMERICAS, finished.key)
    assert now_missing is not None and now_missing.subscription_id
    assert now_finished is not None and now_finished.subscription_id is None
    assert graph.subscription(finished.subscription_id) is None
