"""Every state of every connector page, rendered by the real templates and error books, with fixed sample data.

``PAGE_STATES`` maps a state's name to a function that renders it through ``connector.web`` (the same
``render``, ``error_response`` and ``error_page`` the blueprints call) in the current request language, so
the catalogue tests and the browser tests (axe in every language) walk the same pages. The sample data is
in ``DATA``: text that is the reader's own (names, URLs, ids), never translated.

A page that gains a state should gain an entry here; ``test_every_template_has_a_page_state`` fails on a
template no state renders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import azure.functions as func

from connector import i18n, web
from connector.launch import (
    LAUNCH_PAGES,
    PATIENT_LAUNCH_PAGES,
    PATIENT_VISIT_PAGES,
    ConfirmWithTheButton,
    ContinueWithTheButton,
)
from connector.portal import GEOGRAPHY_NAMES, NOTICES, coded_words
from connector.reports import report_context
from shared.configurations.model import (
    PROOF_FIELDS,
    Configuration,
    ConfigurationInput,
    EhrSignIn,
    Environment,
    PendingEdit,
    Status,
    Vendor,
    WritebackMode,
)
from shared.ehr.launch_context import LaunchContextMismatch, NoAppointment, UnverifiableLaunchContext
from shared.ehr.vendors import profile_for
from shared.kernel.errors import (
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectorError,
    ErrorPage,
    Forbidden,
    NotFound,
    StateError,
    UpstreamRejected,
    UpstreamThrottled,
    UpstreamUnavailable,
)
from shared.kernel.i18n import N_
from shared.kernel.settings import Geography
from shared.launch.interpreters import InterpreterLinkRefused
from shared.launch.service import (
    ConfigurationPending,
    ConfirmationForged,
    ConfirmationNotBound,
    SignInStartRefused,
    TenantConfigNotFound,
    WrongTenant,
)
from shared.launch.user_map import ListedMapping
from shared.microsoft.entra import GLOBAL_ADMINISTRATOR, PortalIdentity
from shared.microsoft.teams import AccessPolicyMissing
from shared.portal.service import OAUTH_CHECKS, EhrSignInFailed, FormErrors, describe, integration_records
from shared.portal.sessions import PortalSession
from shared.reports.preferences import ReportPreferences
from shared.reports.service import Range, Report
from shared.reports.totals import Totals
from shared.visits.events import Role
from shared.visits.panel import AttendeeRow, Panel, PanelRow, PanelState

PUBLIC = "https://connector.example.org"
CORRELATION = "0f3e2d1c-aaaa-4bbb-8ccc-123456789abc"
WHEN = datetime(2026, 3, 14, 15, 9, tzinfo=UTC)
OWN_TENANT = "11111111-1111-4111-8111-111111111111"
OTHER_TENANT = "33333333-3333-4333-8333-333333333333"

ADMIN = PortalIdentity(
    tenant_id=OWN_TENANT,
    object_id="aaaaaaaa-0000-4000-8000-000000000001",
    upn="avery@contoso.example",
    name="Avery Admin",
    wids=(GLOBAL_ADMINISTRATOR,),
)
APPROVER = PortalIdentity(
    tenant_id=OWN_TENANT, object_id="aaaaaaaa-0000-4000-8000-000000000002", upn="erin@contoso.example", name="Erin"
)
FOREIGN_ADMIN = PortalIdentity(
    tenant_id=OTHER_TENANT,
    object_id="aaaaaaaa-0000-4000-8000-000000000003",
    upn="fabian@fabrikam.example",
    name="Fabian",
    wids=(GLOBAL_ADMINISTRATOR,),
)


def _session(user: PortalIdentity) -> PortalSession:
    return PortalSession(id="s", user=user, csrf_token="csrf-token", expires_at=WHEN)


def _configuration(*, approved: bool, environment: Environment = Environment.TEST, **changes: Any) -> Configuration:
    values: dict[str, Any] = {
        "id": "cfg-0001",
        "tenant_id": OWN_TENANT,
        "organization": "Contoso Health",
        "fhir_base_url": "https://fhir.contoso.example/api/FHIR/R4",
        "environment": environment,
        "approver_upn": APPROVER.upn,
        "geography": Geography.EMEA,
        "vendor": Vendor.SMART,
        "provider_client_id": "provider-client-0001",
        "patient_client_id": "patient-client-0001",
        "writeback_mode": WritebackMode.EPIC,
        "status": Status.APPROVED if approved else Status.PENDING,
        "created_by": ADMIN.upn,
        "created_at": WHEN,
        "updated_by": ADMIN.upn,
        "updated_at": WHEN,
        "etag": "etag-1",
    }
    if approved:
        values |= {
            "ehr_signin": EhrSignIn(by_upn=APPROVER.upn, by_oid=APPROVER.object_id, at=WHEN, fhir_base_url="x"),
            "approved_by": APPROVER.upn,
            "approved_at": WHEN,
            "shared_with": (OTHER_TENANT,),
        }
    return Configuration(**(values | changes))


PENDING = _configuration(approved=False)
APPROVED = _configuration(approved=True, environment=Environment.PRODUCTION)
SIGNED_IN = _configuration(
    approved=False, ehr_signin=EhrSignIn(by_upn=APPROVER.upn, by_oid=APPROVER.object_id, at=WHEN, fhir_base_url="x")
)


def _edited(config: Configuration, *, signed_in: bool = False, **changes: Any) -> Configuration:
    """``config`` with an admin's edit awaiting approval beside it (``changes``: the fields the edit changes)."""
    data = ConfigurationInput(**(config.input().__dict__ | changes))
    kept = config.ehr_signin if not set(PROOF_FIELDS) & changes.keys() else None
    signin = EhrSignIn(
        by_upn=APPROVER.upn,
        by_oid=APPROVER.object_id,
        at=WHEN,
        fhir_base_url=data.fhir_base_url,
        patient_fhir_base_url=data.patient_fhir_base_url,
    )
    edit = PendingEdit(data=data, by=ADMIN.upn, at=WHEN, ehr_signin=signin if signed_in else kept)
    return replace(config, edit=edit)


