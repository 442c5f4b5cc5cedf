"""Sandbox Entra ID: Microsoft identity platform v2.0 endpoints (discovery, authorize, token, keys) on 127.0.0.1.

- ``create_app(config, issuer=None)`` → Starlette app (``sandbox.entra.app``)
- ``EntraConfig``, ``AppRegistration``, ``Resource``, ``connector_app()`` (``sandbox.entra.config``)
- ``TokenIssuer``, ``graph_validation_token()`` (``sandbox.entra.signing``)
- ``start_entra(tls, ...)`` → ``RunningEntra`` with https + http listeners (``sandbox.entra.run``)

msal construction that works here and against login.microsoftonline.com alike (only the host differs)::

    msal.ConfidentialClientApplication(client_id, client_credential=secret,
                                       authority=f"{ENTRA_AUTHORITY_HOST}/{tenant}", instance_discovery=False)

(``validate_authority=False`` or ``oidc_authority=f"{host}/{tenant}/v2.0"`` work too.) Without
``instance_discovery=False`` msal asks login.microsoftonline.com about any host it does not know.
"""

from sandbox.entra.app import create_app
from sandbox.entra.config import GRAPH, AppRegistration, EntraConfig, Resource, connector_app
from sandbox.entra.run import RunningEntra, start_entra
from sandbox.entra.signing import TokenIssuer, graph_validation_token

__all__ = [
    "GRAPH",
    "AppRegistration",
    "EntraConfig",
    "Resource",
    "RunningEntra",
    "TokenIssuer",
    "connector_app",
    "create_app",
    "graph_validation_token",
    "start_entra",
]
