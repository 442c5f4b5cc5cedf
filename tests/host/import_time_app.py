"""An app that reads a setting while it is imported: the host must import it after applying settings."""

from __future__ import annotations

import os

import azure.functions as func

SEEN_AT_IMPORT = os.environ.get("IMPORT_TIME_SETTING", "<missing>")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="seen", methods=["GET"])
def seen(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(SEEN_AT_IMPORT)