# An edit that changes what the EHR sign-in proves (URL, vendor), before and after the approver's sign-in for it.
EDIT_OF_PROOF = _edited(
    APPROVED,
    fhir_base_url="https://fhir.contoso.example/r4/ec2458f2",
    vendor=Vendor.ORACLE,
    writeback_mode=WritebackMode.FHIR_AUDIT_EVENT,
    geography=Geography.AMERICAS,
)
EDIT_OF_PROOF_SIGNED_IN = _edited(
    APPROVED,
    signed_in=True,
    fhir_base_url="https://fhir.contoso.example/r4/ec2458f2",
    vendor=Vendor.ORACLE,
    writeback_mode=WritebackMode.NONE,
)
# An edit of the name only: the approved version's sign-in still proves it; and one with no sign-in on record.
EDIT_OF_NAME = _edited(APPROVED, organization="Contoso Health Network", environment=Environment.PRODUCTION)
EDIT_WITHOUT_SIGNIN = _edited(
    replace(APPROVED, ehr_signin=None), organization="Contoso Health Network", patient_client_id="patient-client-0002"
)
# Oracle Health with its patient-side FHIR URL (the tenant's patient-access service root): pending, approved,
# and an approved one without it whose edit adds it.
ORACLE_EHR_URL = "https://fhir-ehr-code.cerner.com/r4/ec2458f2"
ORACLE_PATIENT_URL = "https://fhir-myrecord.cerner.com/r4/ec2458f2"
ORACLE: dict[str, Any] = {
    "vendor": Vendor.ORACLE,
    "writeback_mode": WritebackMode.FHIR_AUDIT_EVENT,
    "fhir_base_url": ORACLE_EHR_URL,
}
ORACLE_PATIENT_PENDING = _configuration(approved=False, patient_fhir_base_url=ORACLE_PATIENT_URL, **ORACLE)
ORACLE_PATIENT_APPROVED = _configuration(approved=True, patient_fhir_base_url=ORACLE_PATIENT_URL, **ORACLE)
EDIT_OF_PATIENT_URL = _edited(_configuration(approved=True, **ORACLE), patient_fhir_base_url=ORACLE_PATIENT_URL)
MAPPINGS = [
    ListedMapping(
        "3f9a0c1d2e4b5a6978", OWN_TENANT, "bbbbbbbb-0000-4000-8000-000000000001", "dr.smith@contoso.example", WHEN, WHEN
    ),
    ListedMapping("8e7d6c5b4a39281706", OTHER_TENANT, "bbbbbbbb-0000-4000-8000-000000000002", None, WHEN, WHEN),
]
# The reader's own text on these pages: never looked up in a catalogue.
DATA = frozenset(
    {
        "Teams EHR Connector",
        *(name for name in ("English", "Italiano", "Español", "Français", "Deutsch")),
        "Contoso Health Network",
        "Contoso Health",
        "Fabrikam",
        "Client is not activated",  # the EHR's own error description, shown as it said it
        "Avery Admin",
        "Erin",
        "Fabian",
        "Dr. Jordan Smith",
        "Jordan Smith",
        "Epic",
        "Oracle Health",
        "Epic (SetExternalConnectionStatus)",
        "FHIR AuditEvent",
        "Cardiology",  # report departments: the EHR's own names
        "Dermatology",
    }
)


def _choices() -> dict[str, Any]:
    return {
        "environments": [(Environment.TEST.value, N_("Test")), (Environment.PRODUCTION.value, N_("Production"))],
        "geographies": [(g.value, GEOGRAPHY_NAMES[g.value]) for g in (Geography.AMERICAS, Geography.EMEA)],
        "vendors": [(v.value, v.label) for v in Vendor],
        "writeback_modes": [
            (WritebackMode.EPIC.value, "Epic (SetExternalConnectionStatus)"),
            (WritebackMode.FHIR_AUDIT_EVENT.value, "FHIR AuditEvent"),
            (WritebackMode.NONE.value, N_("None")),
        ],
    }


def _portal(template: str, user: PortalIdentity | None, **context: Any) -> func.HttpResponse:
    session = _session(user) if user else None
    chrome = {"session": session, "user": user, "csrf": session.csrf_token if session else ""}
    return web.render(template, {**chrome, "words": coded_words(_choices()), **context})


