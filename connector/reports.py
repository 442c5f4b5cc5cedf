"""Usage report pages of the configuration portal (rules in ``shared/reports/service.py``).

    GET  /portal/reports                                   the configurations whose report the user may read
    GET  /portal/configurations/{id}/report                totals, charts (SVG), appointments of a day
    GET  /portal/configurations/{id}/report.csv            one row per visit (UTF-8, ISO 8601 UTC)
    GET  /portal/configurations/{id}/report.json           the same rows as JSON (Power BI)
    POST /portal/configurations/{id}/report/settings       analytics on/off, retention, CSN (admins)

Same portal session and CSRF rules as ``connector/portal.py``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

import azure.functions as func

from connector.portal import download, portal_url, portal_words, signed_in, signed_in_form
from connector.services import services
from connector.web import page, redirect, render
from shared.configurations.model import Configuration
from shared.kernel.clock import utcnow
from shared.kernel.errors import BadRequest
from shared.kernel.i18n import N_
from shared.portal.service import can_edit
from shared.portal.sessions import PortalSession
from shared.reports import charts
from shared.reports.days import ReportVisit
from shared.reports.facts import Status
from shared.reports.service import PRESETS, Report, ReportService, appointment_id, to_csv, to_json
from shared.reports.totals import quantile

bp = func.Blueprint()
ANON = func.AuthLevel.ANONYMOUS
QUERY_KEYS = ("days", "from", "to", "department")


def _chrome(session: PortalSession) -> dict[str, Any]:
    return {"session": session, "user": session.user, "csrf": session.csrf_token}


def _params(req: func.HttpRequest) -> dict[str, str]:
    return {k: req.params[k] for k in QUERY_KEYS if req.params.get(k)}


@bp.route(route="portal/reports", methods=["GET"], auth_level=ANON)
@page
def report_index(req: func.HttpRequest) -> func.HttpResponse:
    session = signed_in(req)
    chosen = req.params.get("configuration")
    if chosen:  # the report page's configuration switch
        config = services().reports.configuration(session.user, chosen)
        return redirect(portal_url(f"/configurations/{config.id}/report"), status=303)
    configurations = services().reports.readable(session.user)
    return render(
        "portal/reports.html",
        {**_chrome(session), "title": N_("Usage reports"), "words": portal_words(), "configurations": configurations},
    )


@bp.route(route="portal/configurations/{id}/report", methods=["GET"], auth_level=ANON)
@page
def report_page(req: func.HttpRequest) -> func.HttpResponse:
    session, svc, config = _readable(req)
    params = _params(req)
    report = svc.report(config, params)
    busy = [d for d, t in report.per_day if t.visits]
    day = _day(req.params.get("day"), default=busy[-1] if busy else report.range.last)
    if not report.range.first <= day <= report.range.last:
        day = report.range.last
    visits, after = svc.appointments(config, day, department=report.department, after=req.params.get("after", ""))
    context = report_context(
        session,
        report,
        configurations=svc.readable(session.user),
        params=params,
        day=day,
        rows=[_row(v, show_csn=report.preferences.show_csn) for v in visits],
        after=after,
        notice=N_("Report settings saved.") if req.params.get("notice") == "saved" else None,
    )
    return render("portal/report.html", {**context, "words": portal_words()}, headers={"Cache-Control": "no-store"})


def report_context(
    session: PortalSession,
    report: Report,
    *,
    configurations: list[Configuration],
    params: dict[str, str],
    day: date,
    rows: list[dict[str, Any]],
    after: str | None,
    notice: str | None,
) -> dict[str, Any]:
    """What ``portal/report.html`` shows: the report's figures and charts, and one day's appointment ``rows``
    (besides the portal's ``words``, which the route adds)."""
    totals = report.totals
    wait_rows = charts.wait_bands(totals)
    hour_rows = charts.busiest_hours(totals)
    return {
        **_chrome(session),
        "title": N_("Usage report"),
        "config": report.config,
        "configurations": configurations,
        "report": report,
        "presets": PRESETS,
        "params": params,
        "query": urlencode(params),
        "statuses": [s.value for s in charts.STATUS_ORDER],
        "figures": {
            "visits": totals.visits,
            "completed": totals.count(Status.COMPLETED),
            "no_show": totals.count(Status.NO_SHOW),
            "abandoned": totals.count(Status.ABANDONED),
            "in_progress": totals.count(Status.IN_PROGRESS),
            "median_wait": _seconds(quantile(totals.waits, 0.5)),
            "p90_wait": _seconds(quantile(totals.waits, 0.9)),
            "median_duration": _seconds(quantile(totals.durations, 0.5)),
        },
        "per_day_chart": charts.visits_per_day(report.per_day),
        "wait_rows": wait_rows,
        "wait_chart": charts.histogram(wait_rows, "wait"),
        "hour_rows": hour_rows,
        "hour_chart": charts.histogram(hour_rows, "hour"),
        "chart": {"width": charts.WIDTH, "height": charts.HEIGHT},
        "day": day,
        "visits": rows,
        "after": after,
        "can_edit": can_edit(session.user, report.config),
        "notice": notice,
    }


def _seconds(delta: timedelta | None) -> int | None:
    return None if delta is None else round(delta.total_seconds())


def _row(visit: ReportVisit, *, show_csn: bool) -> dict[str, Any]:
    """A table row: values only; the template words them (times UTC, durations in seconds)."""
    s = visit.summary
    return {
        "id": appointment_id(visit, show_csn=show_csn),
        "status": s.status.value,
        "department": s.department,
        "organizer": s.organizer,
        "start": s.start or s.first_seen,
        "duration": _seconds(s.duration),
        "wait": _seconds(s.median_wait),
        "attendants": {role.value: n for role, n in s.attendants.items() if n},
    }


def _day(value: str | None, *, default: date) -> date:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(N_("Dates must look like 2026-12-31."), code="report_range") from None


def _readable(req: func.HttpRequest) -> tuple[PortalSession, ReportService, Configuration]:
    """The signed-in user, the report rules, and the route's configuration if its report is theirs to read."""
    session = signed_in(req)
    svc = services().reports
    return session, svc, svc.configuration(session.user, req.route_params.get("id", ""))


@bp.route(route="portal/configurations/{id}/report.csv", methods=["GET"], auth_level=ANON)
@page
def report_csv(req: func.HttpRequest) -> func.HttpResponse:
    _, svc, config = _readable(req)
    body = to_csv(svc.export_rows(config, _params(req)))
    return download(body, "text/csv", f"visits-{config.id}-{utcnow():%Y%m%d}.csv")


@bp.route(route="portal/configurations/{id}/report.json", methods=["GET"], auth_level=ANON)
@page
def report_json(req: func.HttpRequest) -> func.HttpResponse:
    _, svc, config = _readable(req)
    body = to_json(config, svc.export_rows(config, _params(req)), now=utcnow())
    return download(body, "application/json", f"visits-{config.id}-{utcnow():%Y%m%d}.json")


@bp.route(route="portal/configurations/{id}/report/settings", methods=["POST"], auth_level=ANON)
@page
def report_settings(req: func.HttpRequest) -> func.HttpResponse:
    session, form = signed_in_form(req)
    config_id = req.route_params.get("id", "")
    services().reports.save_preferences(session.user, config_id, form)
    return redirect(portal_url(f"/configurations/{config_id}/report", notice="saved"))
