"""Provider and patient EHR launches into one Teams meeting per appointment.

The steps, each a method below (``connector/launch.py`` maps routes onto them):

    begin(kind, configuration id, iss + launch)
        configuration named by the launch URL, ``iss`` = its FHIR URL, approved — before any
        outbound request (remembered 30 s per instance) → discovery (cached) → a state tagged with
        the configuration's geography, sealing the PKCE verifier, nonce and launch context tokens
        (nothing is written) → authorization request (GET, or POST when advertised and long)
    complete(authorization response)
        consume the state once (one conditional write in its tag's geography) → its configuration
        as it is now → code exchange (private_key_jwt)
        → id_token (signature, iss, aud, exp, nonce) → launch context: what the EHR asserted (user,
        encounter / appointment / CSN, patient), the launch URL's sessionId / departmentId only when
        the EHR's records confirm them (``context_check``)
        provider: mapping? no → one-time Microsoft 365 sign-in (``finish_sign_in``) → the clinician
                  confirms the link on a page bound to their browser (``confirm_link``) → meeting
        patient:  meeting? yes → lobby; organizer known → create it; else a waiting page
    visit(visit key, signed token), presence(...)
        the provider page and its live panel; the patient's waiting page re-check

Meeting: ``createOrGet`` under the organizer with externalId = HMAC(configuration, appointment
key), then the lobby PATCH. Organizer = the appointment's primary performer when mapped, else
the launching provider; the first meeting recorded on the visit row wins, so every later
launch, provider or patient, lands in the same meeting.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from shared.configurations.model import Configuration, Vendor
from shared.configurations.repository import ConfigurationRepository
from shared.ehr.human_name import display_name
from shared.ehr.launch_context import PATIENT_SCOPES as PATIENT_LAUNCH_SCOPES
from shared.ehr.launch_context import PROVIDER_SCOPES as PROVIDER_LAUNCH_SCOPES
from shared.ehr.launch_context import (
    SUBJECT_USER_TYPE,
    LaunchContext,
    asserted_context,
    books_as_interpreter,
    primary_performer,
)
from shared.ehr.launch_params import AuthorizationResponse, LaunchKind, LaunchParams
from shared.ehr.smart import AuthorizationRequest, Pkce, SmartClient
from shared.ehr.vendors import profile_for
from shared.kernel.clock import utcnow
from shared.kernel.errors import (
    Audience,
    BadRequest,
    Conflict,
    ErrorPage,
    Forbidden,
    InvalidIdToken,
    NotFound,
    StateError,
    UpstreamError,
    UpstreamRejected,
    speaking_to,
)
from shared.kernel.i18n import N_
from shared.kernel.identifiers import keyed_id, log_id, random_token
from shared.kernel.memo import Memo
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.kernel.single_flight import SingleFlight
from shared.launch.context_check import ContextCheck, LaunchReads
from shared.launch.groups import GroupVisits
from shared.launch.interpreters import INTERPRETER_LINK_KIND, InterpreterLinks
from shared.launch.user_map import UserMapping, UserMapRepository
from shared.microsoft.entra import EntraSignIn
from shared.microsoft.teams import AccessPolicyMissing, Meeting
from shared.storage.state import GEOGRAPHY_TAGS, TAG_SEPARATOR, StateRouter
from shared.visits.events import EventKind, Role, Source, VisitEvent, user_hint
from shared.visits.model import (
    Colleague,
    Visit,
    VisitContext,
    WaitingRoom,
    evolve,
    merged_context,
    with_context,
    with_meeting,
    with_waiting_room,
)
from shared.visits.panel import Panel, panel_of
from shared.visits.repository import VisitRepository
from shared.visits.sealed_context import seal_event
from shared.visits.tokens import JOIN_LINK_LIFETIME, VisitGrant, VisitTokens

logger = logging.getLogger(__name__)

STATE_KIND = "ehr-launch"
INTRO_STATE_KIND = "launch-signin-intro"
SIGNIN_STATE_KIND = "launch-signin"
CONFIRM_STATE_KIND = "launch-confirm"
# They carry launch context, so they live in the configuration's geography (``StateRouter``).
LAUNCH_STATE_KINDS = frozenset(
    {STATE_KIND, INTRO_STATE_KIND, SIGNIN_STATE_KIND, CONFIRM_STATE_KIND, INTERPRETER_LINK_KIND}
)
INTRO_TTL = timedelta(minutes=10)  # from the explanation page to the press of "Continue"
CONFIRM_TTL = timedelta(minutes=5)  # from the Microsoft sign-in's return to the press of "Link my account"
PROVIDER_SCOPES = PROVIDER_LAUNCH_SCOPES
PATIENT_SCOPES = PATIENT_LAUNCH_SCOPES
MEETING_SUBJECT = "Virtual visit"  # never patient data: the subject is visible to every participant
MEETING_LENGTH = timedelta(hours=1)
EHR = "EHR"
MAPPING_MEMORY_SECONDS = 600.0
VISIT_MEMORY_SECONDS = 3600.0
# An approved configuration is remembered this long per instance: its deletion, or its return to approval,
# stops new launches on this instance within this time (on the next read after it, at once).
CONFIGURATION_MEMORY_SECONDS = 30.0


# --- errors with their own pages ------------------------------------------------------------


class TenantConfigNotFound(NotFound):
    """The launch URL's configuration does not exist, or ``iss`` is not its FHIR URL."""

    code = "tenant_config_not_found"
    page = ErrorPage(
        N_("Tenant config not found"),
        N_("The connector has no configuration for this launch."),
        help=(
            N_(
                "The FDI record's launch URL and the EHR environment match: test records in the test "
                "environment, production records in production."
            ),
            N_("The configuration's FHIR base URL is exactly the FHIR base URL this EHR environment sends (iss)."),
            N_("The configuration still exists in the configuration portal."),
        ),
    )

    def __init__(self) -> None:
        super().__init__("Tenant config not found.")


class ConfigurationPending(Forbidden):
    code = "configuration_pending"
    page = ErrorPage(
        N_("Configuration pending approval"),
        N_("This EHR configuration exists but has not been approved yet, so visits cannot start."),
        help=(
            N_("The approver named in the configuration portal signs in, validates the EHR sign-in and approves it."),
        ),
    )

    def __init__(self) -> None:
        super().__init__("This EHR configuration is pending approval.")


