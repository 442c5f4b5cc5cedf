"""Our public keys, for EHRs verifying our client assertions (private_key_jwt, SMART Backend Services)."""

from __future__ import annotations

import azure.functions as func

from connector.web import api, json_response
from shared.jose.keys import signing_keys_from
from shared.kernel.settings import get_settings

bp = func.Blueprint()


@bp.route(route=".well-known/jwks.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def jwks(req: func.HttpRequest) -> func.HttpResponse:
    """Public JWKS (every configured key, so rotation never breaks a cached set). EHRs may cache it for an hour."""
    keys = signing_keys_from(get_settings().signing_keys.reveal())
    return json_response(keys.jwks(), headers={"Cache-Control": "public, max-age=3600"})
