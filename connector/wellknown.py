"""Our public keys, for EHRs verifying our client assertions (private_key_jwt, SMART Backend Services)."""

from __future__ import annotations

import azure.functions as func

from connector.services import services
from connector.web import api, json_response

bp = func.Blueprint()


@bp.route(route=".well-known/jwks.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def jwks(req: func.HttpRequest) -> func.HttpResponse:
    """Public JWKS (every configured key, so rotation never breaks a cached set). EHRs may cache it for an hour."""
    keys = services().signing_keys
    return json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=3600"})