def _detail(user: PortalIdentity, config: Configuration, **context: Any) -> func.HttpResponse:
    values = {
        "title": config.organization,
        "config": config,
        "notice": None,
        "values": describe(config.proposed.input().__dict__),
        "errors": {},
        "conflict": None,
        "etag": config.etag,
        "can_edit": user.is_admin and config.tenant_id == user.tenant_id,
        "can_approve": config.is_approver(user.upn, user.object_id),
        "shared_view": config.tenant_id != user.tenant_id,
        "share_error": None,
        "share_value": "",
        **_choices(),
    }
    return _portal("portal/configuration.html", user, **(values | context))


def _launch_error(exc: ConnectorError) -> func.HttpResponse:
    return web.error_response(exc, CORRELATION, html=True, pages=LAUNCH_PAGES)


def _ehr_failure(exc: EhrSignInFailed | None = None) -> func.HttpResponse:
    exc = exc or EhrSignInFailed(
        PENDING.id,
        ErrorPage(
            N_("The EHR refused the sign-in"),
            N_("OAuth2 error from the EHR: %(error)s", error="invalid_client"),
            OAUTH_CHECKS,
        ),
        ehr_error="invalid_client",
        ehr_description="Client is not activated",
    )
    session = _session(APPROVER)
    return web.error_page(
        "portal/ehr_failure.html",
        exc,
        exc.page,
        CORRELATION,
        context={
            "session": session,
            "user": APPROVER,
            "csrf": session.csrf_token,
            "configuration_id": PENDING.id,
            "ehr_error": exc.ehr_error,
            "ehr_description": exc.ehr_description,
            "redirect_uri": f"{PUBLIC}/api/portal/ehr/callback",
            "jwks_url": f"{PUBLIC}/api/.well-known/jwks.json",
        },
    )


def _new_with_errors() -> func.HttpResponse:
    rows = [
        {"organization": "", "fhir_base_url": "fhir.contoso.example", "environment": "test"},
        {"organization": "Contoso Health", "fhir_base_url": "https://fhir.contoso.example/api/FHIR/R4"},
    ]
    first = FormErrors(
        {
            "organization": N_("Enter the organization's name."),
            "fhir_base_url": N_("FHIR URL isn't valid: %(reason)s", reason=N_("only https:// addresses are accepted")),
            "approver_upn": N_("Enter the approver's Microsoft 365 user name, like analyst@contoso.com."),
        }
    )
    blank = describe({})
    return _portal(
        "portal/new.html",
        ADMIN,
        title=N_("Add configurations"),
        rows=[({**blank, **rows[0]}, first.errors), ({**blank, **rows[1]}, {})],
        saved_count=2,
        **_choices(),
    )


def _patient_url_failure() -> func.HttpResponse:
    """The approver's EHR sign-in worked, but the patient-side FHIR URL no longer passes its checks."""
    reason = profile_for(Vendor.ORACLE).patient_fhir_base_refusal(ORACLE_EHR_URL, ORACLE_EHR_URL)
    return _ehr_failure(
        EhrSignInFailed(
            ORACLE_PATIENT_PENDING.id,
            ErrorPage(
                N_("The patient-side FHIR URL could not be proven"),
                N_("Patient-side FHIR URL isn't valid: %(reason)s", reason=reason),
                (
                    N_(
                        "Your EHR sign-in worked; the patient-side FHIR URL is the tenant's patient-access "
                        "service root, which must answer SMART discovery for the patient client id and serve "
                        "FHIR R4."
                    ),
                ),
            ),
        )
    )


def _new_with_patient_url_errors() -> func.HttpResponse:
    """Two Oracle Health rows: a patient-side FHIR URL of another tenant, and one URL entered twice."""
    oracle = {"organization": "Contoso Health", "environment": "test", "vendor": Vendor.ORACLE.value}
    rows = [
        {**oracle, "fhir_base_url": ORACLE_EHR_URL, "patient_fhir_base_url": "https://fhir-myrecord.cerner.com/r4/x1"},
        {**oracle, "fhir_base_url": "https://fhir-ehr-code.cerner.com/r4/x2", "patient_fhir_base_url": ORACLE_EHR_URL},
    ]
    refusal = profile_for(Vendor.ORACLE).patient_fhir_base_refusal(ORACLE_EHR_URL, rows[0]["patient_fhir_base_url"])
    blank = describe({})
    return _portal(
        "portal/new.html",
        ADMIN,
        title=N_("Add configurations"),
        rows=[
            (
                {**blank, **rows[0]},
                {"patient_fhir_base_url": N_("Patient-side FHIR URL isn't valid: %(reason)s", reason=refusal)},
            ),
            (
                {**blank, **rows[1]},
                {
                    "fhir_base_url": N_("This FHIR URL appears twice in this form."),
                    "patient_fhir_base_url": N_("This URL appears twice in this form."),
                },
            ),
        ],
        saved_count=0,
        **_choices(),
    )


def _records(config: Configuration) -> func.HttpResponse:
    return _portal(
        "portal/records.html",
        ADMIN,
        title=N_("Integration records"),
        config=config,
        records=integration_records(config, PUBLIC),
    )


def _patient_error(exc: Exception, pages: web.ErrorPages = PATIENT_VISIT_PAGES) -> func.HttpResponse:
    return web.error_response(exc, CORRELATION, html=True, pages=pages)


