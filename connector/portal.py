"""Configuration portal: Microsoft 365 sign-in, configuration submission, EHR validation, approval, records.

Every route is anonymous at the Functions level and guarded here by the portal session (a
server-side ``Sessions`` row named by an HttpOnly cookie); every state-changing POST carries
the session's CSRF token. The rules themselves live in ``shared/portal/service.py``.

    GET  /portal                                   dashboard, or the sign-in page
    GET  /portal/signin                            → Entra authorize (auth-code + PKCE, form_post)
    POST /portal/signin/callback                   Entra's form_post → session cookie
    POST /portal/signout
    GET  /portal/configurations/new                form for one or many configurations
    POST /portal/configurations                    create (admin)
    GET  /portal/configurations/{id}               details, actions, edit form (admin)
    POST /portal/configurations/{id}               edit (admin, etag): a pending one changes; an approved
                                                   one stays in use, the edit awaits approval beside it
    POST /portal/configurations/{id}/edit/discard  reject (approver) or withdraw (admin) the pending edit
    GET,POST /portal/configurations/{id}/delete    confirm, delete (admin)
    POST /portal/configurations/{id}/ehr-signin    → EHR authorize (standalone SMART launch; approver)
    GET  /portal/ehr/callback                      EHR redirect: code → token + id_token → recorded
    POST /portal/configurations/{id}/approve       approve (approver, after their EHR sign-in)
    GET  /portal/configurations/{id}/records[.txt] integration records (admin, approver; approved only)
    GET  /portal/configurations/{id}/links         clinician links: EHR user → Microsoft 365 user (owner's admins)
    POST /portal/configurations/{id}/links/{key}/delete   remove one link (owner's admins)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func

from connector.services import services
from connector.web import (
    cookie_header,
    correlation_id,
    error_page,
    error_response,
    page,
    read_cookie,
    read_form,
    redirect,
    render,
    sign_in_binding_cookie,
)
from shared.configurations.model import Configuration, Environment, Vendor, WritebackMode
from shared.kernel.errors import BadRequest, Conflict, Forbidden, SignInRequired
from shared.kernel.i18n import N_
from shared.kernel.identifiers import random_token
from shared.kernel.settings import LOCAL_HOSTS, Geography, Settings, get_settings
from shared.launch.service import MAPPING_MEMORY_SECONDS
from shared.portal.service import (
    FIELDS,
    EhrSignInFailed,
    FormErrors,
    can_approve,
    can_edit,
    describe,
    require_admin,
)
from shared.portal.sessions import SESSION_LIFETIME, PortalSession

bp = func.Blueprint()
logger = logging.getLogger(__name__)
ANON = func.AuthLevel.ANONYMOUS
COOKIE_PATH = "/api/portal"
SIGNIN_COOKIE_PATH = "/api/portal/signin"  # sent only to the sign-in start and its callback
SIGNIN_COOKIE_MAX_AGE = 600
REPLACES = "replacesSession"  # carried with the sign-in state: the binding of the session a successful sign-in ends
MAX_ROWS = 10
NOTICES = {
    "created": N_("Saved. Each new configuration is pending approval by its approver."),
    "saved": N_("Saved. The configuration is pending approval."),
    "edit-saved": N_("Saved. The edit awaits approval; until then launches keep using the approved version."),
    "edit-unchanged": N_("Saved. Nothing differs from the approved version any more, so nothing awaits approval."),
    "edit-discarded": N_("The edit was discarded. The approved version stays in use, unchanged."),
    "deleted": N_("The configuration was deleted; launches for its FHIR URL stopped."),
    "ehr-signin": N_("EHR sign-in succeeded: the FHIR URL is proven. You can approve it now."),
    "approved": N_("Approved. The integration records are ready."),
    "shared": N_("Shared. Clinicians of that tenant can now launch visits with this configuration."),
    "unshared": N_("No longer shared. Launches by that tenant's clinicians are refused from now on."),
    "signed-out": N_("You are signed out."),
    "link-removed": N_("Link removed. That clinician confirms their Microsoft 365 account again at their next launch."),
}


# Every geography's words, also one no longer offered here (an older configuration may still name it).
GEOGRAPHY_NAMES = {
    Geography.AMERICAS.value: N_("Americas"),
    Geography.EMEA.value: N_("Europe, Middle East, Africa"),
    Geography.APAC.value: N_("Asia Pacific"),
}


def cookie_name(settings: Settings) -> str:
    return "portal_session" if _plain_local(settings) else "__Secure-portal_session"


def _plain_local(settings: Settings) -> bool:
    parts = urlsplit(settings.public_base_url)
    return parts.scheme == "http" and (parts.hostname or "") in LOCAL_HOSTS


def current_session(req: func.HttpRequest) -> PortalSession | None:
    return services().sessions.get(read_cookie(req, cookie_name(get_settings())))


def portal_url(path: str = "", **query: str) -> str:
    suffix = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return f"/api/portal{path}" + (f"?{suffix}" if suffix else "")


def signed_in(req: func.HttpRequest, *, admin: bool = False) -> PortalSession:
    """The request's portal session (an administrator's, if ``admin``); without one, a redirect to sign in."""
    session = current_session(req)
    if session is None:
        raise SignInRequired(portal_url(notice="signin-required"))
    if admin:
        require_admin(session.user)
    return session


def _csrf_form(req: func.HttpRequest, session: PortalSession) -> dict[str, str]:
    form = read_form(req)
    if not session.csrf_matches(form.get("csrf")):
        raise Forbidden(
            N_("This form has expired or did not come from this site. Reload the page and try again."), code="csrf"
        )
    return form


def signed_in_form(req: func.HttpRequest, *, admin: bool = False) -> tuple[PortalSession, dict[str, str]]:
    """A state-changing POST: the signed-in user's session (see ``signed_in``) and their CSRF-checked form."""
    session = signed_in(req, admin=admin)
    return session, _csrf_form(req, session)


