"""A local Azure Functions host: runs ``function_app`` unchanged with the real host's semantics.

Core Tools cannot be installed offline, so this package stands in for ``func start``:
HTTP triggers (routes, methods, auth levels and keys), Storage queue triggers (polling,
retries, poison queue), queue output bindings and NCRONTAB timer triggers.

    python -m sandbox.host [--port 7071] [--settings local.settings.json] [--app function_app]

In tests: ``with LocalHost(app, env) as host: httpx.get(host.url + "/api/health")``.
"""

from sandbox.host.localhost import LocalHost

__all__ = ["LocalHost"]
