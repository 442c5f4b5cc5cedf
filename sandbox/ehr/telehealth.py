"""Epic's telehealth writeback web service, ``SetExternalConnectionStatus`` (context linking, 2018).

Publicly described shape: ``GET`` (here also ``POST``, form or JSON body) with ``ConferenceID``,
``ExternalID``, ``ExternalIDType``, ``VendorName``, ``ConnectionStatus``; an ``Epic-Client-ID``
header. This stand-in authenticates with a Backend Services bearer token (the OAuth variant
newer Epic versions offer) whose scopes allow updating Encounters (``system/Encounter.write``,
``system/*.write``, ``system/Encounter.u`` …) and whose client has the web service enabled.
Status values are not public: any non-empty value is accepted unless ``EhrConfig.connection_statuses``
lists the allowed ones. Like Epic's guidance ("the conference id must be linked to the launching
user"), ``ExternalID`` must be linked to ``ConferenceID``: the visit's practitioner or patient, or
a user who launched that visit; anyone else is refused (400, ``Message``). ``ExternalIDType``'s
meaning is not public, so it is not interpreted. Every accepted call is recorded with a timestamp.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.ehr import scopes as scope_rules
from sandbox.ehr.bearer import BearerError, require_token
from sandbox.ehr.config import GRANT_CLIENT_CREDENTIALS
from sandbox.ehr.responses import epic_error
from sandbox.ehr.state import ConnectionStatusChange

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox

API_NAME = "SetExternalConnectionStatus"
PARAMETERS = ("ConferenceID", "ExternalID", "ExternalIDType", "VendorName", "ConnectionStatus")
REQUIRED = ("ConferenceID", "ExternalID", "ExternalIDType", "ConnectionStatus")


async def _parameters(request: Request) -> dict[str, str] | None:
    """Parameter values by canonical name, matched case-insensitively; ``None`` for an unreadable body."""
    raw: dict[str, str] = {k: v for k, v in request.query_params.items()}
    if request.method == "POST":
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                body = json.loads(await request.body() or b"{}")
            except ValueError:
                return None
            if not isinstance(body, dict):
                return None
            raw.update({k: str(v) for k, v in body.items() if isinstance(v, str | int)})
        elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            raw.update({k: v for k, v in form.items() if isinstance(v, str)})
    lowered = {k.lower(): v.strip() for k, v in raw.items()}
    return {name: lowered.get(name.lower(), "") for name in PARAMETERS}


async def set_external_connection_status(request: Request) -> Response:
    ehr: EhrSandbox = request.app.state.ehr
    try:
        token = require_token(ehr, request)
    except BearerError as exc:
        return epic_error(exc.status, exc.description, headers=exc.headers)
    client_header = request.headers.get("epic-client-id", "").strip()
    if not client_header:
        return epic_error(400, "The Epic-Client-ID header is required.")
    if client_header != token.client_id:
        return epic_error(403, "The Epic-Client-ID header does not match the access token's client.")
    client = ehr.state.client(token.client_id)
    if client is None or API_NAME not in client.epic_apis:
        return epic_error(403, f"{API_NAME} is not enabled for this client.")
    allowed = scope_rules.granting_contexts(token.scopes, "Encounter", "update")
    if token.grant_type != GRANT_CLIENT_CREDENTIALS or "system" not in allowed:
        return epic_error(
            403,
            "A backend (client_credentials) token with system/Encounter.write is required.",
            headers={"WWW-Authenticate": 'Bearer realm="Epic", error="insufficient_scope"'},
        )
    params = await _parameters(request)
    if params is None:
        return epic_error(400, "The request body could not be read.")
    missing = [name for name in REQUIRED if not params[name]]
    if missing:
        return epic_error(400, f"Missing required parameter(s): {', '.join(missing)}.")
    if params["ConferenceID"] not in ehr.clinic.conference_ids():
        return epic_error(400, "Invalid ConferenceID: no such conference.")
    if params["ExternalID"] not in ehr.linked_participants(params["ConferenceID"]):
        return epic_error(400, "Invalid ExternalID: the participant is not linked to this ConferenceID.")
    statuses = ehr.config.connection_statuses
    if statuses is not None and params["ConnectionStatus"] not in statuses:
        return epic_error(400, "Invalid ConnectionStatus.")
    ehr.state.add_status_change(
        ConnectionStatusChange(
            conference_id=params["ConferenceID"],
            external_id=params["ExternalID"],
            external_id_type=params["ExternalIDType"],
            vendor_name=params["VendorName"],
            connection_status=params["ConnectionStatus"],
            client_id=token.client_id,
            method=request.method,
            recorded_at=time.time(),
        )
    )
    return JSONResponse({"Success": True})
