"""EHR launches: provider and patient launch URLs, the SMART callback, the one-time Microsoft 365
sign-in, and the visit pages (provider page + live panel, patient waiting page).

    GET|POST /api/launch/{configurationId}/provider   → EHR authorize (GET redirect or POST form)
    GET|POST /api/launch/{configurationId}/patient    → EHR authorize
    GET      /api/launch/callback                     → provider page | "Link … once" page | lobby | waiting
    POST     /api/launch/signin/start                 → Microsoft sign-in (the "Continue" of that page)
    GET|POST /api/launch/signin/callback              → "Link your Microsoft 365 account?" page
    POST     /api/launch/signin/confirm               → provider page (link stored) | "nothing was linked"
    GET      /api/visits/{visitKey}?t=…               → provider page | patient waiting page / lobby
    GET      /api/visits/{visitKey}/presence?t=…      → live panel: JSON, or its HTML fragment (Accept: text/html);
                                                         ETag / If-None-Match → 304, X-Poll-After: when to look again

All anonymous: ``state`` rows and signed visit tokens carry the authority, because Epic's
embedded browsers drop cookies. The one-time sign-in is the exception: it is bound to the browser
that started it by a cookie (``signin_cookie_name``), rotated when Microsoft returns and required,
with the page's form token, to confirm the link. Every failure is its own page with a correlation id.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func

from connector import i18n
from connector.services import services
from connector.web import (
    SECURITY_HEADERS,
    Audiences,
    ErrorPages,
    api,
    cookie_header,
    correlation_id,
    error_response,
    json_response,
    page_with,
    read_cookie,
    read_form,
    redirect,
    render,
    sign_in_binding_cookie,
)
from shared.ehr.launch_params import LaunchKind, parse_authorization_response, parse_launch
from shared.kernel.clock import utcnow
from shared.kernel.errors import (
    Audience,
    BadRequest,
    ConfigurationError,
    Conflict,
    ConnectorError,
    ErrorPage,
    Forbidden,
    NotFound,
    StateError,
    UpstreamError,
    UpstreamRejected,
    UpstreamThrottled,
)
from shared.kernel.i18n import N_
from shared.kernel.settings import LOCAL_HOSTS, get_settings
from shared.launch.service import (
    CONFIRM_TTL,
    EHR,
    INTRO_TTL,
    ConfirmLink,
    ExplainSignIn,
    JoinMeeting,
    LaunchOutcome,
    LaunchService,
    LinkDeclined,
    ShowGroupJoinPage,
    ShowProviderPage,
    SignInFirst,
    WaitForClinician,
)
from shared.microsoft.teams import AccessPolicyMissing, access_policy_commands
from shared.visits.events import Role
from shared.visits.panel import Panel, poll_after
from shared.visits.tokens import VisitGrant

bp = func.Blueprint()

QUEUE = "%WRITEBACK_QUEUE_NAME%"
QUEUE_CONNECTION = "AzureWebJobsStorage"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
POLL_AFTER_HEADER = "X-Poll-After"  # seconds until the panel should look again; absent: stop (shared.visits.panel)
WAITING_POLL_SECONDS = 5

# --- error pages ------------------------------------------------------------------------------
# Errors that mean one thing wherever they surface carry their own page (TenantConfigNotFound,
# ConfigurationPending, WrongTenant); these are the launch's words for the rest. Clinicians' pages say
# what failed and what to check; patients' pages (further below) never show either.

RELAUNCH = ErrorPage(
    N_("Please launch again from Epic"),
    N_("This launch link has expired or was already used. Launches are single-use and valid for 10 minutes."),
    help=(N_("Start the visit again from Epic (Hyperspace, Haiku or MyChart)."),),
)
TEAMS_BUSY = ErrorPage(
    N_("Microsoft Teams is busy"),
    N_("Microsoft Teams is receiving too many requests right now, even after retrying."),
    help=(N_("Wait a minute, then launch the visit again."),),
)
EHR_SIGNIN_CHECKS = (
    N_(
        "The EHR's client id for this launch is active in this EHR environment and its public key "
        "(the connector's JWKS URL) is synchronised."
    ),
    N_("The FDI record matches the integration records shown in the configuration portal."),
)
EHR_UNUSABLE_TITLES = {
    "invalid_id_token": N_("EHR sign-in could not be verified"),
    "smart_discovery": N_("EHR configuration unusable"),
}
LAUNCH_AGAIN = (
    N_("Launch the visit again from Epic. If it keeps happening, tell your IT support the correlation id."),
)
TRY_AGAIN = (N_("Try again in a moment. If it keeps happening, tell your IT support the correlation id below."),)


def _upstream_page(exc: UpstreamError) -> ErrorPage:
    if exc.retryable:
        title = N_("%(system)s is unreachable", system=exc.system)
    else:
        title = N_("%(system)s returned an error", system=exc.system)
    return ErrorPage(title, exc.message, TRY_AGAIN)


def _rejected_page(exc: UpstreamRejected) -> ErrorPage:
    """Each "no" from the EHR during a launch is shown as a failed sign-in; other systems' as upstream errors."""
    if exc.system != EHR:
        return _upstream_page(exc)
    if exc.code in EHR_UNUSABLE_TITLES:
        return ErrorPage(EHR_UNUSABLE_TITLES[exc.code], exc.message, LAUNCH_AGAIN)
    return ErrorPage(
        N_("EHR sign-in failed"),
        N_("The EHR refused the sign-in (OAuth2 error: %(code)s).", code=exc.code),
        EHR_SIGNIN_CHECKS,
    )