def _chrome(session: PortalSession | None) -> dict[str, Any]:
    """What the portal layout shows around every page: who is signed in, and the sign-out form's CSRF token."""
    return {
        "session": session,
        "user": session.user if session else None,
        "csrf": session.csrf_token if session else "",
    }


def _page(template: str, session: PortalSession | None, *, status: int = 200, **context: Any) -> func.HttpResponse:
    return render(template, {**_chrome(session), "words": portal_words(), **context}, status=status)


def _choices() -> dict[str, Any]:
    settings = get_settings()
    return {
        "environments": [(Environment.TEST.value, N_("Test")), (Environment.PRODUCTION.value, N_("Production"))],
        "geographies": [(g.value, GEOGRAPHY_NAMES[g.value]) for g in settings.geographies],
        "vendors": [(v.value, v.label) for v in Vendor],
        "writeback_modes": [
            (WritebackMode.EPIC.value, "Epic (SetExternalConnectionStatus)"),
            (WritebackMode.FHIR_AUDIT_EVENT.value, "FHIR AuditEvent"),
            (WritebackMode.NONE.value, N_("None")),
        ],
    }


def portal_words() -> dict[str, dict[str, str]]:
    """The words the portal shows for each coded value (environments, geographies, vendors, …)."""
    return coded_words(_choices())


