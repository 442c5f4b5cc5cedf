"""Stand-ins for the places people press "Begin virtual visit": Hyperspace, MyChart, and the analyst's FDI build.

Server-rendered HTML (Jinja2, autoescaped). Forms carry a CSRF token. A launch button posts to
``/launch``, which issues a fresh single-use ``launch`` and answers 303 to the launch URL Epic
would open: record URL + expanded context tokens + ``iss`` + ``launch``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from sandbox.ehr.config import RegisteredClient
from sandbox.ehr.launch_urls import LaunchError

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox


def _ehr(request: Request) -> EhrSandbox:
    ehr: EhrSandbox = request.app.state.ehr
    return ehr


async def _form(request: Request) -> dict[str, str] | None:
    """The form fields, or ``None`` when the CSRF token is missing or wrong."""
    ehr = _ehr(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return fields if ehr.state.check_csrf(fields.get("csrf")) else None


def _csrf_failure(ehr: EhrSandbox) -> Response:
    return ehr.html_error(403, "Form expired", "The form was stale or not sent from this EHR. Reload and try again.")


def index(request: Request) -> Response:
    ehr = _ehr(request)
    return ehr.render("index.html", practitioners=ehr.clinic.practitioners, patients=ehr.clinic.patients)


def analyst(request: Request) -> Response:
    ehr = _ehr(request)
    with ehr.state.lock:
        records = sorted(ehr.state.records.values(), key=lambda r: (r.environment, r.kind, r.created_at))
        clients = list(ehr.state.clients.values())
    return ehr.render(
        "analyst.html", records=records, clients=clients, csrf=ehr.state.issue_csrf(),
        message=request.query_params.get("message", ""),
    )  # fmt: skip


async def add_record(request: Request) -> Response:
    ehr = _ehr(request)
    form = await _form(request)
    if form is None:
        return _csrf_failure(ehr)
    try:
        ehr.add_record(
            name=form.get("name", ""),
            kind=form.get("kind", ""),
            environment=form.get("environment", ""),
            launch_url=form.get("launch_url", ""),
            context_tokens=form.get("context_tokens", ""),
            client_id=form.get("client_id", ""),
        )
    except ValueError as exc:
        return ehr.html_error(400, "Record not saved", str(exc))
    return RedirectResponse("/analyst?message=Record+saved", status_code=303)


async def delete_record(request: Request) -> Response:
    ehr = _ehr(request)
    if await _form(request) is None:
        return _csrf_failure(ehr)
    if not ehr.state.delete_record(request.path_params["record_id"]):
        return ehr.html_error(404, "No such record", "The integration record does not exist.")
    return RedirectResponse("/analyst?message=Record+deleted", status_code=303)


async def add_client(request: Request) -> Response:
    ehr = _ehr(request)
    form = await _form(request)
    if form is None:
        return _csrf_failure(ehr)
    try:
        client = RegisteredClient.from_json(
            {
                "client_id": form.get("client_id", ""),
                "name": form.get("name", ""),
                "redirect_uris": form.get("redirect_uris", "").split(),
                "jwks_url": form.get("jwks_url", "").strip() or None,
                "client_secret": form.get("client_secret", "").strip() or None,
            }
        )
    except ValueError as exc:
        return ehr.html_error(400, "Client not saved", str(exc))
    ehr.state.register_client(client)
    return RedirectResponse("/analyst?message=Client+registered", status_code=303)


def hyperspace_index(request: Request) -> Response:
    ehr = _ehr(request)
    return ehr.render("hyperspace_index.html", practitioners=ehr.clinic.practitioners)


def hyperspace(request: Request) -> Response:
    ehr = _ehr(request)
    user = ehr.clinic.practitioner(request.path_params["user_id"])
    if user is None:
        return ehr.html_error(404, "Unknown provider", "No such Hyperspace user.")
    return ehr.render(
        "schedule.html", user=user, visits=ehr.clinic.visits_for_practitioner(user.id), clinic=ehr.clinic,
        records=ehr.state.records_of("provider"), csrf=ehr.state.issue_csrf(),
    )  # fmt: skip


def mychart_index(request: Request) -> Response:
    ehr = _ehr(request)
    return ehr.render("mychart_index.html", patients=ehr.clinic.patients)


def mychart(request: Request) -> Response:
    ehr = _ehr(request)
    user = ehr.clinic.patient(request.path_params["user_id"])
    if user is None:
        return ehr.html_error(404, "Unknown patient", "No such MyChart account.")
    return ehr.render(
        "mychart.html", user=user, visits=ehr.clinic.visits_for_patient(user.id), clinic=ehr.clinic,
        records=ehr.state.records_of("patient"), csrf=ehr.state.issue_csrf(),
    )  # fmt: skip


async def launch(request: Request) -> Response:
    ehr = _ehr(request)
    form = await _form(request)
    if form is None:
        return _csrf_failure(ehr)
    try:
        url = ehr.create_launch(form.get("record", ""), form.get("appointment", ""), form.get("user", ""))
    except LaunchError as exc:
        return ehr.html_error(400, "Cannot launch", str(exc))
    return RedirectResponse(url, status_code=303)


def routes() -> list[Route]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/analyst", analyst, methods=["GET"]),
        Route("/analyst/records", add_record, methods=["POST"]),
        Route("/analyst/records/{record_id}/delete", delete_record, methods=["POST"]),
        Route("/analyst/clients", add_client, methods=["POST"]),
        Route("/hyperspace", hyperspace_index, methods=["GET"]),
        Route("/hyperspace/{user_id}", hyperspace, methods=["GET"]),
        Route("/mychart", mychart_index, methods=["GET"]),
        Route("/mychart/{user_id}", mychart, methods=["GET"]),
        Route("/launch", launch, methods=["POST"]),
    ]