def _access_policy_page(exc: AccessPolicyMissing) -> ErrorPage:
    """For the clinician and the Teams administrator they call: the commands with the real ids, to copy."""
    return ErrorPage(
        N_("Teams meeting could not be created"),
        N_(
            "Microsoft Teams refused to create the meeting: no Teams application access policy allows this "
            "connector to create meetings for the clinician who organizes this visit."
        ),
        help=(
            N_(
                "A Teams administrator runs the PowerShell below (MicrosoftTeams module). If the policy already "
                "exists, only the last command is needed."
            ),
            N_(
                "To allow every clinician of the organization at once, grant the policy with -Global instead of "
                "-Identity."
            ),
            N_("The change can take up to 30 minutes to apply; then start the visit again."),
        ),
        code_block=access_policy_commands(_connector_app_id(), exc.organizer_object_id),
    )


def _connector_app_id() -> str | None:
    try:
        return get_settings().entra_client_id
    except ConfigurationError:  # cannot happen after Graph answered; an error page must render regardless
        return None


LAUNCH_PAGES = ErrorPages(
    "launch/error.html",
    {
        AccessPolicyMissing: _access_policy_page,
        StateError: lambda exc: RELAUNCH,
        UpstreamThrottled: lambda exc: TEAMS_BUSY,
        UpstreamRejected: _rejected_page,
        UpstreamError: _upstream_page,
        BadRequest: lambda exc: ErrorPage(N_("This launch could not be read"), exc.message),
        ConnectorError: lambda exc: ErrorPage(N_("The visit could not start"), exc.message),
    },
    audience=Audience.CLINICIAN,
)
launch_page = page_with(LAUNCH_PAGES)  # clinicians' routes: the launch's technical pages

# A patient's words: what happened in one line, what to do next, never a configuration detail. Whoever
# can fix the cause finds it in the log under the correlation id the page shows.
CANNOT_START = N_("We can't start your video visit right now")
START_AGAIN = N_("Please open your visit again from the app or website where you started it.")
STILL_NOT_WORKING = N_("If it still doesn't work, please call your clinic.")
BRIEFLY_UNAVAILABLE = N_("Something is busy or briefly unavailable. This usually passes within a minute or two.")
PATIENT_CALL_CLINIC = ErrorPage(CANNOT_START, N_("Please call your clinic. They can help you with your visit."))
PATIENT_LINK_EXPIRED = ErrorPage(
    N_("This link has expired"),
    N_("For your safety, the link to a video visit works only once and only for a short time."),
    help=(START_AGAIN, STILL_NOT_WORKING),
)
PATIENT_VISIT_ENDED = ErrorPage(
    N_("This video visit has ended"),
    N_("The visit is over, or its link is no longer valid."),
    help=(N_("If you still need to see your clinician, please call your clinic."),),
)
PATIENT_LAUNCH_LATER = ErrorPage(
    CANNOT_START,
    BRIEFLY_UNAVAILABLE,
    help=(
        N_("Please wait a minute, then open your visit again from the app or website where you started it."),
        STILL_NOT_WORKING,
    ),
)
PATIENT_RELOAD_LATER = ErrorPage(
    CANNOT_START,
    BRIEFLY_UNAVAILABLE,
    help=(N_("Please try again in a minute. If it still doesn't work, please call your clinic."),),
    retry=True,
)


