"""The Teams meeting page at the joinWebUrl: join signed in (a seeded user) or anonymously, the lobby,
admitting, leaving and ending. Plain HTML forms plus a little polling script.

Joining is a form POST guarded by a double-submit CSRF cookie; it redirects to the participant's own
page under an unguessable token. That page's actions are JSON POSTs (cross-site forms cannot send
``application/json`` without a CORS preflight, which this app never grants).
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.graph.meetings import Meeting, MeetingError, Participant

if TYPE_CHECKING:
    from sandbox.graph.sandbox import GraphSandbox

CSRF_COOKIE = "teams_sandbox_csrf"
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(default=True)
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _graph(request: Request) -> GraphSandbox:
    sandbox: GraphSandbox = request.app.state.graph
    return sandbox


def _html(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context), status_code=status, headers=_SECURITY_HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _html("error.html", status, message=message)


def _meeting(request: Request) -> Meeting | None:
    return _graph(request).meetings.by_thread(request.path_params["thread"])


async def join_page(request: Request) -> Response:
    meeting = _meeting(request)
    if meeting is None:
        return error_page(request, 404, "This meeting link is not valid.")
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    graph = _graph(request)
    response = _html(
        "join.html",
        meeting=meeting,
        users=graph.config.directory.users_of(meeting.tenant_id),
        csrf=csrf,
        error=None,
    )
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
    return response


async def join(request: Request) -> Response:
    meeting = _meeting(request)
    if meeting is None:
        return error_page(request, 404, "This meeting link is not valid.")
    form = await request.form()
    cookie = request.cookies.get(CSRF_COOKIE, "")
    submitted = str(form.get("csrf", ""))
    if not cookie or not hmac.compare_digest(cookie, submitted):
        return error_page(request, 403, "The form expired. Reload the meeting link and try again.")
    graph = _graph(request)
    try:
        if form.get("mode") == "user":
            user = graph.config.directory.user(str(form.get("user_id", "")))
            if user is None or user.tenant_id != meeting.tenant_id:
                raise MeetingError("Choose one of the organization's accounts.")
            participant = graph.meetings.join(meeting.id, user_id=user.object_id)
        else:
            participant = graph.meetings.join(meeting.id, display_name=str(form.get("display_name", "")))
    except MeetingError as error:
        response = _html(
            "join.html",
            400,
            meeting=meeting,
            users=graph.config.directory.users_of(meeting.tenant_id),
            csrf=cookie,
            error=str(error),
        )
        return response
    return RedirectResponse(f"/_teams/call/{participant.token}", status_code=303)


def _me(request: Request) -> tuple[Meeting, Participant] | None:
    return _graph(request).meetings.participant_by_token(request.path_params["token"])


def _is_organizer(meeting: Meeting, participant: Participant) -> bool:
    return participant.user is not None and participant.user.object_id == meeting.organizer.object_id


async def call_page(request: Request) -> Response:
    found = _me(request)
    if found is None:
        return error_page(request, 404, "You are no longer in this meeting.")
    meeting, participant = found
    return _html("call.html", meeting=meeting, me=participant, organizer=_is_organizer(meeting, participant))


async def call_state(request: Request) -> Response:
    found = _me(request)
    if found is None:
        return JSONResponse({"error": "You are no longer in this meeting."}, status_code=404)
    meeting, participant = found
    graph = _graph(request)
    with graph.meetings.lock:
        snapshot = graph.meetings.snapshot(meeting.id)
        call = meeting.call
        ended_at = call.ended_at if call is not None else participant.joined_at
        if ended_at is not None and (participant.left_at is None or participant.left_at >= ended_at):
            status = "ended"  # still there when the call ended (or removed by "End meeting")
        elif not participant.active:
            status = "left"
        else:
            status = "lobby" if participant.in_lobby else "inCall"
        organizer = _is_organizer(meeting, participant)
    if not organizer or status != "inCall":
        snapshot["lobby"] = []
    return JSONResponse(
        {
            "me": {"id": participant.id, "displayName": participant.display_name, "isOrganizer": organizer,
                   "status": status},
            "call": snapshot,
        },
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


async def _action(request: Request, action: str) -> Response:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "Send application/json."}, status_code=415)
    found = _me(request)
    if found is None:
        return JSONResponse({"error": "You are no longer in this meeting."}, status_code=404)
    meeting, participant = found
    meetings = _graph(request).meetings
    try:
        if action == "leave":
            meetings.leave(meeting.id, participant.id)
        elif action == "end":
            meetings.end(meeting.id, by=participant.id)
        else:
            body = await request.json()
            target = body.get("participantId") if isinstance(body, dict) else None
            if not isinstance(target, str):
                return JSONResponse({"error": "participantId is required."}, status_code=400)
            meetings.admit(meeting.id, target, by=participant.id)
    except MeetingError as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    except ValueError:
        return JSONResponse({"error": "Malformed JSON."}, status_code=400)
    return JSONResponse({"ok": True})


async def admit(request: Request) -> Response:
    return await _action(request, "admit")


async def leave(request: Request) -> Response:
    return await _action(request, "leave")


async def end(request: Request) -> Response:
    return await _action(request, "end")


def routes() -> list[Route]:
    return [
        Route("/l/meetup-join/{thread}/0", join_page, methods=["GET"]),
        Route("/l/meetup-join/{thread}/0", join, methods=["POST"]),
        Route("/_teams/call/{token}", call_page, methods=["GET"]),
        Route("/_teams/call/{token}/state", call_state, methods=["GET"]),
        Route("/_teams/call/{token}/admit", admit, methods=["POST"]),
        Route("/_teams/call/{token}/leave", leave, methods=["POST"]),
        Route("/_teams/call/{token}/end", end, methods=["POST"]),
    ]
