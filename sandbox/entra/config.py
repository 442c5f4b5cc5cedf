"""What the sandbox Entra ID knows: hosts, directory, app registrations, resources and lifetimes."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sandbox.seed import CONNECTOR_CLIENT_ID, CONNECTOR_CLIENT_SECRET, CONTOSO, DIRECTORY, FABRIKAM, Directory

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_RESOURCE = "https://graph.microsoft.com"
# The first-party app that signs Graph change-notification validationTokens (Microsoft Graph docs).
GRAPH_CHANGE_NOTIFICATION_PUBLISHER = "0bf30f3b-4a52-48df-9a82-234910c4a086"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
MULTI_TENANT_SEGMENTS = frozenset({"organizations", "common"})

# The connector's callbacks under PUBLIC_BASE_URL; any port matches for these loopback hosts (see authorize.py).
DEFAULT_CONNECTOR_REDIRECT_URIS = tuple(
    f"http://{host}:7071/api/{path}/signin/callback"
    for host in ("localhost", "127.0.0.1")
    for path in ("portal", "launch")
)
# Sign-out landing pages registered as redirect URIs too (Entra checks post_logout_redirect_uri against them).
DEFAULT_CONNECTOR_LOGOUT_URIS = ("http://localhost:7071/api/portal", "http://127.0.0.1:7071/api/portal")
CONNECTOR_APPLICATION_PERMISSIONS = {GRAPH_RESOURCE: ("OnlineMeetings.ReadWrite.All", "User.Read.All")}
CONNECTOR_APP_ROLES = ("Connector.Admin", "Connector.Reports")


@dataclass(frozen=True)
class Resource:
    """A resource (API) tokens can be issued for; Graph issues v1.0 access tokens."""

    identifier: str  # application ID URI, e.g. https://graph.microsoft.com
    app_id: str
    name: str
    access_token_version: int = 1

    def matches(self, value: str) -> bool:
        return value.rstrip("/").lower() in (self.identifier.rstrip("/").lower(), self.app_id.lower())


GRAPH = Resource(GRAPH_RESOURCE, GRAPH_APP_ID, "Microsoft Graph", access_token_version=1)


@dataclass(frozen=True)
class AppRegistration:
    """An app registration plus its service principals (the tenants where it is consented).

    ``application_permissions`` maps a resource identifier to the app roles granted (admin consent) for
    client credentials; ``delegated_permissions`` the scopes ``<resource>/.default`` expands to;
    ``app_roles`` the roles this app defines, emitted in id_tokens for users assigned to them
    (``sandbox.seed.User.app_roles``). ``certificates`` are PEM certificates accepted for ``client_assertion``.
    """

    client_id: str
    display_name: str
    home_tenant_id: str
    secrets: tuple[str, ...] = ()
    certificates: tuple[str, ...] = ()
    redirect_uris: tuple[str, ...] = ()
    multi_tenant: bool = False
    tenants: tuple[str, ...] = ()
    application_permissions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    delegated_permissions: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {GRAPH_RESOURCE: ("User.Read",)}
    )
    app_roles: tuple[str, ...] = ()
    require_pkce_s256: bool = True

    @property
    def consented_tenants(self) -> frozenset[str]:
        return frozenset((self.home_tenant_id, *self.tenants))

    def service_principal_id(self, tenant_id: str) -> str:
        """Deterministic object id of this app's service principal in a tenant."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-entra:sp:{tenant_id}:{self.client_id}"))

    def with_redirect_uris(self, *uris: str) -> AppRegistration:
        return dataclasses.replace(self, redirect_uris=(*self.redirect_uris, *uris))


def connector_app(
    redirect_uris: Iterable[str] = DEFAULT_CONNECTOR_REDIRECT_URIS + DEFAULT_CONNECTOR_LOGOUT_URIS,
) -> AppRegistration:
    """The connector's own registration: multi-tenant, consented in both seeded tenants, PKCE S256 required."""
    return AppRegistration(
        client_id=CONNECTOR_CLIENT_ID,
        display_name="Teams EHR Connector (sandbox)",
        home_tenant_id=CONTOSO.id,
        secrets=(CONNECTOR_CLIENT_SECRET,),
        redirect_uris=tuple(redirect_uris),
        multi_tenant=True,
        tenants=(CONTOSO.id, FABRIKAM.id),
        application_permissions=CONNECTOR_APPLICATION_PERMISSIONS,
        app_roles=CONNECTOR_APP_ROLES,
    )


@dataclass(frozen=True)
class EntraConfig:
    """``issuer_host``: the https base URL of the API (issuer, token, keys); ``browser_host``: the base URL
    the browser is sent to for the authorize page (http in the sandbox so a stock browser needs no CA)."""

    issuer_host: str
    browser_host: str = ""
    directory: Directory = DIRECTORY
    apps: tuple[AppRegistration, ...] = field(default_factory=lambda: (connector_app(),))
    resources: tuple[Resource, ...] = (GRAPH,)
    code_lifetime: float = 600.0  # "about 10 minutes" per the Microsoft identity platform docs
    sign_in_page_lifetime: float = 1800.0
    id_token_lifetime: float = 3600.0
    access_token_lifetime: float = 3599.0
    refresh_token_lifetime: float = 90 * 24 * 3600.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        for name in ("issuer_host", "browser_host"):
            value = getattr(self, name).rstrip("/")
            object.__setattr__(self, name, value)
        if not self.browser_host:
            object.__setattr__(self, "browser_host", self.issuer_host)
        if urlsplit(self.issuer_host).scheme != "https":
            raise ValueError("issuer_host must be an https URL: msal refuses any other authority")

    def app(self, client_id: str) -> AppRegistration | None:
        return next((a for a in self.apps if a.client_id.lower() == client_id.lower()), None)

    def resource(self, value: str) -> Resource | None:
        return next((r for r in self.resources if r.matches(value)), None)

    def with_app(self, app: AppRegistration) -> EntraConfig:
        """A copy in which ``app`` replaces the registration with the same client id (or is added)."""
        others = tuple(a for a in self.apps if a.client_id != app.client_id)
        return dataclasses.replace(self, apps=(*others, app))