# --- the provider's live panel -------------------------------------------------------------------------------


def _panel(*rows: PanelRow, ended: bool = False) -> Panel:
    by_role = {row.role: row for row in rows}
    every = tuple(
        by_role.get(role, PanelRow(role, PanelState.NOT_ARRIVED)) for role in (Role.PATIENT, Role.PROVIDER, Role.STAFF)
    )
    return Panel(rows=every, meeting=True, ended_at=WHEN if ended else None, opened_at=WHEN - timedelta(minutes=20))


PANELS: Mapping[str, Panel] = {
    "launched": _panel(
        PanelRow(Role.PROVIDER, PanelState.LAUNCHED, WHEN), PanelRow(Role.PATIENT, PanelState.WAITING_TO_JOIN, WHEN)
    ),
    "lobby": _panel(
        PanelRow(Role.PATIENT, PanelState.IN_LOBBY, WHEN, lobby_since=WHEN),
        PanelRow(Role.PROVIDER, PanelState.LAUNCHED, WHEN),
    ),
    "in-meeting": _panel(
        PanelRow(Role.PATIENT, PanelState.IN_MEETING, WHEN, lobby_wait=timedelta(minutes=3, seconds=10)),
        PanelRow(Role.PROVIDER, PanelState.IN_MEETING, WHEN),
        PanelRow(Role.STAFF, PanelState.IN_MEETING, WHEN, lobby_wait=timedelta(seconds=40)),
    ),
    "left": _panel(
        PanelRow(Role.PATIENT, PanelState.LEFT, WHEN, lobby_wait=timedelta(minutes=1, seconds=5)),
        PanelRow(Role.PROVIDER, PanelState.IN_MEETING, WHEN),
    ),
    "ended": _panel(
        PanelRow(Role.PATIENT, PanelState.LEFT, WHEN, lobby_wait=timedelta(minutes=2)),
        PanelRow(Role.PROVIDER, PanelState.LEFT, WHEN),
        ended=True,
    ),
    # A single visit with a further clinician and a guest interpreter, each told apart by Teams.
    "colleagues": replace(
        _panel(
            PanelRow(Role.PATIENT, PanelState.IN_MEETING, WHEN, lobby_wait=timedelta(minutes=4)),
            PanelRow(Role.PROVIDER, PanelState.IN_MEETING, WHEN),
            PanelRow(Role.STAFF, PanelState.IN_MEETING, WHEN),
        ),
        colleagues=(
            AttendeeRow("clinician", 2, PanelState.IN_MEETING, WHEN),
            AttendeeRow("interpreter", 1, PanelState.IN_LOBBY, WHEN, lobby_since=WHEN),
            AttendeeRow("interpreter", 2, PanelState.LEFT, WHEN),
        ),
    ),
    # A group visit: patients waiting to be admitted one by one.
    "group-lobby": replace(
        _panel(PanelRow(Role.PROVIDER, PanelState.IN_MEETING, WHEN)),
        group=True,
        attendees=(
            AttendeeRow("clinician", 1, PanelState.IN_MEETING, WHEN),
            AttendeeRow("clinician", 2, PanelState.IN_MEETING, WHEN),
            AttendeeRow("patient", 1, PanelState.IN_LOBBY, WHEN, lobby_since=WHEN),
            AttendeeRow("patient", 2, PanelState.IN_LOBBY, WHEN, lobby_since=WHEN),
            AttendeeRow("interpreter", 1, PanelState.LEFT, WHEN),
        ),
    ),
    "group-one-waiting": replace(
        _panel(PanelRow(Role.PROVIDER, PanelState.LAUNCHED, WHEN)),
        group=True,
        attendees=(AttendeeRow("patient", 1, PanelState.IN_LOBBY, WHEN, lobby_since=WHEN),),
    ),
    "group-in-meeting": replace(
        _panel(PanelRow(Role.PROVIDER, PanelState.IN_MEETING, WHEN)),
        group=True,
        attendees=(
            AttendeeRow("clinician", 1, PanelState.IN_MEETING, WHEN),
            AttendeeRow("patient", 1, PanelState.IN_MEETING, WHEN),
        ),
    ),
    "group-empty": replace(_panel(PanelRow(Role.PROVIDER, PanelState.LAUNCHED, WHEN)), group=True),
}


def _provider(panel: str, **context: Any) -> func.HttpResponse:
    values = {
        "join_web_url": "https://teams.example.org/l/meetup-join/1",
        "panel": PANELS[panel],
        "panel_etag": '"panel-1"',
        "presence_url": "/api/visits/v1/presence?t=token",
        "page_url": "/api/visits/v1?t=token",
        "poll_seconds": 0 if PANELS[panel].ended else 5,
    }
    return web.render("launch/provider.html", values | context)


# --- the patient's waiting room ------------------------------------------------------------------------------

# As the EHR gives it: its own UTC offset (shown in it until the browser's script shows the patient's zone).
APPOINTMENT = WHEN.astimezone(timezone(timedelta(hours=1)))


def _waiting(**context: Any) -> func.HttpResponse:
    values = {
        "refresh_url": "/api/visits/v1?t=token",
        "status_url": "/api/visits/v1/presence?t=token",
        "poll_seconds": 5,
        "recheck_seconds": 10,
        "overdue": False,
        "organization": None,
        "appointment_start": None,
    }
    return web.render("launch/waiting.html", values | context)


