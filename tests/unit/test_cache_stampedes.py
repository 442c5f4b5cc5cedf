"""A kept value expiring for every thread at once costs one fetch, not one per invocation in flight.

Each cache the writeback and the launches share in a worker (the Backend Services token, SMART discovery, the
EHR's key set, a configuration's writeback target, its report settings, the launch's configuration) is asked by
12 threads at the moment it is missing; the fetch is held until all of them have asked.
"""

from __future__ import annotations

import threading
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from sandbox.local_settings import local_values, private_key_pem
from shared.ehr.backend_services import BackendServices
from shared.ehr.smart import SmartClient, TokenResponse
from shared.http.outbound import OutboundPolicy, SafeHttp
from shared.jose.jwks import JwksCache
from shared.jose.keys import SigningKeys
from shared.kernel.errors import NotFound
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Settings
from shared.launch.service import LAUNCH_STATE_KINDS, LaunchService, TenantConfigNotFound
from shared.reports.preferences import ReportPreferences, ReportPreferenceStore
from shared.storage.accounts import Storage
from shared.storage.state import StateRouter
from shared.writeback.targets import ConfigurationTargets
from tests.support.fake_ehr import running_fake_ehr
from tests.support.stampede import stampede

KEYS = SigningKeys.from_pem(private_key_pem())
THREADS = 12
DEAD_PORT_BASE = 9  # nothing answers there: no storage call is made


class TokenSource:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.requests = 0

    def backend_services_token(self, fhir_base_url: str, *, client_id: str, scope: str, vendor: Any = None) -> Any:
        self.requests += 1
        assert self.gate.wait(timeout=10)
        return TokenResponse(f"token-{self.requests}", None, scope, {"expires_in": 300})


def test_one_backend_services_token_request_when_the_kept_token_expires() -> None:
    now = [0.0]
    source = TokenSource()
    backend = BackendServices(source, clock=lambda: now[0])
    ask = lambda: backend.access_token("https://ehr.example/fhir", "client", "system/AuditEvent.write")  # noqa: E731
    assert set(stampede(THREADS, ask, source.gate)) == {"token-1"}
    assert source.requests == 1
    now[0] = 241.0  # within a minute of its expiry: renewed, once for all
    source.gate.clear()
    assert set(stampede(THREADS, ask, source.gate)) == {"token-2"}
    assert source.requests == 2


def test_one_discovery_when_the_smart_configuration_is_missing() -> None:
    with running_fake_ehr(KEYS.jwks) as ehr:
        client = SmartClient(SafeHttp(OutboundPolicy(allowed_hosts=frozenset({"127.0.0.1"}), timeout_seconds=5)), KEYS)
        gate, fetched = threading.Event(), []
        get = client.http.get

        def held(url: str, **kwargs: Any) -> Any:
            fetched.append(url)
            assert gate.wait(timeout=10)
            return get(url, **kwargs)

        client.http.get = held  # type: ignore[method-assign]
        found = stampede(THREADS, lambda: client.discover(ehr.fhir_base, client_id="prov"), gate)
    assert len(fetched) == 1
    assert len({id(config) for config in found}) == 1


def test_one_key_set_fetch_when_it_is_missing_and_one_when_an_unknown_key_appears() -> None:
    gate, fetched = threading.Event(), []

    def fetch(url: str) -> dict[str, Any]:
        fetched.append(url)
        assert gate.wait(timeout=10)
        return KEYS.jwks()

    cache = JwksCache(fetch, min_refetch_seconds=0)
    found = stampede(THREADS, lambda: cache.key("https://ehr.example/jwks", KEYS.active.kid), gate)
    assert len(fetched) == 1
    assert {key.key_id for key in found} == {KEYS.active.kid}  # type: ignore[union-attr]
    gate.clear()
    unknown = stampede(THREADS, lambda: cache.key("https://ehr.example/jwks", "rotated-in"), gate)
    assert len(fetched) == 2  # one forced refetch for all the tokens naming the new key
    assert all(type(outcome).__name__ == "InvalidIdToken" for outcome in unknown)


class Configurations:
    """Knows no configuration; each lookup counted and held until the gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reads = 0

    def find_approved(self, configuration_id: str) -> None:
        self.reads += 1
        assert self.gate.wait(timeout=10)

    def find_for_launch(self, configuration_id: str, iss: str, *, patient: bool = False) -> None:
        self.find_approved(configuration_id)


def test_one_configuration_read_for_the_writebacks_that_find_its_target_missing() -> None:
    configurations = Configurations()
    targets = ConfigurationTargets(configurations)  # type: ignore[arg-type]
    outcomes = stampede(THREADS, lambda: targets.target_for("cfg-1"), configurations.gate)
    assert configurations.reads == 1
    assert all(isinstance(outcome, NotFound) for outcome in outcomes)  # the one answer, for each of them


def test_one_configuration_read_for_the_launches_that_find_it_missing() -> None:
    configurations = Configurations()
    env = local_values(DEAD_PORT_BASE)
    router = StateRouter(
        Storage(Settings.from_env(env)), Sealer.from_text(new_key_text()), in_geography=LAUNCH_STATE_KINDS
    )
    unused: Any = None
    service = LaunchService(
        public_base_url="https://connector.example",
        connector_secret="s" * 32,
        configurations=configurations,  # type: ignore[arg-type]
        ehr=unused,
        states=router,
        user_map=unused,
        visits=unused,
        sign_in=unused,
        meetings_for=unused,
        sealer=unused,
    )
    iss = "https://ehr.example/fhir"
    outcomes = stampede(
        THREADS, lambda: service._launch_configuration("cfg-1", iss, patient=False), configurations.gate
    )
    assert configurations.reads == 1
    assert all(isinstance(outcome, TenantConfigNotFound) for outcome in outcomes)


class SettingsTable:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reads = 0

    def get_entity(self, partition_key: str, row_key: str) -> Any:
        self.reads += 1
        assert self.gate.wait(timeout=10)
        raise ResourceNotFoundError("no settings yet")


class Account:
    name = "AzureWebJobsStorage"

    def __init__(self) -> None:
        self.settings = SettingsTable()

    def table(self, name: str) -> SettingsTable:
        return self.settings


def test_one_report_settings_read_for_the_writebacks_that_find_them_missing() -> None:
    account = Account()
    store = ReportPreferenceStore(account)  # type: ignore[arg-type]
    found = stampede(THREADS, lambda: store.cached("cfg-1"), account.settings.gate)
    assert account.settings.reads == 1
    assert set(found) == {ReportPreferences()}
