"""The running sandbox Entra ID: configuration, signer and state, plus tenant resolution shared by the routes."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from sandbox.entra.config import MULTI_TENANT_SEGMENTS, AppRegistration, EntraConfig
from sandbox.entra.errors import EntraError
from sandbox.entra.signing import TokenIssuer
from sandbox.entra.store import Store
from sandbox.seed import Tenant


@dataclass
class Entra:
    config: EntraConfig
    issuer: TokenIssuer
    store: Store = field(default_factory=Store)

    def now(self) -> float:
        return self.config.clock()

    def tenant(self, segment: str) -> Tenant | None:
        """A tenant path segment: the tenant id or one of its verified domains (case-insensitive)."""
        lowered = segment.lower()
        return next((t for t in self.config.directory.tenants if lowered in (t.id.lower(), t.domain.lower())), None)

    def check_tenant_segment(self, segment: str) -> Tenant | None:
        """``None`` for ``organizations``/``common``; raises AADSTS90002 for an unknown tenant."""
        if segment.lower() in MULTI_TENANT_SEGMENTS:
            return None
        tenant = self.tenant(segment)
        if tenant is None:
            raise unknown_tenant(segment)
        return tenant

    def app_for(self, client_id: str, segment: str, tenant: Tenant | None) -> AppRegistration:
        """The registration, usable at this authority (AADSTS700016 / AADSTS50194 otherwise)."""
        app = self.config.app(client_id)
        if app is None or (tenant is not None and tenant.id not in app.consented_tenants):
            where = tenant.name if tenant is not None else segment
            raise EntraError(
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{where}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        if tenant is None and not app.multi_tenant:
            raise EntraError(
                "invalid_request",
                50194,
                f"Application '{app.client_id}'({app.display_name}) is not configured as a multi-tenant "
                f"application. Usage of the /{segment} endpoint is not supported for such applications created "
                "after '10/15/2018'. Use a tenant-specific endpoint or configure the application to be multi-tenant.",
            )
        return app


def unknown_tenant(segment: str) -> EntraError:
    return EntraError(
        "invalid_tenant",
        90002,
        f"Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the "
        "correct cloud. Check with your subscription administrator, this may happen if there are no active "
        "subscriptions for the tenant.",
    )


def entra_of(request: Request) -> Entra:
    entra: Entra = request.app.state.entra
    return entra