# --- usage reports -------------------------------------------------------------------------------------------

REPORT_DAYS = [WHEN.date() - timedelta(days=n) for n in range(6, -1, -1)]


def _day_totals(n: int) -> Totals:
    hours = [0] * 24
    hours[15] = n
    statuses = {"completed": n, "no_show": 1, "abandoned": 1 if n > 1 else 0, "in_progress": 1 if n > 2 else 0}
    return Totals(
        statuses={k: v for k, v in statuses.items() if v},
        waits={20: 1, 125: n, 1900: 1},
        durations={900: n, 4200: 1},
        hours=hours,
        attendants={"patient": n, "provider": n},
    )


def _report(*, analytics: bool = True, show_csn: bool = False, empty: bool = False) -> Report:
    per_day = [(day, Totals() if empty else _day_totals(i % 4)) for i, day in enumerate(REPORT_DAYS)]
    totals = Totals()
    for _, day_totals in per_day:
        totals = totals.plus(day_totals)
    return Report(
        config=APPROVED,
        preferences=ReportPreferences(analytics=analytics, show_csn=show_csn),
        range=Range(REPORT_DAYS[0], REPORT_DAYS[-1], None if empty else 7),
        department="",
        departments=[] if empty else ["Cardiology", "Dermatology"],
        per_day=per_day,
        totals=totals,
        computed_days=0,
        as_of=None if empty else WHEN,
    )


REPORT_ROWS = [
    {
        "id": "r-7f3a9c",
        "status": "completed",
        "department": "Cardiology",
        "organizer": "o-19be",
        "start": WHEN,
        "duration": 1260,
        "wait": 95,
        "attendants": {"patient": 1, "provider": 1, "staff": 2},
    },
    {
        "id": "r-c01d44",
        "status": "no_show",
        "department": "",
        "organizer": None,
        "start": WHEN + timedelta(hours=1),
        "duration": 4000,
        "wait": None,
        "attendants": {"provider": 2},
    },
    {
        "id": "r-99aa01",
        "status": "abandoned",
        "department": "Dermatology",
        "organizer": "o-2c4d",
        "start": None,
        "duration": None,
        "wait": 700,
        "attendants": {"patient": 2},
    },
]


def _report_page(user: PortalIdentity, report: Report, **context: Any) -> func.HttpResponse:
    values: dict[str, Any] = {
        "configurations": [APPROVED, _configuration(approved=True, id="cfg-0002", environment=Environment.PRODUCTION)],
        "params": {"days": "7"},
        "day": WHEN.date(),
        "rows": REPORT_ROWS,
        "after": None,
        "notice": None,
    }
    page = report_context(_session(user), report, **(values | context))
    return web.render("portal/report.html", {**page, "words": coded_words(_choices())})


def formatted_dates() -> frozenset[str]:
    """How the sample dates and times read in the current language: Babel's words, not the catalogue's."""
    days = {i18n.format_day(day) for day in REPORT_DAYS} | {i18n.format_day(day, "MMMd") for day in REPORT_DAYS}
    clocks = {i18n.format_clock(WHEN), i18n.format_clock(APPOINTMENT), i18n.format_datetime(WHEN)}
    return frozenset(days | clocks | {i18n.format_date(WHEN)})


PageState = Callable[[], func.HttpResponse]

