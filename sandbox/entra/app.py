"""The Starlette app of the sandbox Entra ID (Microsoft identity platform v2.0 endpoint shapes)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.routing import Route

from sandbox.entra import authorize, discovery, token_endpoint
from sandbox.entra.config import EntraConfig
from sandbox.entra.context import Entra
from sandbox.entra.signing import TokenIssuer

TEMPLATES = Path(__file__).parent / "templates"


def create_app(config: EntraConfig, issuer: TokenIssuer | None = None) -> Starlette:
    """One app for both listeners: the https API (issuer host) and the http browser page (browser host).

    ``issuer`` signs every token; pass the same one to other stand-ins that mint Microsoft tokens so
    their tokens verify against this app's keys endpoints. ``app.state.entra`` exposes config, issuer
    and in-memory state.
    """
    entra = Entra(config=config, issuer=issuer or TokenIssuer.generate())
    routes = [
        Route("/error", discovery.error_page, methods=["GET"]),
        Route("/common/discovery/instance", discovery.instance_discovery, methods=["GET"]),
        Route("/{tenant}/v2.0/.well-known/openid-configuration", discovery.openid_configuration, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", discovery.keys, methods=["GET"]),
        Route("/{tenant}/discovery/keys", discovery.keys, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/authorize", authorize.authorize, methods=["GET", "POST"]),
        Route("/{tenant}/login", authorize.sign_in, methods=["POST"]),
        Route("/{tenant}/oauth2/v2.0/logout", authorize.logout, methods=["GET", "POST"]),
        Route("/{tenant}/oauth2/v2.0/token", token_endpoint.token, methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.entra = entra
    app.state.templates = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), auto_reload=False
    )
    return app
