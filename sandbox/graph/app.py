"""The Starlette app: Graph's REST routes, the Teams meeting page, and sandbox-only helpers.

POST   /{v1.0|beta}/users/{userId}/onlineMeetings/createOrGet
GET    /{v1.0|beta}/users/{userId}/onlineMeetings/{meetingId}
PATCH  /{v1.0|beta}/users/{userId}/onlineMeetings/{meetingId}
POST   /beta/subscriptions                    GET /beta/subscriptions
GET    /beta/subscriptions/{id}               PATCH /beta/subscriptions/{id}     DELETE /beta/subscriptions/{id}
POST   /beta/subscriptions/{id}/reauthorize
GET    /l/meetup-join/{thread}/0              the meeting page (joinWebUrl); POST joins
GET    /_teams/call/{token}                   a participant's view; /state, /admit, /leave, /end
GET    /_sandbox/meetings/{meetingId}         call state (JSON)
GET    /_sandbox/deliveries                   every delivery attempt with timings (when enabled)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.graph import meeting_api, page
from sandbox.graph.handshake import validate_endpoint
from sandbox.graph.meetings import Meeting
from sandbox.graph.odata import GraphError, bad_request, error_response, not_found, request_ids
from sandbox.graph.subscriptions import (
    CREATE_FIELDS,
    UPDATE_FIELDS,
    Subscription,
    check_certificate,
    check_expiration,
    check_url,
    encoded_join_web_url,
    unknown_fields,
)
from sandbox.graph.tokens import Caller
from sandbox.seed import User

if TYPE_CHECKING:
    from sandbox.graph.sandbox import GraphSandbox

MEETING_ROLES = ("OnlineMeetings.ReadWrite.All",)
MEETING_READ_ROLES = ("OnlineMeetings.Read.All", "OnlineMeetings.ReadWrite.All")
MAX_BODY = 256 * 1024
VERSIONS = ("v1.0", "beta")


def _graph(request: Request) -> GraphSandbox:
    sandbox: GraphSandbox = request.app.state.graph
    return sandbox


def _json(status: int, body: dict[str, Any], request: Request) -> JSONResponse:
    request_id, client_request_id = request_ids(request)
    return JSONResponse(
        body, status_code=status, headers={"request-id": request_id, "client-request-id": client_request_id}
    )


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise GraphError(413, "RequestEntityTooLarge", "The request body is too large.")
    if not raw.strip():
        raise bad_request("Empty Payload. JSON content expected.")
    try:
        return json.loads(raw)
    except ValueError:
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid "
            "JSON format."
        ) from None


def _caller(request: Request, roles: tuple[str, ...]) -> Caller:
    caller = _graph(request).tokens.verify(request.headers.get("authorization"))
    caller.require_any_role(roles)
    return caller


def _organizer(request: Request, caller: Caller, action: str) -> User:
    """The path's user, seen from the caller's tenant, who must have granted the access policy."""
    user_id = request.path_params["user_id"]
    user = _graph(request).config.directory.user(user_id)
    if user is None or user.tenant_id != caller.tenant_id:
        raise not_found(f"User '{user_id[:64]}' was not found in the tenant.")
    if not user.teams_policy:
        raise GraphError(
            403,
            "Unauthorized",
            f"App {caller.app_id} is not authorized to {action} meeting on behalf of user {user_id}",
        )
    return user


def _own_meeting(request: Request, organizer: User) -> Meeting:
    meeting = _graph(request).meetings.get(request.path_params["meeting_id"])
    if meeting is None or meeting.organizer.object_id != organizer.object_id:
        raise not_found("The specified meeting was not found.")
    return meeting


def _version(request: Request) -> str:
    return request.url.path.split("/")[1]  # "v1.0" or "beta"


async def create_or_get(request: Request) -> Response:
    caller = _caller(request, MEETING_ROLES)
    organizer = _organizer(request, caller, "Create")
    params = meeting_api.parse_create_or_get(await _body(request), organizer)
    graph = _graph(request)
    meeting, created = graph.meetings.create_or_get(
        organizer,
        params["external_id"],
        lambda mid, thread, url: meeting_api.new_meeting(mid, thread, url, organizer, params),
    )
    with graph.meetings.lock:
        body = meeting_api.meeting_json(
            meeting, graph.config.root, _version(request), organizer.object_id, request.headers.get("prefer")
        )
    return _json(201 if created else 200, body, request)


async def get_meeting(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    organizer = _organizer(request, caller, "Get")
    meeting = _own_meeting(request, organizer)
    graph = _graph(request)
    with graph.meetings.lock:
        body = meeting_api.meeting_json(
            meeting, graph.config.root, _version(request), organizer.object_id, request.headers.get("prefer")
        )
    return _json(200, body, request)


async def patch_meeting(request: Request) -> Response:
    caller = _caller(request, MEETING_ROLES)
    organizer = _organizer(request, caller, "Update")
    meeting = _own_meeting(request, organizer)
    body = await _body(request)
    graph = _graph(request)
    prefer = request.headers.get("prefer")
    with graph.meetings.lock:
        meeting_api.apply_patch(meeting, body, prefer)
        result = meeting_api.meeting_json(meeting, graph.config.root, _version(request), organizer.object_id, prefer)
    return _json(200, result, request)


# -- subscriptions ------------------------------------------------------------------------------
def _subscribed_meeting(request: Request, caller: Caller, resource: Any) -> Meeting:
    if not isinstance(resource, str) or not resource:
        raise bad_request("resource is required.", "InvalidRequest")
    meeting = _graph(request).meetings.by_join_web_url(encoded_join_web_url(resource))
    if meeting is None or meeting.tenant_id != caller.tenant_id:
        raise not_found("The online meeting named by the resource was not found.")
    if not meeting.organizer.teams_policy:
        raise GraphError(403, "Forbidden", "No application access policy found for this app.")
    return meeting


async def create_subscription(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    body = await _body(request)
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    unknown = unknown_fields(body, CREATE_FIELDS)
    if unknown:
        raise bad_request(f"The property '{unknown[0][:100]}' does not exist on type 'microsoft.graph.subscription'.")
    graph = _graph(request)
    config = graph.config
    if body.get("changeType") != "updated":
        raise bad_request("ChangeType must be 'updated' for meetingCallEvents subscriptions.", "InvalidRequest")
    meeting = _subscribed_meeting(request, caller, body.get("resource"))
    notification_url = check_url(body.get("notificationUrl"), "notificationUrl", config.http_notification_hosts)
    lifecycle_url = None
    if body.get("lifecycleNotificationUrl") is not None:
        lifecycle_url = check_url(
            body["lifecycleNotificationUrl"], "lifecycleNotificationUrl", config.http_notification_hosts
        )
    expiration = check_expiration(body.get("expirationDateTime"))
    include = body.get("includeResourceData", False)
    if not isinstance(include, bool):
        raise bad_request("includeResourceData must be a boolean.", "InvalidRequest")
    raw_certificate, certificate_id, certificate = check_certificate(body, include)
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 255):
        raise bad_request("clientState must be a string of at most 255 characters.", "InvalidRequest")
    tls = body.get("latestSupportedTlsVersion") or "v1_2"
    if tls not in ("v1_0", "v1_1", "v1_2", "v1_3"):
        raise bad_request("Invalid latestSupportedTlsVersion.", "InvalidRequest")

    graph.subscriptions.reserve(caller.app_id, meeting.id)
    try:
        await validate_endpoint(notification_url, config.handshake_timeout)
        if lifecycle_url is not None:
            await validate_endpoint(lifecycle_url, config.handshake_timeout)
    except BaseException:
        graph.subscriptions.release(caller.app_id, meeting.id)
        raise
    subscription = Subscription(
        id=graph.subscriptions.new_id(),
        app_id=caller.app_id,
        tenant_id=caller.tenant_id,
        creator_id=caller.claims.get("oid"),
        meeting_id=meeting.id,
        resource=body["resource"],
        notification_url=notification_url,
        lifecycle_notification_url=lifecycle_url,
        include_resource_data=include,
        encryption_certificate=raw_certificate,
        encryption_certificate_id=certificate_id,
        certificate=certificate,
        client_state=client_state,
        expiration=expiration,
        tls_version=tls,
    )
    graph.subscriptions.add(subscription)
    return _json(201, subscription.to_json(config.root), request)


def _own_subscription(request: Request, caller: Caller) -> Subscription:
    found = _graph(request).subscriptions.get(request.path_params["subscription_id"], caller.app_id)
    if found is None:
        raise not_found(
            f"The object was not found. Subscription '{request.path_params['subscription_id'][:64]}' does not exist.",
            "ResourceNotFound",
        )
    return found


async def list_subscriptions(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    graph = _graph(request)
    mine = [  # an app-only caller sees its own subscriptions in the token's tenant
        s
        for s in graph.subscriptions.all()
        if s.app_id == caller.app_id and s.tenant_id == caller.tenant_id and not s.expired
    ]
    values = [{k: v for k, v in s.to_json(graph.config.root).items() if k != "@odata.context"} for s in mine]
    return _json(200, {"@odata.context": f"{graph.config.root}/beta/$metadata#subscriptions", "value": values}, request)


async def get_subscription(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    return _json(200, _own_subscription(request, caller).to_json(_graph(request).config.root), request)


async def update_subscription(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    subscription = _own_subscription(request, caller)
    body = await _body(request)
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    unknown = unknown_fields(body, UPDATE_FIELDS)
    if unknown:
        raise bad_request(f"The property '{unknown[0][:100]}' cannot be updated on a subscription.", "InvalidRequest")
    config = _graph(request).config
    expiration = check_expiration(body["expirationDateTime"]) if "expirationDateTime" in body else None
    notification_url = None
    if "notificationUrl" in body:
        notification_url = check_url(body["notificationUrl"], "notificationUrl", config.http_notification_hosts)
    certificate = None
    if "encryptionCertificate" in body or "encryptionCertificateId" in body:
        certificate = check_certificate(body, True)
    if notification_url is not None and notification_url != subscription.notification_url:
        await validate_endpoint(notification_url, config.handshake_timeout)
    if expiration is not None:
        subscription.expiration = expiration
    if notification_url is not None:
        subscription.notification_url = notification_url
    if certificate is not None:
        subscription.encryption_certificate, subscription.encryption_certificate_id, subscription.certificate = (
            certificate
        )
    return _json(200, subscription.to_json(config.root), request)


async def delete_subscription(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    subscription = _own_subscription(request, caller)
    _graph(request).subscriptions.remove(subscription.id)
    return Response(status_code=204)


async def reauthorize_subscription(request: Request) -> Response:
    caller = _caller(request, MEETING_READ_ROLES)
    _own_subscription(request, caller)
    return Response(status_code=204)


async def v1_subscriptions(request: Request) -> Response:
    _caller(request, MEETING_READ_ROLES)
    raise bad_request(
        "Subscriptions to communications/onlineMeetings(...)/meetingCallEvents are only available on the beta "
        "endpoint.",
        "InvalidRequest",
    )


async def unknown_segment(request: Request) -> Response:
    segment = request.path_params["rest"].strip("/").split("/")[-1] or _version(request)
    raise bad_request(f"Resource not found for the segment '{segment[:100]}'.")


# -- sandbox helpers ----------------------------------------------------------------------------
async def meeting_state(request: Request) -> Response:
    graph = _graph(request)
    meeting = graph.meetings.get(request.path_params["meeting_id"])
    if meeting is None:
        raise not_found("The specified meeting was not found.")
    return JSONResponse(graph.meetings.snapshot(meeting.id))


async def delivery_log(request: Request) -> Response:
    graph = _graph(request)
    if not graph.config.expose_delivery_log:
        raise not_found("The delivery log is not enabled (GraphConfig.expose_delivery_log).")
    return JSONResponse({"value": [d.to_json() for d in graph.deliveries()]})


async def _graph_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GraphError)
    if request.url.path.startswith(("/l/", "/_teams/")) and "text/html" in request.headers.get("accept", ""):
        return page.error_page(request, exc.status, exc.message)
    return error_response(request, exc)


def build_app(graph: GraphSandbox) -> Starlette:
    meetings = "/users/{user_id}/onlineMeetings"
    routes = [
        *(Route(f"/{v}{meetings}/createOrGet", create_or_get, methods=["POST"]) for v in VERSIONS),
        *(Route(f"/{v}{meetings}/{{meeting_id}}", get_meeting, methods=["GET"]) for v in VERSIONS),
        *(Route(f"/{v}{meetings}/{{meeting_id}}", patch_meeting, methods=["PATCH"]) for v in VERSIONS),
        Route("/beta/subscriptions", create_subscription, methods=["POST"]),
        Route("/beta/subscriptions", list_subscriptions, methods=["GET"]),
        Route("/beta/subscriptions/{subscription_id}", get_subscription, methods=["GET"]),
        Route("/beta/subscriptions/{subscription_id}", update_subscription, methods=["PATCH"]),
        Route("/beta/subscriptions/{subscription_id}", delete_subscription, methods=["DELETE"]),
        Route("/beta/subscriptions/{subscription_id}/reauthorize", reauthorize_subscription, methods=["POST"]),
        Route("/v1.0/subscriptions", v1_subscriptions, methods=["POST"]),
        *page.routes(),
        Route("/_sandbox/meetings/{meeting_id}", meeting_state, methods=["GET"]),
        Route("/_sandbox/deliveries", delivery_log, methods=["GET"]),
        *(
            Route(f"/{v}/{{rest:path}}", unknown_segment, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])
            for v in VERSIONS
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        graph.close()  # stop the delivery thread with the server

    app = Starlette(routes=routes, exception_handlers={GraphError: _graph_error}, lifespan=lifespan)
    app.state.graph = graph
    return app