PAGE_STATES: Mapping[str, PageState] = {
    # --- the launch: clinicians and patients -------------------------------------------------
    "launch/authorize_post": lambda: web.render(
        "launch/authorize_post.html",
        {"action": "https://ehr.example.org/oauth2/authorize", "fields": {"state": "s", "code_challenge": "c"}},
    ),
    "launch/confirm": lambda: web.render(
        "launch/confirm.html",
        {
            "title": N_("Link your Microsoft 365 account"),
            "state": "state",
            "csrf": "csrf",
            "ehr_user_name": "Dr. Jordan Smith",
            "ehr_user_type": "Practitioner",
            "account_upn": "dr.smith@contoso.example",
            "account_name": "Jordan Smith",
            "names_differ": True,
            "minutes": 10,
        },
    ),
    "launch/confirm-without-a-name": lambda: web.render(
        "launch/confirm.html",
        {
            "title": N_("Link your Microsoft 365 account"),
            "state": "state",
            "csrf": "csrf",
            "ehr_user_name": None,
            "ehr_user_type": "Practitioner",
            "account_upn": "dr.smith@contoso.example",
            "account_name": "Jordan Smith",
            "names_differ": False,
            "minutes": 1,
        },
    ),
    "launch/declined": lambda: web.render("launch/declined.html", {"title": N_("Nothing was linked")}),
    "launch/signin-intro": lambda: web.render(
        "launch/signin_intro.html",
        {"title": N_("Link your EHR account to Microsoft 365 once"), "state": "state", "csrf": "csrf", "minutes": 10},
    ),
    "launch/provider": lambda: _provider("in-meeting"),
    "launch/provider-launched": lambda: _provider("launched"),
    "launch/provider-lobby": lambda: _provider("lobby"),
    "launch/provider-left": lambda: _provider("left"),
    "launch/provider-ended": lambda: _provider("ended"),
    "launch/provider-with-join-link": lambda: _provider(
        "lobby", patient_join_link=f"{PUBLIC}/api/visits/v1?t=patient-token"
    ),
    "launch/provider-preparing": lambda: _provider("launched", join_web_url=None),
    "launch/provider-colleagues": lambda: _provider("colleagues"),
    "launch/provider-group-lobby": lambda: _provider("group-lobby"),
    "launch/provider-group-one-waiting": lambda: _provider("group-one-waiting"),
    "launch/provider-group-in-meeting": lambda: _provider("group-in-meeting"),
    "launch/provider-group-empty": lambda: _provider("group-empty"),
    "launch/interpreter-link": lambda: web.render(
        "launch/interpreter_link.html",
        {"title": N_("Interpreter link"), "link": f"{PUBLIC}/api/visits/v1/interpreter?t=token"},
    ),
    "launch/interpreter": lambda: web.render(
        "launch/interpreter.html",
        {"title": N_("Join as the interpreter"), "join_web_url": "https://teams.example.org/l/meetup-join/1"},
    ),
    "launch/group-join": lambda: web.render(
        "launch/group_join.html",
        {
            "title": N_("Your group video visit"),
            "join_web_url": "https://teams.example.org/l/meetup-join/1",
            "visit_number": "4821",
        },
    ),
    "launch/error-interpreter-link-refused": lambda: _launch_error(InterpreterLinkRefused("used")),
    "launch/error-interpreter-link-not-ready": lambda: _launch_error(
        Conflict(N_("The Teams meeting is not ready yet: create the interpreter link in a moment."))
    ),
    "launch/error-interpreter-visit-ended": lambda: _launch_error(
        NotFound(N_("This visit has ended. Ask the clinician for a new link."), code="visit_gone")
    ),
    "launch/waiting": lambda: _waiting(),
    "launch/waiting-with-appointment": lambda: _waiting(organization="Contoso Health", appointment_start=APPOINTMENT),
    "launch/waiting-organization-only": lambda: _waiting(organization="Contoso Health", recheck_seconds=1),
    "launch/waiting-time-only": lambda: _waiting(appointment_start=WHEN),
    "launch/waiting-overdue": lambda: _waiting(
        overdue=True, organization="Contoso Health", appointment_start=APPOINTMENT, recheck_seconds=60
    ),
    "launch/waiting-overdue-organization-only": lambda: _waiting(overdue=True, organization="Contoso Health"),
    "launch/waiting-overdue-time-only": lambda: _waiting(overdue=True, appointment_start=WHEN),
    "launch/waiting-overdue-nothing-known": lambda: _waiting(overdue=True),
    "launch/patient-link-expired": lambda: _patient_error(StateError(N_("This sign-in link has expired."))),
    "launch/patient-visit-ended": lambda: _patient_error(NotFound(N_("There is no such visit."), code="visit_gone")),
    "launch/patient-call-clinic": lambda: _patient_error(Forbidden(N_("This page is for clinicians."))),
    "launch/patient-reload-later": lambda: _patient_error(UpstreamUnavailable("down", system="Microsoft Graph")),
    "launch/patient-launch-later": lambda: _patient_error(
        UpstreamUnavailable("down", system="EHR"), PATIENT_LAUNCH_PAGES
    ),
    "launch/patient-bug": lambda: _patient_error(RuntimeError("boom")),
    "launch/error-relaunch": lambda: _launch_error(
        StateError(N_("This sign-in link has expired. Please start again."))
    ),
    "launch/error-teams-busy": lambda: _launch_error(UpstreamThrottled("busy", system="Microsoft Graph")),
    "launch/error-unreachable": lambda: _launch_error(
        UpstreamUnavailable(N_("The %(system)s did not answer in time.", system="EHR"), system="EHR")
    ),
    "launch/error-ehr-refused": lambda: _launch_error(UpstreamRejected("no", system="EHR", code="access_denied")),
    "launch/error-unreadable": lambda: _launch_error(NoAppointment()),
    "launch/error-no-configuration": lambda: _launch_error(TenantConfigNotFound()),
    "launch/error-pending": lambda: _launch_error(ConfigurationPending()),
    "launch/error-wrong-tenant": lambda: _launch_error(WrongTenant()),
    "launch/error-other-browser": lambda: _launch_error(ConfirmationNotBound()),
    "launch/error-forged": lambda: _launch_error(ConfirmationForged()),
    "launch/error-confirm-by-link": lambda: _launch_error(ConfirmWithTheButton()),
    "launch/error-access-policy": lambda: _launch_error(AccessPolicyMissing()),
    "launch/error-access-policy-with-organizer": lambda: _launch_error(
        AccessPolicyMissing("bbbbbbbb-0000-4000-8000-000000000001")
    ),
    "launch/error-signin-by-link": lambda: _launch_error(ContinueWithTheButton()),
    "launch/error-signin-start-refused": lambda: _launch_error(SignInStartRefused()),
    "launch/error-context-mismatch": lambda: _launch_error(LaunchContextMismatch("sessionId")),
    "launch/error-context-unverifiable": lambda: _launch_error(UnverifiableLaunchContext("no_ehr_context")),
    "launch/error-conference-mismatch": lambda: _launch_error(LaunchContextMismatch("conferenceId")),
    "launch/error-conference-unconfirmed": lambda: _launch_error(UnverifiableLaunchContext("no_conference_source")),
    "launch/error-conference-unidentified": lambda: _launch_error(
        UnverifiableLaunchContext("no_conference_identifier")
    ),
    "launch/error-visit-ended": lambda: _launch_error(
        NotFound(N_("This visit has ended. Please launch it again from Epic or MyChart."))
    ),
    # --- the general error page ----------------------------------------------------------------
    "error/not-found": lambda: web.error_response(
        NotFound(N_("There is no such configuration.")), CORRELATION, html=True
    ),
    "error/not-configured": lambda: web.error_response(ConfigurationError({"X": "missing"}), CORRELATION, html=True),
    "error/bad-form": lambda: web.error_response(
        BadRequest(N_("This form could not be read. Please reload the page and try again.")), CORRELATION, html=True
    ),
    "error/forbidden": lambda: web.error_response(
        Forbidden(N_("Only the approver named on this configuration can approve it.")), CORRELATION, html=True
    ),
    "error/bug": lambda: web.error_response(RuntimeError("boom"), CORRELATION, html=True),
    # --- the portal ------------------------------------------------------------------------------
    "portal/signin": lambda: _portal("portal/signin.html", None, title=N_("Sign in")),
    "portal/signin-signed-out": lambda: _portal("portal/signin.html", None, title=N_("Sign in"), signed_out=True),
    "portal/signin-required": lambda: _portal("portal/signin.html", None, title=N_("Sign in"), signin_required=True),
    "portal/dashboard": lambda: _portal(
        "portal/dashboard.html",
        ADMIN,
        title=N_("Configurations"),
        configurations=[PENDING, APPROVED],
        awaiting=[PENDING],
        shared_configurations=[_configuration(approved=True, tenant_id=OTHER_TENANT, organization="Fabrikam")],
        notice=NOTICES["created"],
    ),
    "portal/dashboard-awaiting-admin": lambda: _portal(
        "portal/dashboard.html",
        ADMIN,
        title=N_("Configurations"),
        configurations=[PENDING, EDIT_OF_PROOF, EDIT_OF_NAME],
        awaiting=[PENDING, EDIT_OF_PROOF, EDIT_OF_NAME],
        shared_configurations=[],
        notice=NOTICES["edit-saved"],
    ),
    "portal/dashboard-awaiting-approver": lambda: _portal(
        "portal/dashboard.html",
        APPROVER,
        title=N_("Configurations"),
        configurations=[SIGNED_IN, EDIT_WITHOUT_SIGNIN],
        awaiting=[SIGNED_IN, EDIT_WITHOUT_SIGNIN],
        shared_configurations=[],
        notice=NOTICES["edit-discarded"],
    ),
    "portal/dashboard-one-awaiting": lambda: _portal(
        "portal/dashboard.html",
        APPROVER,
        title=N_("Configurations"),
        configurations=[EDIT_OF_PROOF_SIGNED_IN],
        awaiting=[EDIT_OF_PROOF_SIGNED_IN],
        shared_configurations=[],
    ),
    "portal/dashboard-empty-admin": lambda: _portal(
        "portal/dashboard.html", ADMIN, title=N_("Configurations"), configurations=[], shared_configurations=[]
    ),
    "portal/dashboard-empty-approver": lambda: _portal(
        "portal/dashboard.html", APPROVER, title=N_("Configurations"), configurations=[], shared_configurations=[]
    ),
    "portal/new": lambda: _portal(
        "portal/new.html",
        ADMIN,
        title=N_("Add configurations"),
        rows=[(describe({}), {})],
        saved_count=0,
        **_choices(),
    ),
    "portal/new-with-errors": _new_with_errors,
    "portal/new-with-patient-url-errors": _new_with_patient_url_errors,
    "portal/configuration-pending-admin": lambda: _detail(ADMIN, PENDING, notice=NOTICES["saved"]),
    "portal/configuration-pending-approver": lambda: _detail(APPROVER, PENDING),
    "portal/configuration-signed-in-approver": lambda: _detail(APPROVER, SIGNED_IN, notice=NOTICES["ehr-signin"]),
    "portal/configuration-approved": lambda: _detail(ADMIN, APPROVED, notice=NOTICES["approved"]),
    "portal/configuration-shared-view": lambda: _detail(FOREIGN_ADMIN, APPROVED),
    "portal/configuration-shared-view-with-edit": lambda: _detail(FOREIGN_ADMIN, EDIT_OF_NAME),
    "portal/configuration-edit-unchanged": lambda: _detail(ADMIN, APPROVED, notice=NOTICES["edit-unchanged"]),
    "portal/configuration-edit-awaiting-admin": lambda: _detail(ADMIN, EDIT_OF_PROOF, notice=NOTICES["edit-saved"]),
    "portal/configuration-edit-awaiting-approver": lambda: _detail(APPROVER, EDIT_OF_PROOF),
    "portal/configuration-edit-signed-in-approver": lambda: _detail(
        APPROVER, EDIT_OF_PROOF_SIGNED_IN, notice=NOTICES["ehr-signin"]
    ),
    "portal/configuration-edit-of-name-approver": lambda: _detail(APPROVER, EDIT_OF_NAME),
    "portal/configuration-edit-without-signin-admin": lambda: _detail(ADMIN, EDIT_WITHOUT_SIGNIN),
    "portal/configuration-with-vendor-errors": lambda: _detail(
        ADMIN,
        PENDING,
        values=describe(PENDING.input().__dict__) | {"vendor": Vendor.ORACLE.value},
        errors={
            "fhir_base_url": N_(
                "FHIR URL isn't valid: %(reason)s",
                reason=N_(
                    "it serves %(served)s; the connector supports %(supported)s only",
                    served="FHIR 3.0.2 (STU3)",
                    supported="R4 (4.0.x)",
                ),
            ),
            "writeback_mode": profile_for(Vendor.ORACLE).writeback_refusal(WritebackMode.EPIC),
            "provider_client_id": N_("Enter the client id the EHR issued (letters, digits, . _ : -, up to 128)."),
        },
    ),
    "portal/configuration-oracle-patient-url-approver": lambda: _detail(APPROVER, ORACLE_PATIENT_PENDING),
    "portal/configuration-oracle-patient-url-approved": lambda: _detail(ADMIN, ORACLE_PATIENT_APPROVED),
    "portal/configuration-edit-of-patient-url-approver": lambda: _detail(APPROVER, EDIT_OF_PATIENT_URL),
    "portal/configuration-with-patient-url-errors": lambda: _detail(
        ADMIN,
        PENDING,
        values=describe(PENDING.input().__dict__) | {"patient_fhir_base_url": ORACLE_PATIENT_URL},
        errors={
            "patient_fhir_base_url": N_(
                "Patient-side FHIR URL isn't valid: %(reason)s",
                reason=profile_for(Vendor.SMART).patient_fhir_base_refusal(PENDING.fhir_base_url, ORACLE_PATIENT_URL),
            ),
        },
    ),
    "portal/configuration-with-errors": lambda: _detail(
        ADMIN,
        APPROVED,
        errors={"organization": N_("Use up to %(count)s printable characters.", count=120)},
        conflict=N_("Someone else changed this configuration just now; it was not deleted. Review it and try again."),
        share_error=N_("This configuration is already shared with tenant %(tenant)s.", tenant=OTHER_TENANT),
        share_value=OTHER_TENANT,
    ),
    "portal/delete": lambda: _portal("portal/delete.html", ADMIN, title=N_("Delete configuration"), config=APPROVED),
    "portal/delete-with-edit": lambda: _portal(
        "portal/delete.html", ADMIN, title=N_("Delete configuration"), config=EDIT_OF_PROOF
    ),
    "portal/ehr-failure": _ehr_failure,
    "portal/ehr-failure-patient-url": _patient_url_failure,
    "portal/links": lambda: _portal(
        "portal/links.html",
        ADMIN,
        title=N_("Clinician links"),
        config=APPROVED,
        mappings=MAPPINGS,
        memory_minutes=5,
        notice=NOTICES["link-removed"],
    ),
    "portal/links-empty": lambda: _portal(
        "portal/links.html", ADMIN, title=N_("Clinician links"), config=PENDING, mappings=[], memory_minutes=5
    ),
    "portal/records": lambda: _portal(
        "portal/records.html",
        ADMIN,
        title=N_("Integration records"),
        config=APPROVED,
        records=integration_records(APPROVED, PUBLIC),
    ),
    "portal/records-test": lambda: _portal(
        "portal/records.html",
        ADMIN,
        title=N_("Integration records"),
        config=_configuration(approved=True),
        records=integration_records(_configuration(approved=True), PUBLIC),
    ),
    "portal/records-epic": lambda: _records(_configuration(approved=True, vendor=Vendor.EPIC)),
    "portal/records-oracle": lambda: _records(
        _configuration(approved=True, vendor=Vendor.ORACLE, writeback_mode=WritebackMode.FHIR_AUDIT_EVENT)
    ),
    "portal/records-edit-awaiting": lambda: _records(EDIT_OF_PROOF),
    "portal/records-oracle-patient-url": lambda: _records(ORACLE_PATIENT_APPROVED),
    "portal/records-oracle-patient-url-edit-awaiting": lambda: _records(EDIT_OF_PATIENT_URL),
    "portal/records-not-approved": lambda: _portal(
        "portal/records.html", ADMIN, title=N_("Integration records"), config=PENDING, records=None
    ),
    # --- usage reports -------------------------------------------------------------------------------------
    "portal/reports": lambda: _portal(
        "portal/reports.html",
        ADMIN,
        title=N_("Usage reports"),
        configurations=[APPROVED, _configuration(approved=True, id="cfg-0002", environment=Environment.PRODUCTION)],
    ),
    "portal/reports-empty": lambda: _portal(
        "portal/reports.html", APPROVER, title=N_("Usage reports"), configurations=[]
    ),
    "portal/report": lambda: _report_page(ADMIN, _report(), notice=N_("Report settings saved.")),
    "portal/report-more-appointments": lambda: _report_page(
        ADMIN, _report(show_csn=True), params={"from": "2026-03-08", "to": "2026-03-14"}, after="row-key"
    ),
    "portal/report-empty-analytics-off": lambda: _report_page(
        APPROVER, _report(analytics=False, empty=True), configurations=[APPROVED], params={}, rows=[]
    ),
}
