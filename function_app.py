"""The Functions app: create it and register the blueprints (``connector/services.py`` builds everything else).

Importing this module does no I/O and never raises, even with no settings present:
settings and clients are built lazily on first use.
"""

import azure.functions as func

from connector import (
    events,
    health,
    launch,
    maintenance,
    portal,
    reports,
    telemetry,  # noqa: F401 - telemetry registers its worker extension
    wellknown,
)

BLUEPRINTS = (health.bp, launch.bp, maintenance.bp, portal.bp, reports.bp, wellknown.bp, events.bp)


def build_app() -> func.FunctionApp:
    """A new app with every blueprint (a host indexes an app object once; tests may run several hosts)."""
    built = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for blueprint in BLUEPRINTS:
        built.register_functions(blueprint)
    return built


app = build_app()