def coded_words(choices: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Each coded field's value → the words the portal shows for it (the same words as the form's ``choices``)."""
    return {
        "environment": dict(choices["environments"]),
        "geography": dict(GEOGRAPHY_NAMES),  # every one, also a geography no longer offered here
        "vendor": dict(choices["vendors"]),
        "writeback_mode": dict(choices["writeback_modes"]),
    }


# --- sign-in ------------------------------------------------------------------------------


@bp.route(route="portal", methods=["GET"], auth_level=ANON)
@page
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    session = current_session(req)
    notice = req.params.get("notice", "")
    if session is None:
        return _page(
            "portal/signin.html",
            None,
            title=N_("Sign in"),
            signin_required=notice == "signin-required",
            signed_out=notice == "signed-out",
        )
    svc = services().portal
    configurations = svc.visible_configurations(session.user)
    return _page(
        "portal/dashboard.html",
        session,
        title=N_("Configurations"),
        configurations=configurations,
        # What awaits approval: all of it for admins; for an approver, what they are the one to approve.
        awaiting=[
            c for c in configurations if c.awaits_approval and (session.user.is_admin or can_approve(session.user, c))
        ],
        shared_configurations=svc.shared_configurations(session.user),
        notice=NOTICES.get(notice),
    )


def signin_cookie_name(settings: Settings) -> str:
    return "portal_signin" if _plain_local(settings) else "__Secure-portal_signin"


def _signin_cookie(settings: Settings, value: str, *, max_age: int) -> str:
    return sign_in_binding_cookie(signin_cookie_name(settings), value, path=SIGNIN_COOKIE_PATH, max_age=max_age)


@bp.route(route="portal/signin", methods=["GET"], auth_level=ANON)
@page
def signin(req: func.HttpRequest) -> func.HttpResponse:
    """Start a Microsoft sign-in. A GET any site can trigger, so it changes nothing that exists.

    The session this browser already has stays valid: it ends only when the new sign-in succeeds (its
    handle travels server-side with the sign-in state, since Entra's cross-site form POST back will not
    carry the SameSite=Lax session cookie). A link elsewhere cannot sign anyone out.
    """
    settings = get_settings()
    flow = services().portal_sign_in()
    binding = random_token()
    old = current_session(req)
    location = flow.begin(
        f"{settings.public_base_url}/api/portal/signin/callback",
        browser_binding=binding,
        carry={REPLACES: old.binding} if old is not None else None,
    )
    return redirect(
        location, status=302, headers={"Set-Cookie": _signin_cookie(settings, binding, max_age=SIGNIN_COOKIE_MAX_AGE)}
    )


def _expired_session_cookie(settings: Settings) -> str:
    return cookie_header(cookie_name(settings), "", secure=not _plain_local(settings), path=COOKIE_PATH, max_age=0)


@bp.route(route="portal/signin/callback", methods=["POST"], auth_level=ANON)
@page
def signin_callback(req: func.HttpRequest) -> func.HttpResponse:
    settings = get_settings()
    cleared = _signin_cookie(settings, "", max_age=0)
    try:
        form = read_form(req)
        flow = services().portal_sign_in()
        identity, carry = flow.complete_with_carry(form, browser_binding=read_cookie(req, signin_cookie_name(settings)))
        # Only now, with the new sign-in proven, does the session this browser had before end.
        replaced = carry.get(REPLACES)
        if isinstance(replaced, str):
            services().sessions.delete_binding(replaced)
        old = read_cookie(req, cookie_name(settings))  # arrives only where Entra and the portal are same-site
        if old:
            services().sessions.delete(old)
        session = services().sessions.create(identity)
        services().portal.bind_approver(identity)
    except Exception as exc:  # noqa: BLE001 - shown as the usual error page, with the binding cookie cleared
        failed = error_response(exc, correlation_id(req), html=True)
        failed.headers.add("Set-Cookie", cleared)
        return failed
    cookie = cookie_header(
        cookie_name(settings),
        session.id,
        secure=not _plain_local(settings),
        path=COOKIE_PATH,
        max_age=int(SESSION_LIFETIME.total_seconds()),
    )
    response = redirect(portal_url(), headers={"Set-Cookie": cookie})
    response.headers.add("Set-Cookie", cleared)
    return response


@bp.route(route="portal/signout", methods=["POST"], auth_level=ANON)
@page
def signout(req: func.HttpRequest) -> func.HttpResponse:
    settings = get_settings()
    session = current_session(req)
    if session is not None:
        _csrf_form(req, session)
        services().sessions.delete(session.id)
    return redirect(portal_url(notice="signed-out"), headers={"Set-Cookie": _expired_session_cookie(settings)})


# --- configurations -----------------------------------------------------------------------


def _row_values(form: Mapping[str, str], index: int) -> dict[str, str]:
    return {name: form.get(f"c{index}-{name}", "") for name in FIELDS}


def _blank_row() -> dict[str, str]:
    return {**{name: "" for name in FIELDS}, "environment": "test", "vendor": "epic", "writeback_mode": "epic"}


@bp.route(route="portal/configurations/new", methods=["GET"], auth_level=ANON)
@page
def new_configurations(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req, admin=True)
    return _new_form(session, [_blank_row()])


@bp.route(route="portal/configurations", methods=["POST"], auth_level=ANON)
@page
def create_configurations(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req, admin=True)
    try:
        count = int(form.get("rows", "1"))
    except ValueError:
        raise BadRequest(N_("This form could not be read. Please reload the page and try again.")) from None
    if not 1 <= count <= MAX_ROWS:
        raise BadRequest(N_("Add between 1 and %(max_rows)s configurations at a time.", max_rows=MAX_ROWS))
    rows = [_row_values(form, i) for i in range(count)]
    action = form.get("action", "save")
    if action == "add-row" and count < MAX_ROWS:
        return _new_form(session, [*rows, _blank_row()])
    if action.startswith("remove-") and count > 1:
        return _new_form(session, [r for i, r in enumerate(rows) if f"remove-{i}" != action])
    svc = services().portal
    inputs, errors = svc.validate_rows(rows)
    if any(errors):
        return _new_form(session, [describe(r) for r in rows], errors, status=400)
    for index, data in enumerate(inputs):
        try:
            svc.create(session.user, data)
        except Conflict as exc:  # a concurrent submission took this URL: show what is left to save
            remaining = [describe(r) for r in rows[index:]]
            errors = [{"fhir_base_url": exc.message}] + [{} for _ in remaining[1:]]
            return _new_form(session, remaining, errors, status=409, saved_count=index)
    return redirect(portal_url(notice="created"))


def _new_form(
    session: PortalSession,
    rows: list[dict[str, str]],
    errors: list[dict[str, str]] | None = None,
    *,
    status: int = 200,
    saved_count: int = 0,
) -> func.HttpResponse:
    errors = errors or [{} for _ in rows]
    return _page(
        "portal/new.html",
        session,
        status=status,
        title=N_("Add configurations"),
        rows=list(zip(rows, errors, strict=True)),
        saved_count=saved_count,
        **_choices(),
    )


@bp.route(route="portal/configurations/{id}", methods=["GET"], auth_level=ANON)
@page
def configuration(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req)
    config = services().portal.get_viewable(session.user, req.route_params.get("id", ""))
    return _detail(session, config, notice=NOTICES.get(req.params.get("notice", "")))


def _detail(
    session: PortalSession,
    config: Configuration,
    *,
    status: int = 200,
    notice: str | None = None,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    conflict: str | None = None,
    etag: str | None = None,
    share_error: str | None = None,
    share_value: str = "",
) -> func.HttpResponse:
    return _page(
        "portal/configuration.html",
        session,
        status=status,
        title=config.organization,
        config=config,
        notice=notice,
        values=values or describe(config.proposed.input().__dict__),
        errors=errors or {},
        conflict=conflict,
        etag=etag or config.etag,
        can_edit=can_edit(session.user, config),
        can_approve=can_approve(session.user, config),
        shared_view=config.tenant_id != session.user.tenant_id,
        share_error=share_error,
        share_value=share_value,
        **_choices(),
    )


@bp.route(route="portal/configurations/{id}", methods=["POST"], auth_level=ANON)
@page
def update_configuration(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req, admin=True)
    svc = services().portal
    current = svc.get_visible(session.user, req.route_params.get("id", ""))
    values = {name: form.get(name, "") for name in FIELDS}
    etag = form.get("etag", "")
    if not etag:
        raise BadRequest(N_("This form could not be read. Please reload the page and try again."))
    try:
        data = svc.validated_input(values)
        saved = svc.update(session.user, current.id, data, etag)
    except FormErrors as exc:
        return _detail(session, current, status=400, values=values, errors=exc.errors, etag=etag)
    except Conflict as exc:
        latest = svc.get_visible(session.user, current.id)  # NotFound if it was deleted meanwhile
        if exc.code == "duplicate_fhir_url":
            return _detail(session, latest, status=409, values=values, errors={"fhir_base_url": exc.message}, etag=etag)
        # Keep what the user typed on screen, against the newest version's etag, with a clear message.
        return _detail(session, latest, status=409, values=values, conflict=exc.message, etag=latest.etag)
    notice = "saved" if not saved.is_approved else "edit-saved" if saved.edit is not None else "edit-unchanged"
    return redirect(portal_url(f"/configurations/{current.id}", notice=notice))


@bp.route(route="portal/configurations/{id}/edit/discard", methods=["POST"], auth_level=ANON)
@page
def discard_edit(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req)
    etag = form.get("etag", "")
    if not etag:  # only the edit the user looked at may be discarded
        raise BadRequest(N_("This form could not be read. Please reload the page and try again."))
    config = services().portal.discard_edit(session.user, req.route_params.get("id", ""), etag)
    return redirect(portal_url(f"/configurations/{config.id}", notice="edit-discarded"))


@bp.route(route="portal/configurations/{id}/delete", methods=["GET"], auth_level=ANON)
@page
def confirm_delete(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req, admin=True)
    config = services().portal.get_visible(session.user, req.route_params.get("id", ""))
    return _page("portal/delete.html", session, title=N_("Delete configuration"), config=config)


@bp.route(route="portal/configurations/{id}/delete", methods=["POST"], auth_level=ANON)
@page
def delete_configuration(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req, admin=True)
    if form.get("confirm") != "yes":
        raise BadRequest(N_("Tick the confirmation box to delete this configuration."))
    etag = form.get("etag", "")
    if not etag:  # like an edit: only the version the admin looked at may be deleted
        raise BadRequest(N_("This form could not be read. Please reload the page and try again."))
    deleted = services().portal.delete(session.user, req.route_params.get("id", ""), etag)
    services().report_preferences.mark_deleted(deleted.id, deleted.geography.value)  # its usage report goes too
    _launches_forget(deleted.id)
    return redirect(portal_url(notice="deleted"))


def _launches_forget(configuration_id: str) -> None:
    """Launches in this process see a changed or deleted configuration at once; other instances within
    ``CONFIGURATION_MEMORY_SECONDS`` (README "Performance and cost")."""
    services().launch.forget_configuration(configuration_id)


# --- sharing with other tenants -------------------------------------------------------------


@bp.route(route="portal/configurations/{id}/shares", methods=["POST"], auth_level=ANON)
@page
def share(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req, admin=True)
    svc = services().portal
    tenant_id = form.get("tenant_id", "").strip()
    try:
        config = svc.share(session.user, req.route_params.get("id", ""), tenant_id)
    except (BadRequest, Conflict) as exc:
        current = svc.get_visible(session.user, req.route_params.get("id", ""))
        return _detail(session, current, status=exc.status, share_error=exc.message, share_value=tenant_id[:64])
    _launches_forget(config.id)
    return redirect(portal_url(f"/configurations/{config.id}", notice="shared"))


@bp.route(route="portal/configurations/{id}/shares/{tenant}/delete", methods=["POST"], auth_level=ANON)
@page
def unshare(req: func.HttpRequest) -> func.HttpResponse:
    session, _ = signed_in_form(req, admin=True)
    config = services().portal.unshare(session.user, req.route_params.get("id", ""), req.route_params.get("tenant", ""))
    _launches_forget(config.id)
    return redirect(portal_url(f"/configurations/{config.id}", notice="unshared"))


# --- EHR validation and approval ------------------------------------------------------------


def _ehr_failure(session: PortalSession, exc: EhrSignInFailed, correlation: str) -> func.HttpResponse:
    """The error's own page, in the portal's layout, with the facts the EHR technical specialist checks.

    The correlation id the page shows is logged with the EHR's error code and description, so support can
    find what the EHR said; both are already free of control characters and bounded.
    """
    logger.warning(
        "Approver EHR sign-in for configuration %s failed: %s, EHR error %s, description %r (correlation %s)",
        exc.configuration_id,
        exc.page.title,
        exc.ehr_error or "-",
        exc.ehr_description or "",
        correlation,
    )
    return error_page(
        "portal/ehr_failure.html",
        exc,
        exc.page,
        correlation,
        context={
            **_chrome(session),
            "configuration_id": exc.configuration_id,
            "ehr_error": exc.ehr_error,
            "ehr_description": exc.ehr_description,
            "redirect_uri": services().portal.ehr_redirect_uri,
            "jwks_url": f"{get_settings().public_base_url}/api/.well-known/jwks.json",
        },
    )


@bp.route(route="portal/configurations/{id}/ehr-signin", methods=["POST"], auth_level=ANON)
@page
def start_ehr_signin(req: func.HttpRequest) -> func.HttpResponse:
    session, _ = signed_in_form(req)
    try:
        location = services().portal.start_ehr_signin(session, req.route_params.get("id", ""))
    except EhrSignInFailed as exc:
        return _ehr_failure(session, exc, correlation_id(req))
    return redirect(location, status=303)


@bp.route(route="portal/ehr/callback", methods=["GET"], auth_level=ANON)
@page
def ehr_callback(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req)
    query = {key: req.params.get(key, "") for key in ("state", "code", "error", "error_description")}
    try:
        config = services().portal.complete_ehr_signin(session, query)
    except EhrSignInFailed as exc:
        return _ehr_failure(session, exc, correlation_id(req))
    return redirect(portal_url(f"/configurations/{config.id}", notice="ehr-signin"))


@bp.route(route="portal/configurations/{id}/approve", methods=["POST"], auth_level=ANON)
@page
def approve(req: func.HttpRequest) -> func.HttpResponse:
    session, _ = signed_in_form(req)
    config = services().portal.approve(session.user, req.route_params.get("id", ""))
    _launches_forget(config.id)  # an approved edit replaces the version launches remember
    return redirect(portal_url(f"/configurations/{config.id}", notice="approved"))


# --- integration records --------------------------------------------------------------------


@bp.route(route="portal/configurations/{id}/records", methods=["GET"], auth_level=ANON)
@page
def records(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req)
    svc = services().portal
    config = svc.get_viewable(session.user, req.route_params.get("id", ""))
    if not config.is_approved:
        return _page("portal/records.html", session, title=N_("Integration records"), config=config, records=None)
    return _page(
        "portal/records.html",
        session,
        title=N_("Integration records"),
        config=config,
        records=svc.records(session.user, config.id),
    )


@bp.route(route="portal/configurations/{id}/records.txt", methods=["GET"], auth_level=ANON)
@page
def records_text(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req)
    records = services().portal.records(session.user, req.route_params.get("id", ""))
    filename = f"integration-records-{records.configuration.environment.value}-{records.configuration.id}.txt"
    return download(records.as_text(), "text/plain", filename)


def download(body: str | bytes, mimetype: str, filename: str) -> func.HttpResponse:
    """A file the browser saves (UTF-8), never caches, and never sniffs into something else."""
    return func.HttpResponse(
        body,
        mimetype=mimetype,
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        },
    )


# --- clinician links (EHR user → Microsoft 365 user) -------------------------------------------------


@bp.route(route="portal/configurations/{id}/links", methods=["GET"], auth_level=ANON)
@page
def links(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req, admin=True)
    config, mappings = services().portal.mappings(session.user, req.route_params.get("id", ""))
    return _page(
        "portal/links.html",
        session,
        title=N_("Clinician links"),
        config=config,
        mappings=mappings,
        memory_minutes=int(MAPPING_MEMORY_SECONDS // 60),
        notice=NOTICES.get(req.params.get("notice", "")),
    )


@bp.route(route="portal/configurations/{id}/links/{key}/delete", methods=["POST"], auth_level=ANON)
@page
def remove_link(req: func.HttpRequest) -> func.HttpResponse:
    session, _ = signed_in_form(req, admin=True)
    key = req.route_params.get("key", "")
    config = services().portal.remove_mapping(session.user, req.route_params.get("id", ""), key)
    # This instance forgets it now; the others within MAPPING_MEMORY_SECONDS (their per-process memory).
    services().launch.forget_mapping(config.geography, config.id, key)
    return redirect(portal_url(f"/configurations/{config.id}/links", notice="link-removed"))