class EhrSignInRejected(UpstreamRejected):
    """The EHR's authorization server answered with an OAuth 2 error; ``code`` is its ``error``."""

    def __init__(self, error: str) -> None:
        safe = "".join(c for c in error if c.isalnum() or c in "_-.")[:64] or "unknown_error"
        super().__init__(f"The EHR returned the OAuth2 error {safe}.", system=EHR, code=safe)


class WrongTenant(Forbidden):
    code = "signin_wrong_tenant"

    def __init__(self) -> None:
        super().__init__(
            N_(
                "You signed in with a Microsoft 365 account of another organization. Sign in with your work account "
                "of the organization that set up this EHR connection, or of one it shares the connection with."
            )
        )
        self.page = ErrorPage(N_("Wrong Microsoft 365 account"), self.message)


class ConfirmationNotBound(StateError):
    """The confirmation came from a browser other than the one that signed in to Microsoft 365."""

    code = "confirm_not_bound"
    page = ErrorPage(
        N_("Please confirm in your own browser"),
        N_(
            "This confirmation belongs to a sign-in made in another browser, so nothing was linked. If you did not "
            "start this yourself, you can close this window: your account is not affected."
        ),
        help=(
            N_("To use virtual visits, start the visit again from Epic on your own computer and sign in there."),
            N_(
                "If someone sent you this link, tell your IT support: only the clinician who starts a visit may link "
                "their Microsoft 365 account."
            ),
        ),
    )

    def __init__(self) -> None:
        super().__init__("This confirmation was started in another browser. Nothing was linked.")


class ConfirmationForged(Forbidden):
    """A confirmation POST without this page's form token (another site's form, or a hand-made request)."""

    code = "csrf"
    page = ErrorPage(
        N_("Please confirm on the confirmation page"),
        N_("This request did not come from the confirmation page, so nothing was linked."),
        help=(N_("Start the visit again from Epic and press the button on the page that asks you to confirm."),),
    )

    def __init__(self) -> None:
        super().__init__("This confirmation did not come from the confirmation page. Nothing was linked.")


class SignInStartRefused(Forbidden):
    """A "Continue" to the one-time sign-in from another browser, or without the explaining page's form token."""

    code = "signin_start_refused"
    page = ErrorPage(
        N_("Please start the sign-in from your own visit"),
        N_(
            "This sign-in was not started from the page the connector showed in this browser, so nothing was "
            "started and nothing was linked."
        ),
        help=(
            N_(
                "Start the visit again from Epic on your own computer and press Continue on the page that explains "
                "the one-time sign-in."
            ),
        ),
    )

    def __init__(self) -> None:
        super().__init__(N_("This sign-in was not started from the connector's page. Nothing was started."))


# --- what the launch needs from Graph ------------------------------------------------------------


class Meetings(Protocol):
    """``shared.microsoft.teams.TeamsClient`` for one tenant (a protocol so tests can count calls)."""

    def create_or_get_meeting(
        self, *, organizer_object_id: str, external_id: str, subject: str, start: datetime, end: datetime
    ) -> Meeting: ...

    def secure_lobby(self, *, organizer_object_id: str, meeting_id: str) -> None: ...


# --- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShowProviderPage:
    url: str
    event: VisitEvent | None = None


@dataclass(frozen=True)
class SignInFirst:
    url: str
    browser_binding: str  # the caller gives it to the browser (a cookie) and hands it back on return


@dataclass(frozen=True)
class ExplainSignIn:
    """A clinician's first launch: a page says why they sign in to Microsoft 365 once, then "Continue" starts it.

    ``state`` and ``csrf`` go into the page's form (posted to ``start_sign_in``); ``browser_binding`` to the
    browser as a cookie, which the Microsoft sign-in and the confirmation then require too.
    """

    state: str
    csrf: str
    browser_binding: str


@dataclass(frozen=True)
class ConfirmLink:
    """The Microsoft 365 sign-in came back: the clinician is shown who is being linked and must confirm.

    ``state`` and ``csrf`` go into the page's form; ``browser_binding`` to the browser as a cookie. The EHR
    user's name (None when the EHR would not say) and the account are shown on the page and kept nowhere.
    """

    state: str
    csrf: str
    browser_binding: str
    ehr_user_type: str
    ehr_user_name: str | None
    account_upn: str
    account_name: str

    @property
    def names_differ(self) -> bool:
        """The EHR's name and the Microsoft 365 display name share no word (a hint for the clinician, no rule)."""
        if not self.ehr_user_name:
            return False
        return not (_name_words(self.ehr_user_name) & _name_words(self.account_name))


_TITLES = frozenset({"dr", "mr", "mrs", "ms", "mx", "prof", "nurse", "md", "rn", "np", "pa", "do", "phd"})


def _name_words(name: str) -> set[str]:
    words = {w.strip(".,()").casefold() for w in name.split()}
    return {w for w in words if len(w) > 1 and w not in _TITLES}


@dataclass(frozen=True)
class LinkDeclined:
    """The clinician pressed "This is not me": nothing was stored."""


@dataclass(frozen=True)
class JoinMeeting:
    join_web_url: str
    event: VisitEvent | None = None


@dataclass(frozen=True)
class ShowGroupJoinPage:
    """A group visit's patient: their visit page, which gives the number to type in their Teams name."""

    url: str
    event: VisitEvent | None = None


@dataclass(frozen=True)
class WaitForClinician:
    url: str
    event: VisitEvent | None = None


LaunchOutcome = ShowProviderPage | ExplainSignIn | JoinMeeting | WaitForClinician | ShowGroupJoinPage


@dataclass(frozen=True)
class ProviderView:
    visit_key: str
    join_web_url: str | None
    presence_url: str
    panel: Panel


@dataclass(frozen=True)
class PatientView:
    """The waiting page: where to go once the meeting exists, and what to say meanwhile."""

    join_web_url: str | None
    refresh_url: str
    organization: str | None = None
    appointment_start: datetime | None = None
    overdue: bool = False  # nobody came in time: the page tells the patient to call their clinic
    recheck_seconds: int = 10  # when a page without JavaScript reloads itself
    visit_number: str | None = None  # a group visit: what the patient types in their Teams name first


def recheck_seconds(waited: timedelta, *, overdue: bool) -> int:
    """How soon a waiting page checks again: often at first, then less (each check is a billed execution)."""
    if overdue:
        return 60
    if waited < timedelta(minutes=2):
        return 10
    return 20 if waited < timedelta(minutes=10) else 30