def _patient_book(*, later: ErrorPage) -> ErrorPages:
    """A patients' book: ``later`` for what passes by itself (on a launch, reloading a used link cannot help)."""
    return ErrorPages(
        "launch/patient_error.html",
        {
            StateError: lambda exc: PATIENT_LINK_EXPIRED,
            Forbidden: lambda exc: PATIENT_LINK_EXPIRED if exc.code.startswith("visit_token") else PATIENT_CALL_CLINIC,
            NotFound: lambda exc: PATIENT_VISIT_ENDED if exc.code == "visit_gone" else PATIENT_CALL_CLINIC,
            Conflict: lambda exc: PATIENT_VISIT_ENDED if exc.code == "visit_gone" else later,
            ConnectorError: lambda exc: later if exc.retryable else PATIENT_CALL_CLINIC,
        },
        audience=Audience.PATIENT,
    )


PATIENT_LAUNCH_PAGES = _patient_book(later=PATIENT_LAUNCH_LATER)
PATIENT_VISIT_PAGES = _patient_book(later=PATIENT_RELOAD_LATER)
patient_launch_page = page_with(PATIENT_LAUNCH_PAGES)
# The callback serves both: the launch state's kind says whose launch failed (``LaunchService.complete``).
callback_page = page_with(Audiences({Audience.PATIENT: PATIENT_LAUNCH_PAGES, Audience.CLINICIAN: LAUNCH_PAGES}))
# A visit page: the signed token's role says whose page it is; a link that is not valid gets a patient's words.
visit_page_errors = page_with(Audiences({Audience.PATIENT: PATIENT_VISIT_PAGES, Audience.CLINICIAN: LAUNCH_PAGES}))


SIGNIN_COOKIE_PATH = "/api/launch/signin"  # sent only to the one-time sign-in's callback and its confirmation
SIGNIN_COOKIE_MAX_AGE = 600
CONFIRM_ACTIONS = {"link": False, "decline": True}  # the button pressed → decline?


class ConfirmWithTheButton(ConnectorError):
    """A GET of the confirmation URL (a link, an image, a prefetch): it never links anything."""

    status = 405
    code = "confirm_by_post"
    page = ErrorPage(
        N_("Please use the button on the confirmation page"),
        N_(
            "Nothing was linked. Your Microsoft 365 account is linked only when you press "
            '"Link my account" on the page that shows who is being linked.'
        ),
        help=(N_("Start the visit again from Epic if you no longer have that page open."),),
    )

    def __init__(self) -> None:
        super().__init__("The confirmation was opened as a link. Nothing was linked.")


def signin_cookie_name() -> str:
    parts = urlsplit(get_settings().public_base_url)
    plain_local = parts.scheme == "http" and (parts.hostname or "") in LOCAL_HOSTS
    return "launch_signin" if plain_local else "__Secure-launch_signin"


# --- routes -----------------------------------------------------------------------------------


def _raw_query(req: func.HttpRequest) -> str:
    url: str = req.url  # azure.functions.HttpRequest.url is unannotated; the abstract request says str
    return urlsplit(url).query


