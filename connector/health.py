"""Liveness and readiness probes."""

from __future__ import annotations

import azure.functions as func

from connector.services import services
from connector.web import api, json_response
from shared.kernel.errors import ConnectorError

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@api
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness: touches nothing, so it answers even when settings or storage are broken."""
    return json_response({"status": "ok"})


@bp.route(route="ready", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
@api
def ready(req: func.HttpRequest) -> func.HttpResponse:
    """Readiness: Table and Queue reachability of the app's account and every geography's."""
    storage = services().storage
    accounts = {"app": storage.app, **{geo.value: storage.for_geography(geo) for geo in storage.geographies}}
    checks: dict[str, str] = {}
    for name, account in accounts.items():
        try:
            account.check()
            checks[name] = "ok"
        except ConnectorError:
            checks[name] = "unreachable"
    failing = sorted(name for name, result in checks.items() if result != "ok")
    status = 503 if failing else 200
    body = {"status": "not-ready" if failing else "ready", "checks": checks, "failing": failing}
    return json_response(body, status=status)