@dataclass(frozen=True)
class PendingLaunch:
    """What ``state`` stands for between the authorize redirect and the callback (server-side)."""

    kind: LaunchKind
    configuration_id: str
    tenant_id: str
    geography: Geography
    fhir_base_url: str
    client_id: str
    code_verifier: str
    nonce: str
    session_id: str | None = None
    department_id: str | None = None
    shared_with: tuple[str, ...] = ()  # other tenants whose clinicians may use the configuration
    vendor: Vendor = Vendor.EPIC  # the configuration's EHR vendor (``shared.ehr.vendors``)
    organization: str | None = None  # the configuration's display name, for the patient's waiting page
    conference_id: str | None = None  # the launch URL's conferenceId (group visits), confirmed at the callback

    @property
    def signin_tenants(self) -> frozenset[str]:
        return frozenset(t.lower() for t in (self.tenant_id, *self.shared_with))

    def to_json(self) -> dict[str, Any]:
        data = {k: (v.value if isinstance(v, LaunchKind | Geography | Vendor) else v) for k, v in vars(self).items()}
        data["shared_with"] = list(self.shared_with) or None
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PendingLaunch:
        return cls(
            kind=LaunchKind(data["kind"]),
            configuration_id=str(data["configuration_id"]),
            tenant_id=str(data["tenant_id"]),
            geography=Geography(data["geography"]),
            fhir_base_url=str(data["fhir_base_url"]),
            client_id=str(data["client_id"]),
            code_verifier=str(data["code_verifier"]),
            nonce=str(data["nonce"]),
            session_id=data.get("session_id"),
            department_id=data.get("department_id"),
            shared_with=tuple(str(t) for t in data.get("shared_with") or ()),
            vendor=Vendor(data.get("vendor") or Vendor.EPIC),  # states written before vendors were kept: Epic
            organization=str(data["organization"]) if data.get("organization") else None,
            conference_id=str(data["conference_id"]) if data.get("conference_id") else None,
        )


# --- the service --------------------------------------------------------------------------------


