"""The composition root: every per-process object is built here, once, on first use.

``services()`` is the process's one ``Services``; ``reset()`` forgets it and the settings it was built from
(tests, benchmarks and the sandbox call it when settings change). Nothing else keeps a process singleton:
``shared/`` holds classes and their caches, never module-level instances. Building is lazy and free of I/O
until a request needs a component (importing ``function_app`` never raises), and each component is built at
most once even when the worker's threads ask for it together.

Tests may replace a component by assigning it (``services().launch = LaunchService(...)``) before it is
first used; ``reset()`` undoes that.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

import msal

from shared.configurations.model import WritebackMode
from shared.configurations.repository import ConfigurationRepository
from shared.ehr.backend_services import BackendServices
from shared.ehr.epic_writeback import EpicConnectionStatus
from shared.ehr.fhir_writeback import FhirAuditEvents, NoWriteback
from shared.ehr.smart import SmartClient, smart_client_for
from shared.http.outbound import SafeHttp, outbound_policy
from shared.jose.jwks import JwksCache
from shared.jose.keys import SigningKeys, signing_keys_from
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Settings, get_settings, reset_settings_cache
from shared.launch.interpreters import INTERPRETER_LINK_KIND
from shared.launch.service import LAUNCH_STATE_KINDS, SIGNIN_STATE_KIND, LaunchService
from shared.launch.user_map import UserMapRepository
from shared.microsoft.app_credentials import AppOnlyCredentials
from shared.microsoft.entra import STATE_KIND as PORTAL_SIGNIN_STATE_KIND
from shared.microsoft.entra import (
    EntraDocuments,
    EntraIdTokenValidator,
    EntraSignIn,
    build_msal_app,
    build_validator,
)
from shared.microsoft.notifications import (
    ENTRA_KEYS_PATH,
    ClientStates,
    NotificationCertificate,
    NotificationDecoder,
    ValidationTokens,
    notification_certificates,
)
from shared.microsoft.teams import TeamsClients
from shared.portal.service import EHR_STATE_KIND, PortalService
from shared.portal.sessions import SessionStore
from shared.reports.days import ReportDays
from shared.reports.fold import ReportFlush, ReportFold
from shared.reports.preferences import ReportPreferenceStore
from shared.reports.recorder import FactRecorder
from shared.reports.service import ReportService
from shared.reports.store import ReportFacts
from shared.storage.accounts import Storage
from shared.storage.state import StateRouter
from shared.visits.members import GroupMembers
from shared.visits.repository import VisitRepository
from shared.visits.subscriptions import CallEventSubscriptions
from shared.writeback.ledger import WritebackLedger
from shared.writeback.model import WritebackAdapter
from shared.writeback.targets import ConfigurationTargets
from shared.writeback.worker import FailureLog, WritebackWorker

T = TypeVar("T")

VALIDATION_TOKEN_KEY_REFETCH_SECONDS = 300.0  # Entra's keys: at most every 5 min for an unknown kid
# The states of a reader's own round trip through the EHR or Microsoft keep the language they chose
# (``shared.kernel.reader``); an interpreter's link is opened by someone else, so it keeps none.
ROUND_TRIP_STATE_KINDS = frozenset(
    {PORTAL_SIGNIN_STATE_KIND, EHR_STATE_KIND, *LAUNCH_STATE_KINDS} - {INTERPRETER_LINK_KIND}
)


class once(Generic[T]):  # noqa: N801 - used like @property
    """Like ``functools.cached_property``, but built at most once under concurrent first use.

    A non-data descriptor: once built, the value sits in the instance's ``__dict__`` and is read without the
    lock; assigning the attribute replaces it (tests). A build that raises caches nothing, so the next
    request tries again (e.g. msal's authority discovery while Entra ID is unreachable).
    """

    def __init__(self, build: Callable[[Any], T]) -> None:
        self._build = build
        self._name = build.__name__
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> once[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> T | once[T]:
        if instance is None:
            return self
        values = instance.__dict__
        with instance._lock:  # type: ignore[attr-defined]
            if self._name not in values:
                values[self._name] = self._build(instance)
            value: T = values[self._name]
        return value


class Services:
    """The process's collaborators, each built on first use from one ``Settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()  # re-entrant: a component's build reads the components it needs

    # --- adapters ---------------------------------------------------------------------------------------

    @once
    def storage(self) -> Storage:
        return Storage(self.settings)

    @once
    def microsoft_http(self) -> SafeHttp:
        """The checked client for Microsoft Entra ID (msal, published keys); Graph gets an async twin."""
        return SafeHttp(outbound_policy(self.settings), system="Microsoft Entra ID")

    @once
    def smart(self) -> SmartClient:
        """One SMART client: discovery and JWKS caches are shared by the portal, launches and writeback."""
        return smart_client_for(self.settings)

    @once
    def signing_keys(self) -> SigningKeys:
        return signing_keys_from(self.settings.signing_keys.reveal())

    @once
    def sealer(self) -> Sealer:
        """The one Sealer (``SEALING_KEYS``): what must be kept but not read by whoever reads the tables (visit
        context, launch events, sign-in state payloads, UPNs in the user map)."""
        return Sealer.from_text(self.settings.sealing_keys.reveal())

    @once
    def msal_app(self) -> msal.ConfidentialClientApplication:
        """The confidential client for user sign-ins (msal discovers the authority over HTTP when built)."""
        return build_msal_app(self.settings, self.microsoft_http)

    @once
    def entra_validator(self) -> EntraIdTokenValidator:
        return build_validator(self.settings, self.microsoft_http)

    @once
    def app_credentials(self) -> AppOnlyCredentials:
        settings = self.settings
        return AppOnlyCredentials(
            settings.entra_authority_host,
            settings.entra_client_id,
            settings.entra_client_secret.reveal(),
            http=self.microsoft_http,
        )

    @once
    def teams(self) -> TeamsClients:
        """One Graph client per organizer tenant, shared by launches and subscriptions."""
        settings = self.settings
        return TeamsClients(
            settings.graph_base_url,
            self.app_credentials.for_tenant,
            policy=outbound_policy(settings),
            timeout=settings.http_timeout_seconds,
        )

    @once
    def notification_certificates(self) -> list[NotificationCertificate]:
        return notification_certificates(self.settings.graph_encryption_certificate.reveal())

    @once
    def client_states(self) -> ClientStates:
        return ClientStates(self.settings.graph_client_state.reveal())

    @once
    def decoder(self) -> NotificationDecoder:
        settings = self.settings
        documents = EntraDocuments(self.microsoft_http)
        jwks = JwksCache(documents.get, min_refetch_seconds=VALIDATION_TOKEN_KEY_REFETCH_SECONDS)
        return NotificationDecoder(
            self.client_states,
            ValidationTokens(
                jwks,
                jwks_uri=settings.entra_authority_host.rstrip("/") + ENTRA_KEYS_PATH,
                client_id=settings.entra_client_id,
            ),
            {certificate.certificate_id: certificate.private_key for certificate in self.notification_certificates},
            connector_secret=settings.connector_secret.reveal(),
        )

    # --- sign-ins ---------------------------------------------------------------------------------------

    @once
    def states(self) -> StateRouter:
        """The one state store: a launch's states (they carry its context) in the configuration's geography,
        the portal's sign-ins (no EHR context) in the app's account. The reader's own round trips (all but an
        interpreter's link, which someone else opens) keep their language choice."""
        return StateRouter(
            self.storage, self.sealer, in_geography=LAUNCH_STATE_KINDS, round_trips=ROUND_TRIP_STATE_KINDS
        )

    def portal_sign_in(self) -> EntraSignIn:
        """The admins' and approvers' Microsoft sign-in (msal is built on the first sign-in, not before)."""
        return self._portal_sign_in

    @once
    def _portal_sign_in(self) -> EntraSignIn:
        return EntraSignIn(self.msal_app, self.entra_validator, self.states)

    def launch_sign_in(self) -> EntraSignIn:
        """The providers' one-time Microsoft sign-in."""
        return self._launch_sign_in

    @once
    def _launch_sign_in(self) -> EntraSignIn:
        return EntraSignIn(self.msal_app, self.entra_validator, self.states, state_kind=SIGNIN_STATE_KIND)

    # --- domain services --------------------------------------------------------------------------------

    @once
    def configurations(self) -> ConfigurationRepository:
        return ConfigurationRepository(self.storage.app)

    @once
    def visits(self) -> VisitRepository:
        return VisitRepository(self.storage, self.sealer)

    @once
    def sessions(self) -> SessionStore:
        return SessionStore(self.storage.app)

    @once
    def user_map(self) -> UserMapRepository:
        return UserMapRepository(self.storage, self.settings.connector_secret.reveal(), self.sealer)

    @once
    def portal(self) -> PortalService:
        return PortalService(self.settings, self.configurations, self.states, self.smart, self.user_map)

    @once
    def launch(self) -> LaunchService:
        settings = self.settings
        secret = settings.connector_secret.reveal()
        return LaunchService(
            public_base_url=settings.public_base_url,
            connector_secret=secret,
            configurations=self.configurations,
            ehr=self.smart,
            states=self.states,
            user_map=self.user_map,
            visits=self.visits,
            sign_in=self.launch_sign_in,
            meetings_for=self.teams.for_tenant,
            sealer=self.sealer,
            waiting_room_give_up=timedelta(minutes=settings.waiting_room_give_up_minutes),
        )

    @once
    def subscriptions(self) -> CallEventSubscriptions:
        return CallEventSubscriptions(
            self.visits,
            self.teams.for_tenant,
            self.client_states,
            self.notification_certificates[0],
            self.settings.public_base_url,
        )

    @once
    def targets(self) -> ConfigurationTargets:
        return ConfigurationTargets(self.configurations)

    # --- the usage report -----------------------------------------------------------------------------

    @once
    def report_facts(self) -> ReportFacts:
        return ReportFacts(self.storage, self.sealer)

    @once
    def report_days(self) -> ReportDays:
        return ReportDays(self.storage, self.report_facts)

    @once
    def report_preferences(self) -> ReportPreferenceStore:
        return ReportPreferenceStore(self.storage.app)

    @once
    def report_recorder(self) -> FactRecorder:
        return FactRecorder(
            self.report_facts,
            self.report_days,
            self.report_preferences,
            self.targets,
            secret=self.settings.connector_secret.reveal(),
            sealer=self.sealer,
        )

    @once
    def report_fold(self) -> ReportFold:
        return ReportFold(
            self.report_preferences,
            self.targets,
            secret=self.settings.connector_secret.reveal(),
            sealer=self.sealer,
        )

    @once
    def report_flush(self) -> ReportFlush:
        return ReportFlush(
            self.visits,
            self.report_facts,
            self.report_days,
            self.report_preferences,
            secret=self.settings.connector_secret.reveal(),
            sealer=self.sealer,
        )

    @once
    def reports(self) -> ReportService:
        return ReportService(self.configurations, self.report_preferences, self.report_facts, self.report_days)

    @once
    def worker(self) -> WritebackWorker:
        settings = self.settings
        http = self.smart.http  # the one checked transport: the bearer token goes only to checked addresses
        backend = BackendServices(self.smart)
        adapters: dict[WritebackMode, WritebackAdapter] = {
            WritebackMode.EPIC: EpicConnectionStatus(http, backend),
            WritebackMode.FHIR_AUDIT_EVENT: FhirAuditEvents(http, backend),
            WritebackMode.NONE: NoWriteback(),
        }
        return WritebackWorker(
            self.visits,
            WritebackLedger(self.storage),
            self.targets,
            adapters,
            FailureLog(self.storage.app, settings.writeback_queue_name, self.sealer),
            sealer=self.sealer,
            members=GroupMembers(settings.connector_secret.reveal()),
            report=self.report_fold.change_for,
        )


@functools.cache
def services() -> Services:
    """The process's one ``Services`` (settings are read, and checked, on first use)."""
    return Services(get_settings())


def reset() -> None:
    """Forget every built object and the settings they came from (tests, benchmarks, the sandbox)."""
    services.cache_clear()
    reset_settings_cache()