def _form_body(req: func.HttpRequest) -> str | None:
    if req.method != "POST":
        return None
    content_type = (req.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise BadRequest(N_("The launch was sent in an unexpected format."), code="invalid_launch")
    try:
        return (req.get_body() or b"").decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(N_("The launch request could not be read."), code="invalid_launch") from None


def _begin(req: func.HttpRequest, kind: LaunchKind) -> func.HttpResponse:
    params = parse_launch(_raw_query(req), _form_body(req))
    request = services().launch.begin(kind, req.route_params.get("configurationId", ""), params)
    if request.method == "POST":
        return render("launch/authorize_post.html", {"action": request.url, "fields": request.fields})
    return redirect(request.url)


@bp.route(route="launch/{configurationId}/provider", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@launch_page
def launch_provider(req: func.HttpRequest) -> func.HttpResponse:
    return _begin(req, LaunchKind.PROVIDER)


@bp.route(route="launch/{configurationId}/patient", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@patient_launch_page
def launch_patient(req: func.HttpRequest) -> func.HttpResponse:
    return _begin(req, LaunchKind.PATIENT)


def _respond(outcome: LaunchOutcome | SignInFirst, events: func.Out[str] | None = None) -> func.HttpResponse:
    with_event = ShowProviderPage | JoinMeeting | WaitForClinician | ShowGroupJoinPage
    event = outcome.event if isinstance(outcome, with_event) else None
    if event is not None and events is not None:
        events.set(event.to_json())  # the launch's connected event, for writeback
    if isinstance(outcome, ExplainSignIn):
        binding = sign_in_binding_cookie(
            signin_cookie_name(), outcome.browser_binding, path=SIGNIN_COOKIE_PATH, max_age=SIGNIN_COOKIE_MAX_AGE
        )
        return render(
            "launch/signin_intro.html",
            {
                "title": N_("Link your EHR account to Microsoft 365 once"),
                "state": outcome.state,
                "csrf": outcome.csrf,
                "minutes": int(INTRO_TTL.total_seconds() // 60),
            },
            headers={"Set-Cookie": binding},
        )
    if isinstance(outcome, SignInFirst):
        binding = sign_in_binding_cookie(
            signin_cookie_name(), outcome.browser_binding, path=SIGNIN_COOKIE_PATH, max_age=SIGNIN_COOKIE_MAX_AGE
        )
        return redirect(outcome.url, headers={"Set-Cookie": binding})
    if isinstance(outcome, ShowProviderPage):
        return redirect(outcome.url)
    if isinstance(outcome, JoinMeeting):
        return redirect(outcome.join_web_url)
    return redirect(outcome.url)


def _group_join_page(join_web_url: str, visit_number: str) -> func.HttpResponse:
    """A group visit's patient learns the number to type in their Teams name before Teams opens."""
    return render(
        "launch/group_join.html",
        {"title": N_("Your group video visit"), "join_web_url": join_web_url, "visit_number": visit_number},
    )


@bp.route(route="launch/callback", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="events", queue_name=QUEUE, connection=QUEUE_CONNECTION)
@callback_page
def launch_callback(req: func.HttpRequest, events: func.Out[str]) -> func.HttpResponse:
    outcome = services().launch.complete(parse_authorization_response(_raw_query(req)))
    return _respond(outcome, events)


class ContinueWithTheButton(ConnectorError):
    """A GET of the sign-in start (a link, an image, a prefetch): it never starts a sign-in."""

    status = 405
    code = "signin_by_post"
    page = ErrorPage(
        N_("Please use the Continue button"),
        N_("The Microsoft 365 sign-in starts only from the page that explains it, with its Continue button."),
        help=(N_("Start the visit again from Epic if you no longer have that page open."),),
    )

    def __init__(self) -> None:
        super().__init__(N_("The sign-in start was opened as a link. Nothing was started."))


@bp.route(route="launch/signin/start", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@launch_page
def launch_signin_start(req: func.HttpRequest) -> func.HttpResponse:
    """The clinician pressed "Continue" on the page explaining the one-time sign-in: a POST with the page's token,
    from the browser the page was shown in. Anything else starts nothing (and uses that page up)."""
    if req.method != "POST":
        response = error_response(ContinueWithTheButton(), correlation_id(req), html=True, pages=LAUNCH_PAGES)
        response.headers["Allow"] = "POST"
        return response
    try:
        outcome = services().launch.start_sign_in(
            read_form(req), browser_binding=read_cookie(req, signin_cookie_name())
        )
    except ConnectorError as exc:
        return _with_cleared_cookie(error_response(exc, correlation_id(req), html=True, pages=LAUNCH_PAGES))
    return _respond(outcome)


@bp.route(route="launch/signin/callback", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@launch_page
def launch_signin_callback(req: func.HttpRequest) -> func.HttpResponse:
    """Microsoft returns: show who is being linked; the mapping is stored only by ``launch_signin_confirm``."""
    fields = dict(req.form) if req.method == "POST" else dict(req.params)
    cookie = signin_cookie_name()
    try:
        link = services().launch.finish_sign_in(
            {k: str(v) for k, v in fields.items()}, browser_binding=read_cookie(req, cookie)
        )
    except ConnectorError as exc:  # the usual error page, with the binding cookie cleared
        return _with_cleared_cookie(error_response(exc, correlation_id(req), html=True, pages=LAUNCH_PAGES))
    return _confirmation_page(link, cookie)


def _confirmation_page(link: ConfirmLink, cookie: str) -> func.HttpResponse:
    # The binding is rotated: the sign-in's value is spent, this one is good for this page's form only.
    # SameSite=Strict: the confirmation is posted by our own page, never by another site.
    binding = cookie_header(
        cookie,
        link.browser_binding,
        secure=True,  # Chromium treats http://localhost and 127.0.0.1 as secure contexts (see web.py)
        same_site="Strict",
        path=SIGNIN_COOKIE_PATH,
        max_age=int(CONFIRM_TTL.total_seconds()),
    )
    return render(
        "launch/confirm.html",
        {
            "title": N_("Link your Microsoft 365 account"),
            "state": link.state,
            "csrf": link.csrf,
            "ehr_user_name": link.ehr_user_name,
            "ehr_user_type": link.ehr_user_type,
            "account_upn": link.account_upn,
            "account_name": link.account_name,
            "names_differ": link.names_differ,
            "minutes": int(CONFIRM_TTL.total_seconds() // 60),
        },
        headers={"Set-Cookie": binding},
    )


@bp.route(route="launch/signin/confirm", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.queue_output(arg_name="events", queue_name=QUEUE, connection=QUEUE_CONNECTION)
@launch_page
def launch_signin_confirm(req: func.HttpRequest, events: func.Out[str]) -> func.HttpResponse:
    """The clinician's answer on the confirmation page: a POST from the browser that signed in, with the form token.

    A GET (a forwarded or embedded link) is refused without touching the confirmation; a POST from another
    browser or without the page's token is refused and uses the confirmation up. Neither stores anything.
    """
    if req.method != "POST":
        response = error_response(ConfirmWithTheButton(), correlation_id(req), html=True, pages=LAUNCH_PAGES)
        response.headers["Allow"] = "POST"
        return response
    try:
        form = read_form(req)
        decline = CONFIRM_ACTIONS.get(form.get("action", ""))
        if decline is None:
            raise Forbidden(N_("This confirmation could not be read. Nothing was linked."), code="confirm_action")
        outcome = services().launch.confirm_link(
            form, browser_binding=read_cookie(req, signin_cookie_name()), decline=decline
        )
    except ConnectorError as exc:
        return _with_cleared_cookie(error_response(exc, correlation_id(req), html=True, pages=LAUNCH_PAGES))
    if isinstance(outcome, LinkDeclined):
        return _with_cleared_cookie(render("launch/declined.html", {"title": N_("Nothing was linked")}))
    return _with_cleared_cookie(_respond(outcome, events))


def _with_cleared_cookie(response: func.HttpResponse) -> func.HttpResponse:
    cleared = sign_in_binding_cookie(signin_cookie_name(), "", path=SIGNIN_COOKIE_PATH, max_age=0)
    response.headers.add("Set-Cookie", cleared)
    return response


def _visit_grant(req: func.HttpRequest, service: LaunchService) -> tuple[str, VisitGrant]:
    """The request's signed visit token (``?t=``) and what it grants on the visit its route names."""
    token = req.params.get("t", "")
    return token, service.grant(req.route_params.get("visitKey", ""), token)


@bp.route(route="visits/{visitKey}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@visit_page_errors
def visit_page(req: func.HttpRequest) -> func.HttpResponse:
    service = services().launch
    token, grant = _visit_grant(req, service)
    if grant.role is Role.PATIENT:
        return _waiting_page(service, grant, token)
    view = service.provider_view(grant)  # its errors are a clinician's (``speaking_to`` in the service)
    panel = view.panel
    return render(
        "launch/provider.html",
        {
            "join_web_url": view.join_web_url,
            "panel": panel,
            "panel_etag": _panel_etag(panel, html=True),
            "presence_url": f"{view.presence_url}?t={_quote(token)}",
            "patient_join_link": service.patient_join_link(grant),
            "interpreter_link_url": f"{view.presence_url.rsplit('/', 1)[0]}/interpreter-link?t={_quote(token)}",
            "interpreter_form_token": service.interpreter_form_token(view.visit_key, token),
            "page_url": service.visit_url(view.visit_key, token),
            "poll_seconds": poll_after(panel, utcnow()) or 0,
        },
    )


@bp.route(route="visits/{visitKey}/interpreter-link", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@launch_page
def visit_interpreter_link(req: func.HttpRequest) -> func.HttpResponse:
    """The clinician's "Create an interpreter link" (a POST: a prefetch or a link never makes one)."""
    service = services().launch
    token, grant = _visit_grant(req, service)
    link = service.interpreter_link(grant, token=token, form_token=read_form(req).get("csrf", ""))
    return render("launch/interpreter_link.html", {"title": N_("Interpreter link"), "link": link})


@bp.route(route="visits/{visitKey}/interpreter", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@launch_page
def visit_interpreter(req: func.HttpRequest) -> func.HttpResponse:
    """An interpreter opens their guest link: used up now, it shows the way to the meeting's lobby."""
    lobby = services().launch.interpreter_lobby(req.route_params.get("visitKey", ""), req.params.get("t", ""))
    return render("launch/interpreter.html", {"title": N_("Join as the interpreter"), "join_web_url": lobby})


@bp.route(route="visits/{visitKey}/presence", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def visit_presence(req: func.HttpRequest) -> func.HttpResponse:
    service = services().launch
    token, grant = _visit_grant(req, service)
    if grant.role is Role.PATIENT:
        # The waiting page learns only whether its meeting exists and whether to give up, nothing about who is there.
        patient = service.patient_view(grant, token)
        body: dict[str, Any] = {"meeting": patient.join_web_url is not None, "overdue": patient.overdue}
        return json_response(body)
    return _panel_response(req, service.panel(grant))


def _panel_response(req: func.HttpRequest, panel: Panel) -> func.HttpResponse:
    """The panel as JSON or as the page's HTML fragment; 304 without a body when the caller has this version."""
    html = "text/html" in (req.headers.get("accept") or "")
    etag = _panel_etag(panel, html=html)
    headers = {"ETag": etag, "Vary": "Accept, Accept-Language"}
    delay = poll_after(panel, utcnow())
    if delay is not None:
        headers[POLL_AFTER_HEADER] = str(delay)
    if _matches(req.headers.get("if-none-match"), etag):
        return func.HttpResponse(status_code=304, headers={**SECURITY_HEADERS, **headers})
    if html:
        return render("launch/_panel.html", {"panel": panel}, headers=headers)
    return json_response(panel.to_json(), headers=headers)


def _panel_etag(panel: Panel, *, html: bool) -> str:
    """The HTML fragment is in the reader's language and zone, so its tag names them; the JSON is the same for all."""
    if not html:
        return f'"presence-{panel.version}"'
    language = i18n.current()
    return f'"panel-{language.code}-{language.time_zone or "UTC"}-{panel.version}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of entity tags (weak comparison) or ``*``."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return any(tag == "*" or tag.removeprefix("W/") == etag for tag in tags)


def _waiting_page(service: LaunchService, grant: VisitGrant, token: str) -> func.HttpResponse:
    patient = service.patient_view(grant, token)
    if patient.join_web_url and patient.visit_number:
        return _group_join_page(patient.join_web_url, patient.visit_number)
    if patient.join_web_url:
        return redirect(patient.join_web_url)
    start = patient.appointment_start
    return render(
        "launch/waiting.html",
        {
            "refresh_url": patient.refresh_url,
            "status_url": f"{patient.refresh_url.split('?', 1)[0]}/presence?t={_quote(token)}",
            "poll_seconds": WAITING_POLL_SECONDS,
            "recheck_seconds": patient.recheck_seconds,
            "overdue": patient.overdue,
            "organization": patient.organization,
            "appointment_start": start,
        },
    )


def _quote(value: str) -> str:
    return quote(value, safe="")