class LaunchService:
    def __init__(
        self,
        *,
        public_base_url: str,
        connector_secret: str,
        configurations: ConfigurationRepository,
        ehr: SmartClient,
        states: StateRouter,
        user_map: UserMapRepository,
        visits: VisitRepository,
        sign_in: Callable[[], EntraSignIn],
        meetings_for: Callable[[str], Meetings],
        sealer: Sealer,
        waiting_room_give_up: timedelta = timedelta(minutes=15),
        memory_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not LAUNCH_STATE_KINDS.issubset(states.in_geography):
            raise ValueError("a launch's states carry its context: they must live in the configuration's geography")
        self._base = public_base_url.rstrip("/")
        self._secret = connector_secret
        self._configurations = configurations
        self._ehr = ehr
        self._states = states
        self._user_map = user_map
        self._visits = visits
        self._sign_in = sign_in
        self._meetings_for = meetings_for
        self._sealer = sealer
        self._give_up = waiting_room_give_up
        self._tokens = VisitTokens(connector_secret)
        self._groups = GroupVisits(visits, connector_secret)
        self._interpreters = InterpreterLinks(connector_secret, states)
        self._context_check = ContextCheck()
        # keyed by (geography, configuration id, mapping row key), so a removal by key can forget it
        self._mappings: Memo[tuple[Geography, str, str], UserMapping] = Memo(MAPPING_MEMORY_SECONDS)
        self._visits_with_meeting: Memo[tuple[Geography, str], Visit] = Memo(VISIT_MEMORY_SECONDS)
        # by configuration id, with the iss it was found for, so ``forget_configuration`` can drop it
        self._approved: Memo[str, Configuration] = Memo(CONFIGURATION_MEMORY_SECONDS, clock=memory_clock)
        self._configuration_reads: SingleFlight[tuple[str, str, bool], tuple[Configuration, str]] = SingleFlight()

    @property
    def redirect_uri(self) -> str:
        return f"{self._base}/api/launch/callback"

    @property
    def signin_redirect_uri(self) -> str:
        return f"{self._base}/api/launch/signin/callback"

    # step 1 ------------------------------------------------------------------------------------

    def begin(self, kind: LaunchKind, configuration_id: str, params: LaunchParams) -> AuthorizationRequest:
        # The allow-list check comes first: an unknown iss makes no request leave this process.
        config, base = self._launch_configuration(configuration_id, params.iss, patient=kind is LaunchKind.PATIENT)
        client_id = config.provider_client_id if kind is LaunchKind.PROVIDER else config.patient_client_id
        profile = profile_for(config.vendor)
        smart = self._ehr.discover(base, client_id=client_id, vendor=profile.vendor)
        pkce = Pkce.new()
        nonce = random_token()
        # Sealed into the state itself, so starting a launch writes nothing (``StateRouter.seal``); what the
        # configuration holds is read again at the callback, as it is then.
        carried: dict[str, str | None] = {"k": kind.value, "c": config.id, "u": params.iss, "v": pkce.verifier}
        carried["n"] = nonce
        carried |= {"s": params.session_id, "d": params.department_id, "g": params.conference_id}
        state = self._states.seal(
            STATE_KIND, {k: v for k, v in carried.items() if v is not None}, geography=config.geography
        )
        return SmartClient.authorization_request(
            smart,
            client_id=client_id,
            redirect_uri=self.redirect_uri,
            scope=profile.provider_scopes if kind is LaunchKind.PROVIDER else profile.patient_scopes,
            state=state,
            pkce=pkce,
            launch=params.launch,
            nonce=nonce,
            aud=params.iss,
        )

    def _launch_configuration(self, configuration_id: str, iss: str, *, patient: bool) -> tuple[Configuration, str]:
        """The launch URL's configuration, approved, and the FHIR URL of it that ``iss`` names
        (``CONFIGURATION_MEMORY_SECONDS``). Only a patient launch may name the patient-side FHIR URL.

        Only an approved configuration is remembered: a new or newly approved one works at once, a deleted or
        un-approved one stops within the memory's lifetime.
        """
        # One read for the launches of this configuration that find it missing meanwhile (a clinic's burst).
        return self._configuration_reads.run(
            (configuration_id, iss, patient),
            lambda: self._read_configuration(configuration_id, iss, patient=patient),
            kept=lambda: self._remembered_configuration(configuration_id, iss, patient=patient),
        )

    def _remembered_configuration(
        self, configuration_id: str, iss: str, *, patient: bool
    ) -> tuple[Configuration, str] | None:
        remembered = self._approved.get(configuration_id)
        base = remembered.launch_base(iss, patient=patient) if remembered is not None else None
        return (remembered, base) if remembered is not None and base is not None else None

    def _read_configuration(self, configuration_id: str, iss: str, *, patient: bool) -> tuple[Configuration, str]:
        config = self._configurations.find_for_launch(configuration_id, iss, patient=patient)
        base = config.launch_base(iss, patient=patient) if config is not None else None
        if config is None or base is None:
            logger.info("Launch refused: no configuration %s for iss %s", log_id(configuration_id), log_id(iss))
            raise TenantConfigNotFound()
        if not config.is_approved:
            raise ConfigurationPending()
        self._approved.put(configuration_id, config)
        return config, base

    def forget_configuration(self, configuration_id: str) -> None:
        """Forget a changed or deleted configuration in this process; other instances within 30 s."""
        self._approved.forget(configuration_id)

    def _pending(self, state: str, carried: Mapping[str, Any]) -> PendingLaunch:
        """The launch a consumed state stands for, against its configuration as it is now."""
        kind = LaunchKind(carried["k"])
        config, base = self._launch_configuration(
            str(carried["c"]), str(carried["u"]), patient=kind is LaunchKind.PATIENT
        )
        if not state.startswith(f"{GEOGRAPHY_TAGS[config.geography]}{TAG_SEPARATOR}"):
            raise StateError("This sign-in link is not valid. Please start again.", code="state_unknown")
        return PendingLaunch(
            kind=kind,
            configuration_id=config.id,
            tenant_id=config.tenant_id,
            geography=config.geography,
            fhir_base_url=base,
            client_id=config.provider_client_id if kind is LaunchKind.PROVIDER else config.patient_client_id,
            code_verifier=str(carried["v"]),
            nonce=str(carried["n"]),
            session_id=carried.get("s"),
            department_id=carried.get("d"),
            conference_id=carried.get("g"),
            shared_with=config.shared_with,
            vendor=config.vendor,
            organization=config.organization if kind is LaunchKind.PATIENT else None,
        )

    # step 2 ------------------------------------------------------------------------------------

    def complete(self, response: AuthorizationResponse) -> LaunchOutcome:
        """The EHR's answer. An unknown ``state`` names no audience; after it, the launch's kind says whose it is."""
        carried = self._states.consume_sealed(STATE_KIND, response.state)
        with speaking_to(audience_of(LaunchKind(carried["k"]))):
            return self._complete(self._pending(response.state, carried), response)

    def _complete(self, pending: PendingLaunch, response: AuthorizationResponse) -> LaunchOutcome:
        if response.error:
            raise EhrSignInRejected(response.error)
        if not response.code:
            raise EhrSignInRejected("invalid_response")
        smart = self._ehr.discover(pending.fhir_base_url, client_id=pending.client_id, vendor=pending.vendor)
        tokens = self._ehr.exchange_code(
            smart,
            client_id=pending.client_id,
            code=str(response.code),
            redirect_uri=self.redirect_uri,
            code_verifier=pending.code_verifier,
        )
        if not tokens.id_token:
            raise UpstreamRejected(
                N_("The EHR returned no identity (id_token); the app's client must be allowed the openid scope."),
                system=EHR,
                code="missing_id_token",
            )
        id_token = tokens.id_token
        try:
            claims = self._ehr.validate_id_token(smart, id_token, client_id=pending.client_id, nonce=pending.nonce)
        except InvalidIdToken as exc:
            raise UpstreamRejected(
                N_("The EHR's identity token could not be verified: %(reason)s.", reason=exc.reason),
                system=EHR,
                code="invalid_id_token",
            ) from None
        asserted = asserted_context(
            tokens.fields,
            claims,
            provider_launch=pending.kind is LaunchKind.PROVIDER,
            sub_is_fhir_id=profile_for(pending.vendor).sub_is_fhir_id,
        )
        reads = LaunchReads(self._ehr, smart, access_token=tokens.access_token, client_id=pending.client_id)
        context = self._context_check.confirm(
            asserted,
            reads,
            session_id=pending.session_id,
            department_id=pending.department_id,
            configuration_id=pending.configuration_id,
            conference_id=pending.conference_id,
        )
        key = self.visit_key(pending.configuration_id, context)
        if pending.kind is LaunchKind.PROVIDER:
            return self._provider(pending, context, key, reads)
        return self._patient(pending, context, key, reads)

    def _provider(self, pending: PendingLaunch, context: LaunchContext, key: str, reads: LaunchReads) -> LaunchOutcome:
        mapping = self._mapping(pending, context.user)
        hint = user_hint(self._secret, mapping.object_id) if mapping is not None else None
        interpreter = self._launches_as_interpreter(pending, context, key, hint, reads)
        colleague = Colleague(hint, context.user, interpreter) if hint is not None else None
        visit = self._open_visit(
            pending, key, context.visit_context(provider=context.user, colleague=colleague), context.group_key
        )
        primary = None if visit.has_meeting else self._primary_performer(context, reads)
        if mapping is None or colleague is None:
            carry = {
                "launch": pending.to_json(),
                "context": context.to_json(),
                "primary": primary,
                "interpreter": interpreter,
                "ehr_user_name": self._ehr_user_name(context, reads),
            }
            # Bound to this browser from here on: otherwise a provider could send the sign-in link of *their*
            # launch to a colleague, whose Microsoft sign-in would then be mapped to the sender's EHR user.
            binding, csrf = random_token(), random_token()
            state = self._states.new_state(pending.geography)
            # The state store seals the payload, this carry included, bound to its row (``shared.storage.state``).
            self._states.create(
                INTRO_STATE_KIND,
                {"carry": carry, "binding": _digest(binding), "csrf": _digest(csrf)},
                ttl=INTRO_TTL,
                state=state,
            )
            return ExplainSignIn(state=state, csrf=csrf, browser_binding=binding)
        return self._provider_meeting(pending, context, visit, mapping, primary, colleague)

    def start_sign_in(self, form: Mapping[str, str], *, browser_binding: str | None) -> SignInFirst:
        """The clinician pressed "Continue" on the page explaining the one-time sign-in: off to Microsoft.

        Used once whatever happens; the browser must hold the page's binding cookie and the form its token,
        so another site's form (or a forwarded page) starts nothing. The binding stays the same: the
        Microsoft sign-in's return and the confirmation require it too.
        """
        opened = self._states.consume(INTRO_STATE_KIND, form.get("state", ""))
        if not _matches(browser_binding, opened.get("binding")):
            logger.info("One-time sign-in refused: not the browser the launch explained it to")
            raise SignInStartRefused()
        if not _matches(form.get("csrf"), opened.get("csrf")):
            logger.info("One-time sign-in refused: no form token")
            raise SignInStartRefused()
        carry = opened["carry"]
        pending = self._current(PendingLaunch.from_json(carry["launch"]))
        binding = str(browser_binding)
        state = self._states.new_state(pending.geography)  # the sign-in's row lives in the geography too
        url = self._sign_in().begin(self.signin_redirect_uri, browser_binding=binding, carry=carry, state=state)
        return SignInFirst(url, binding)

    def _ehr_user_name(self, context: LaunchContext, reads: LaunchReads) -> str | None:
        """The launching user's display name, read from the EHR with the launch's own token, for the confirmation.

        Read here, while the launch's access token is at hand, rather than on the confirmation page: the
        alternative would keep the EHR access token (a bearer credential for the clinician's EHR data) in
        the sign-in state for the whole Microsoft round trip. The name travels sealed in that state instead,
        bound to its row by the state store, and the row is emptied when consumed; nothing keeps it afterwards.
        A name that cannot be read (no scope, 403, EHR unreachable) is None: the page then names the
        reference type and the clinician can still confirm; a visit is never blocked by it.
        """
        if context.user.split("/", 1)[0] != "Practitioner":
            return None  # e.g. a PractitionerRole carries no name of its own
        try:
            resource = reads.resource(context.user)
        except (UpstreamError, BadRequest) as exc:  # BadRequest: UnsafeUrl from the outbound policy
            logger.info("EHR user name unavailable for the confirmation: %s", exc.code)
            return None
        return display_name(resource) if resource is not None else None

    def finish_sign_in(self, auth_response: Mapping[str, str], *, browser_binding: str | None) -> ConfirmLink:
        """The one-time Microsoft 365 sign-in came back: ask the clinician to confirm the link; store nothing yet.

        A clinician's EHR callback link opened in another browser would otherwise link *that* browser's
        Microsoft 365 user to the clinician's EHR user: the EHR leg is bound to no browser (Epic's embedded
        browsers drop cookies). So the link is a deliberate act: this returns what the page shows and a new
        single-use confirmation state (``CONFIRM_TTL``), bound to this browser by a fresh binding value and
        to the page by a form token; ``confirm_link`` stores the mapping.
        """
        user, carry = self._sign_in().complete_with_carry(auth_response, browser_binding=browser_binding)
        pending = self._current(PendingLaunch.from_json(carry["launch"]))
        context = LaunchContext.from_json(carry["context"])
        if user.tenant_id.lower() not in pending.signin_tenants:
            raise WrongTenant()
        binding, csrf, state = random_token(), random_token(), self._states.new_state(pending.geography)
        confirmation = {
            "launch": pending.to_json(),
            "context": context.to_json(),
            "primary": carry.get("primary"),
            "interpreter": carry.get("interpreter") is True,
            "account": {"tenant_id": user.tenant_id, "object_id": user.object_id, "upn": user.upn},
            "binding": _digest(binding),
            "csrf": _digest(csrf),
        }
        self._states.create(
            CONFIRM_STATE_KIND,
            confirmation,
            ttl=CONFIRM_TTL,
            state=state,
        )
        name = carry.get("ehr_user_name")
        return ConfirmLink(
            state=state,
            csrf=csrf,
            browser_binding=binding,
            # A user the EHR names by its OpenID subject alone has no FHIR type to show: "the EHR user".
            ehr_user_type=context.user.split("/", 1)[0].replace(SUBJECT_USER_TYPE, "EHR"),
            ehr_user_name=name if isinstance(name, str) and name else None,
            account_upn=user.upn,
            account_name=user.name,
        )

    def confirm_link(
        self, form: Mapping[str, str], *, browser_binding: str | None, decline: bool = False
    ) -> ShowProviderPage | LinkDeclined:
        """The clinician pressed "Link my account" (or "This is not me") on the confirmation page.

        The state is used up first, so each confirmation is tried once whatever happens; then the browser
        must hold the binding cookie given with the page and the form must carry the page's token. Only
        then is the mapping stored, and the launch continues as it would have with a stored mapping.
        """
        state = form.get("state", "")
        opened = self._states.consume(CONFIRM_STATE_KIND, state)
        if not _matches(browser_binding, opened.get("binding")):
            logger.info("Link confirmation refused: not the browser that signed in")
            raise ConfirmationNotBound()
        if not _matches(form.get("csrf"), opened.get("csrf")):
            logger.info("Link confirmation refused: no form token")
            raise ConfirmationForged()
        context = LaunchContext.from_json(opened["context"])
        account = opened["account"]
        if decline:  # nothing to check: nothing will be stored
            logger.info(
                "Link declined: configuration %s, EHR user %s, tenant %s, user %s",
                *_hashed(
                    str(opened["launch"]["configuration_id"]), context.user, account["tenant_id"], account["object_id"]
                ),
            )
            return LinkDeclined()
        pending = self._current(PendingLaunch.from_json(opened["launch"]))
        if str(account["tenant_id"]).lower() not in pending.signin_tenants:
            raise WrongTenant()  # the configuration stopped being shared with that tenant meanwhile
        mapping = self._user_map.put(
            pending.geography,
            pending.configuration_id,
            context.user,
            tenant_id=str(account["tenant_id"]),
            object_id=str(account["object_id"]),
            upn=str(account.get("upn") or "") or None,
        )
        logger.info(
            "EHR user linked to a Microsoft 365 user: configuration %s, EHR user %s, tenant %s, user %s",
            *_hashed(pending.configuration_id, context.user, mapping.tenant_id, mapping.object_id),
        )
        self._mappings.put(self._mapping_key(pending, context.user), mapping)
        key = self.visit_key(pending.configuration_id, context)
        hint = user_hint(self._secret, mapping.object_id)
        colleague = Colleague(hint, context.user, interpreter=opened.get("interpreter") is True)
        visit = self._open_visit(
            pending, key, context.visit_context(provider=context.user, colleague=colleague), context.group_key
        )
        primary = opened.get("primary")
        return self._provider_meeting(pending, context, visit, mapping, primary or None, colleague)

    def forget_mapping(self, geography: Geography, configuration_id: str, key: str) -> None:
        """Forget a removed mapping in this process; other instances forget within ``MAPPING_MEMORY_SECONDS``."""
        self._mappings.forget((geography, configuration_id, key))

    def _current(self, pending: PendingLaunch) -> PendingLaunch:
        """The launch against its configuration as it is now, before a sign-in is stored for good.

        Minutes may pass on the Microsoft sign-in page: meanwhile the configuration may have been
        deleted, sent back to approval, or stopped being shared with the clinician's tenant.
        """
        config = self._configurations.find_for_launch(
            pending.configuration_id, pending.fhir_base_url, patient=pending.kind is LaunchKind.PATIENT
        )
        if config is None or config.geography is not pending.geography:
            # A configuration moved to another geography meanwhile: its links live there now, not where this
            # launch began (the approval of the move deleted the old geography's links).
            raise TenantConfigNotFound()
        if not config.is_approved:
            raise ConfigurationPending()
        return replace(pending, tenant_id=config.tenant_id, shared_with=config.shared_with)

    def _provider_meeting(
        self,
        pending: PendingLaunch,
        context: LaunchContext,
        visit: Visit,
        mapping: UserMapping,
        primary: str | None,
        colleague: Colleague,
    ) -> ShowProviderPage:
        """``colleague``: the launching clinician by their Teams account (``_provider``)."""
        organizer = mapping
        if not visit.has_meeting and primary and primary != context.user:
            organizer = self._mapping(pending, primary) or mapping
        visit = self._ensure_meeting(pending, context, visit, organizer)
        group = self._groups.find(visit) if visit.in_group else None
        if group is not None:  # idempotent: a tie that failed once is made on the next launch
            self._groups.tie_clinician(group, visit.key, colleague.hint)
        token = self._tokens.issue(
            geography=visit.geography, key=visit.key, role=Role.PROVIDER, configuration_id=pending.configuration_id
        )
        event = self._event(
            pending, context, visit.key, Role.PROVIDER, interpreter=colleague.interpreter, hint=colleague.hint
        )
        return ShowProviderPage(url=self.visit_url(visit.key, token), event=event)

    def _patient(self, pending: PendingLaunch, context: LaunchContext, key: str, reads: LaunchReads) -> LaunchOutcome:
        visit = self._open_visit(pending, key, context.visit_context(provider=None), context.group_key)
        if not visit.has_meeting:
            primary = self._primary_performer(context, reads)
            organizer = self._mapping(pending, primary) if primary else None
            if organizer is not None:
                try:
                    visit = self._ensure_meeting(pending, context, visit, organizer)
                except UpstreamError as exc:
                    # Nothing a patient can fix: they wait for their clinician, whose launch tries again and
                    # shows what to fix; the waiting room tells them what to do if nobody comes.
                    logger.warning("Meeting not created on a patient launch (%s): the patient waits", exc.code)
        event = self._event(pending, context, visit.key, Role.PATIENT)
        if visit.has_meeting and visit.join_web_url and not visit.in_group:
            return JoinMeeting(visit.join_web_url, event=event)
        if visit.has_meeting:
            # A group visit's patient first learns the number to type in their Teams name, on their visit page
            # (a page of its own, not the callback's: reloading it works).
            return ShowGroupJoinPage(self._patient_page(pending, visit), event=event)
        room = WaitingRoom(pending.organization or "", _appointment_start(context, reads))
        visit = self._visits.update(visit, with_waiting_room(room))
        return WaitForClinician(self._patient_page(pending, visit), event=event)

    def _patient_page(self, pending: PendingLaunch, visit: Visit) -> str:
        """The patient's own visit page (the waiting room, or a group visit's join page), with their token."""
        token = self._tokens.issue(
            geography=visit.geography,
            key=visit.key,
            role=Role.PATIENT,
            configuration_id=pending.configuration_id,
            now=utcnow().timestamp(),
        )
        return self.visit_url(visit.key, token)

    def _ensure_meeting(
        self, pending: PendingLaunch, context: LaunchContext, visit: Visit, organizer: UserMapping
    ) -> Visit:
        if visit.has_meeting:
            return visit
        if context.group_key is None:
            return self._create_meeting(pending, visit, organizer, self.external_id(pending.configuration_id, context))
        # A group visit: the conference's one meeting, on the group's row; the participant's visit joins it.
        group = self._groups.row(pending.geography, pending.configuration_id, context.group_key)
        if not group.has_meeting:
            group = self._create_meeting(pending, group, organizer, self.external_id(pending.configuration_id, context))
        joined = self._groups.join(visit, group)
        self._remember(joined)
        return joined

    def _create_meeting(self, pending: PendingLaunch, visit: Visit, organizer: UserMapping, external_id: str) -> Visit:
        meetings = self._meetings_for(organizer.tenant_id)
        now = utcnow()
        try:
            meeting = meetings.create_or_get_meeting(
                organizer_object_id=organizer.object_id,
                external_id=external_id,
                subject=MEETING_SUBJECT,
                start=now,
                end=now + MEETING_LENGTH,
            )
            meetings.secure_lobby(organizer_object_id=organizer.object_id, meeting_id=meeting.id)
        except AccessPolicyMissing:
            raise AccessPolicyMissing(organizer.object_id) from None  # the administrator's commands name them
        updated = self._visits.update(
            visit,
            with_meeting(
                meeting_id=meeting.id,
                join_web_url=meeting.join_web_url,
                organizer_tenant_id=organizer.tenant_id,
                organizer_object_id=organizer.object_id,
            ),
        )
        self._remember(updated)
        return updated

    # reads with per-process memory ---------------------------------------------------------------
    # A visit's meeting never changes once recorded (the first organizer wins) and a mapping changes
    # only when its provider signs in again, so warm launches on this instance skip both Table reads.

    def _mapping_key(self, pending: PendingLaunch, ehr_user: str) -> tuple[Geography, str, str]:
        return pending.geography, pending.configuration_id, self._user_map.row_key(pending.configuration_id, ehr_user)

    def _mapping(self, pending: PendingLaunch, ehr_user: str) -> UserMapping | None:
        key = self._mapping_key(pending, ehr_user)
        found = self._mappings.get(key)
        if found is None:
            found = self._user_map.get(pending.geography, pending.configuration_id, ehr_user)
            if found is not None:
                found = self._user_map.touch(pending.geography, pending.configuration_id, ehr_user, found)
                self._mappings.put(key, found)
        if found is not None and found.tenant_id.lower() not in pending.signin_tenants:
            return None  # mapped while the configuration was shared with that tenant; it no longer is
        return found

    def _open_visit(self, pending: PendingLaunch, key: str, context: VisitContext, group_key: str | None) -> Visit:
        """The visit row, its context merged with this launch's confirmed one (``merged_context``).

        In a group visit (``group_key``) the row joins the group's meeting when the group has one already.
        """
        visit = self._visits_with_meeting.get((pending.geography, key))
        if visit is None:
            visit = self._visits.get_or_create(pending.geography, key, pending.configuration_id, context)
        if merged_context(visit.context, context) != visit.context:
            # E.g. the clinician after their patient: the provider the writeback names is filled in now.
            visit = self._visits.update(visit, with_context(context))
        if group_key is not None and not visit.has_meeting:
            visit = self._groups.join(visit, self._groups.row(pending.geography, pending.configuration_id, group_key))
        self._remember(visit)
        return visit

    def _remember(self, visit: Visit) -> None:
        if visit.has_meeting:
            ttl = min(VISIT_MEMORY_SECONDS, (visit.expires_at - utcnow()).total_seconds())
            self._visits_with_meeting.put((visit.geography, visit.key), visit, ttl=ttl)

    @staticmethod
    def _primary_performer(context: LaunchContext, reads: LaunchReads) -> str | None:
        """The appointment's primary provider, read with the launch's own token; None when unknown."""
        references = [f"Appointment/{context.appointment}"] if context.appointment else []
        references += [f"Encounter/{context.encounter}"] if context.encounter else []
        for reference in references:
            try:
                resource = reads.resource(reference)
            except UpstreamError as exc:
                # Unavailable: the launching provider organizes instead.
                logger.info("Primary performer unavailable from %s: %s", reference.split("/")[0], exc.code)
                continue
            found = primary_performer(resource) if resource is not None else None
            if found:
                return found
        return None

    # the visit pages ----------------------------------------------------------------------------

    def grant(self, visit_key: str, token: str) -> VisitGrant:
        return self._tokens.verify(token, visit_key=visit_key)

    def provider_view(self, grant: VisitGrant) -> ProviderView:
        if grant.role is Role.PATIENT:
            raise Forbidden(N_("This page is for clinicians."), code="visit_role")
        with speaking_to(Audience.CLINICIAN):
            visit = self._visit(grant)
        return ProviderView(
            visit_key=visit.key,
            join_web_url=visit.join_web_url,
            presence_url=f"{self._base}/api/visits/{visit.key}/presence",
            panel=panel_of(self._panel_source(visit)),
        )

    def patient_join_link(self, grant: VisitGrant, *, now: float | None = None) -> str:
        """The patient's email/SMS join link for the clinician's visit (README "Email and SMS join links").

        Issued only to a clinician's page, whose own token the EHR vouched for at the provider launch: a
        patient token for this one visit, signed with our key (``VisitTokens``), valid ``JOIN_LINK_LIFETIME``.
        It opens the same lobby as a patient launch (or the waiting page), with no account and no EHR sign-in,
        and can see nothing but whether the meeting exists.
        """
        if grant.role is Role.PATIENT:
            raise Forbidden(N_("This page is for clinicians."), code="visit_role")
        token = self._tokens.issue(
            geography=grant.geography,
            key=grant.key,
            role=Role.PATIENT,
            configuration_id=grant.configuration_id,
            lifetime=JOIN_LINK_LIFETIME,
            now=now,
        )
        return self.visit_url(grant.key, token)

    def interpreter_form_token(self, visit_key: str, token: str) -> str:
        """The clinician page's form token for "Create an interpreter link": bound to that page's visit token."""
        return keyed_id(self._secret, "interpreter-link-form", visit_key, token)[:32]

    def interpreter_link(self, grant: VisitGrant, *, token: str, form_token: str) -> str:
        """A single-use, time-bound, signed guest link for an interpreter (``shared.launch.interpreters``).

        Issued only to a clinician's page (its form, with the page's form token), and only once the visit has its
        meeting (the link is used up on opening).
        """
        if grant.role is Role.PATIENT:
            raise Forbidden(N_("This page is for clinicians."), code="visit_role")
        if not hmac.compare_digest(form_token, self.interpreter_form_token(grant.key, token)):
            raise Forbidden(N_("Please create the link from the visit page."), code="form_token")
        with speaking_to(Audience.CLINICIAN):
            visit = self._visit(grant)
        if not visit.has_meeting:
            raise Conflict(N_("The Teams meeting is not ready yet: create the interpreter link in a moment."))
        token = self._interpreters.issue(
            geography=grant.geography, key=grant.key, configuration_id=grant.configuration_id
        )
        return f"{self._base}/api/visits/{grant.key}/interpreter?t={quote(token, safe='')}"

    def interpreter_lobby(self, visit_key: str, token: str) -> str:
        """Use an interpreter link up (refused when used, expired or forged); the meeting's lobby to send them to."""
        held = self._interpreters.redeem(visit_key, token)
        visit = self._visits.get(held.geography, held.key)
        if visit is None or not visit.join_web_url:
            raise NotFound(N_("This visit has ended. Ask the clinician for a new link."), code="visit_gone")
        return visit.join_web_url

    def panel(self, grant: VisitGrant) -> Panel:
        """The provider's live panel (``shared.visits.panel``): one Table read."""
        if grant.role is Role.PATIENT:
            raise Forbidden(N_("This page is for clinicians."), code="visit_role")
        return panel_of(self._panel_source(self._visit(grant)))

    def _panel_source(self, visit: Visit) -> Visit:
        """A group visit's Teams roster is on the group's row; the participant's own launches on theirs."""
        group = self._groups.find(visit)
        if group is None:
            return visit
        return evolve(group, launched={**group.launched, **visit.launched})

    def patient_view(self, grant: VisitGrant, token: str) -> PatientView:
        """The waiting page's facts. It gives up ``waiting_room_give_up`` after the appointment's start, or after
        the patient's arrival (the token's issue) when that is later or the start is unknown: a patient whose
        clinician never gets a meeting going is told what to do, and the page keeps checking."""
        with speaking_to(Audience.PATIENT):
            visit = self._visit(grant)
        url = self.visit_url(visit.key, token)
        group = None if visit.has_meeting else self._groups.find(visit)
        if group is not None and group.has_meeting:  # a clinician opened the group's meeting meanwhile
            visit = self._groups.join(visit, group)
        if visit.has_meeting:
            return PatientView(join_web_url=visit.join_web_url, refresh_url=url, visit_number=self._visit_number(visit))
        room = visit.waiting_room or WaitingRoom("")
        now, arrived = utcnow(), datetime.fromtimestamp(grant.issued_at, UTC)
        since = max(arrived, room.appointment_start) if room.appointment_start else arrived
        overdue = now >= since + self._give_up
        return PatientView(
            join_web_url=None,
            refresh_url=url,
            organization=room.organization or None,
            appointment_start=room.appointment_start,
            overdue=overdue,
            recheck_seconds=recheck_seconds(now - arrived, overdue=overdue),
        )

    def _launches_as_interpreter(
        self, pending: PendingLaunch, context: LaunchContext, key: str, hint: str | None, reads: LaunchReads
    ) -> bool:
        """Whether the EHR books the launching clinician as the visit's interpreter; a warm relaunch on this
        instance already knows (no read). ``hint``: their Teams account's fingerprint, once they are linked."""
        remembered = self._visits_with_meeting.get((pending.geography, key))
        known = remembered.context.colleague(hint) if remembered is not None else None
        if known is not None:
            return known.interpreter
        return self._books_as_interpreter(context, reads)

    @staticmethod
    def _books_as_interpreter(context: LaunchContext, reads: LaunchReads) -> bool:
        """The launch's Encounter or Appointment (named by the EHR, or by the Encounter) books the launching
        clinician as its interpreter (participant type translator): interpreters are booked on the appointment.
        With the launch's own token, at a clinician's first launch of the visit on this instance; mostly reads the
        launch made already (its context check, the primary performer), else one or two."""
        encounter = _quietly(reads, f"Encounter/{context.encounter}") if context.encounter else None
        if encounter is not None and books_as_interpreter(encounter, context.user):
            return True
        appointment = _launch_appointment(context, reads)
        return appointment is not None and books_as_interpreter(appointment, context.user)

    def _visit_number(self, visit: Visit) -> str | None:
        """A group visit's patient types this number in their Teams name (``shared.visits.members``)."""
        group = self._groups.find(visit) if visit.in_group else None
        return self._groups.patient_label(group, visit.key) if group is not None else None

    def _visit(self, grant: VisitGrant) -> Visit:
        visit = self._visits.get(grant.geography, grant.key)  # presence is live: no memo
        if visit is None:
            raise NotFound(N_("This visit has ended. Please launch it again from Epic or MyChart."), code="visit_gone")
        return visit

    # identifiers ---------------------------------------------------------------------------------

    def visit_key(self, configuration_id: str, context: LaunchContext) -> str:
        return keyed_id(self._secret, "visit", configuration_id, context.appointment_key)

    def external_id(self, configuration_id: str, context: LaunchContext) -> str:
        """The meeting's externalId: one per appointment, or one per conference id for a group visit."""
        return keyed_id(self._secret, "meeting", configuration_id, context.group_key or context.appointment_key)

    def visit_url(self, visit_key: str, token: str) -> str:
        return f"{self._base}/api/visits/{visit_key}?t={quote(token, safe='')}"

    def _event(
        self,
        pending: PendingLaunch,
        context: LaunchContext,
        visit_key: str,
        role: Role,
        *,
        interpreter: bool = False,
        hint: str | None = None,
    ) -> VisitEvent:
        """The launch's event; its references (who launched, CSN, appointment, encounter) sealed for the queue."""
        patient = f"Patient/{context.patient}" if context.patient else None
        participant = context.user if role is Role.PROVIDER else patient
        event = VisitEvent(
            configuration_id=pending.configuration_id,
            geography=pending.geography.value,
            visit_key=visit_key,
            # A provider opens the meeting as its organizer; a patient is sent to its lobby (Teams then
            # reports the admission), so the panel never shows a patient "in meeting" who is not.
            kind=EventKind.CONNECTED if role is Role.PROVIDER else EventKind.LOBBY,
            role=role,
            occurred_at=utcnow(),
            source=Source.LAUNCH,
            participant=participant,
            csn=context.csn,
            appointment=context.appointment,
            encounter=context.encounter,
            department=context.department,  # the usage report's department (sealed with the references)
            interpreter=interpreter,  # a staff interpreter the appointment books as such
            member_hint=hint,  # the clinician's Teams account, keyed: the worker restores them as a colleague
        )
        return seal_event(self._sealer, event)


def _appointment_start(context: LaunchContext, reads: LaunchReads) -> datetime | None:
    """The appointment's start, from the launch's Appointment (named by the EHR, or by its Encounter).

    Read with the launch's own token, mostly from reads this launch made already. No Appointment, or
    no readable ``start``: None, and the page says nothing about time rather than guessing.
    """
    appointment = _launch_appointment(context, reads)
    start = appointment.get("start") if appointment else None
    if not isinstance(start, str):
        return None
    try:
        parsed = datetime.fromisoformat(start)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None  # FHIR instants carry a zone; a time without one is a guess


def _launch_appointment(context: LaunchContext, reads: LaunchReads) -> Mapping[str, Any] | None:
    """The launch's Appointment: named by the EHR, or by the launch's Encounter (``appointment``); None if neither."""
    reference = f"Appointment/{context.appointment}" if context.appointment else None
    if reference is None and context.encounter:
        encounter = _quietly(reads, f"Encounter/{context.encounter}")
        linked = (encounter or {}).get("appointment") or []
        first = linked[0].get("reference") if linked and isinstance(linked[0], Mapping) else None
        reference = first if isinstance(first, str) and first.startswith("Appointment/") else None
    return _quietly(reads, reference) if reference else None


def _quietly(reads: LaunchReads, reference: str) -> Mapping[str, Any] | None:
    try:
        return reads.resource(reference)
    except (UpstreamError, BadRequest) as exc:
        logger.info("Launch read of %s unavailable (%s)", reference.split("/", 1)[0], exc.code)
        return None


def audience_of(kind: LaunchKind) -> Audience:
    return Audience.PATIENT if kind is LaunchKind.PATIENT else Audience.CLINICIAN


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _matches(supplied: str | None, expected: Any) -> bool:
    if not supplied or not isinstance(expected, str):
        return False
    return hmac.compare_digest(_digest(supplied).encode(), expected.encode())


def _hashed(*values: str) -> tuple[str, ...]:
    return tuple(log_id(value) for value in values)
