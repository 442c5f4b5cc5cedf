"""The sandbox's seeded directory: Entra tenants and users, shared by the Entra and Graph stand-ins.

Ids are fixed so the demo, the tests and the EHR stand-in's practitioners line up. Nothing
here is real; the domains are Microsoft's documentation examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"  # Entra directory role template ids
TEAMS_ADMINISTRATOR = "69091246-20e8-4a56-aa4d-066075b2a7a8"

# The connector's own app registration in the sandbox tenant (matches local.settings.sample.json).
CONNECTOR_CLIENT_ID = "22222222-2222-4222-8222-222222222222"
CONNECTOR_CLIENT_SECRET = "sandbox-connector-secret"  # noqa: S105 - a sandbox-only value


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    domain: str


@dataclass(frozen=True)
class User:
    object_id: str
    tenant_id: str
    upn: str
    name: str
    wids: tuple[str, ...] = ()
    app_roles: tuple[str, ...] = ()
    # Teams application access policy granted to the connector app for this organizer.
    teams_policy: bool = True
    description: str = ""


@dataclass(frozen=True)
class Directory:
    tenants: tuple[Tenant, ...]
    users: tuple[User, ...] = field(default_factory=tuple)

    def tenant(self, tenant_id: str) -> Tenant | None:
        return next((t for t in self.tenants if t.id == tenant_id), None)

    def user(self, object_id: str) -> User | None:
        return next((u for u in self.users if u.object_id == object_id), None)

    def user_by_upn(self, upn: str) -> User | None:
        return next((u for u in self.users if u.upn.lower() == upn.lower()), None)

    def users_of(self, tenant_id: str) -> tuple[User, ...]:
        return tuple(u for u in self.users if u.tenant_id == tenant_id)


CONTOSO = Tenant("11111111-1111-4111-8111-111111111111", "Contoso Health", "contoso.example")
FABRIKAM = Tenant("33333333-3333-4333-8333-333333333333", "Fabrikam Clinic", "fabrikam.example")

DIRECTORY = Directory(
    tenants=(CONTOSO, FABRIKAM),
    users=(
        User("a0000000-0000-4000-8000-000000000001", CONTOSO.id, "admin@contoso.example", "Avery Admin",
             wids=(GLOBAL_ADMINISTRATOR,), description="Global Administrator"),
        User("a0000000-0000-4000-8000-000000000002", CONTOSO.id, "analyst@contoso.example", "Erin Analyst",
             description="Epic analyst (approver)"),
        User("a0000000-0000-4000-8000-000000000003", CONTOSO.id, "teamsadmin@contoso.example", "Tao Teamsadmin",
             wids=(TEAMS_ADMINISTRATOR,), description="Teams Administrator"),
        User("a0000000-0000-4000-8000-000000000004", CONTOSO.id, "appadmin@contoso.example", "Ari Approle",
             app_roles=("Connector.Admin",), description="Connector.Admin app role"),
        User("a0000000-0000-4000-8000-000000000005", CONTOSO.id, "reports@contoso.example", "Riley Reports",
             app_roles=("Connector.Reports",), description="Connector.Reports app role (usage reports only)"),
        User("b0000000-0000-4000-8000-000000000001", CONTOSO.id, "dr.smith@contoso.example", "Dr. Jordan Smith",
             description="Provider"),
        User("b0000000-0000-4000-8000-000000000002", CONTOSO.id, "dr.lee@contoso.example", "Dr. Morgan Lee",
             description="Provider"),
        User("b0000000-0000-4000-8000-000000000003", CONTOSO.id, "dr.nopolicy@contoso.example", "Dr. Casey Nopolicy",
             teams_policy=False, description="Provider without the Teams application access policy"),
        User("b0000000-0000-4000-8000-000000000004", CONTOSO.id, "nurse.kim@contoso.example", "Nurse Robin Kim",
             description="Staff"),
        User("b0000000-0000-4000-8000-000000000005", CONTOSO.id, "ana.souza@contoso.example", "Ana Souza",
             description="Staff interpreter (EHR user e-prac-souza)"),
        User("c0000000-0000-4000-8000-000000000001", FABRIKAM.id, "admin@fabrikam.example", "Fabrikam Admin",
             wids=(GLOBAL_ADMINISTRATOR,), description="Global Administrator of another tenant"),
        User("c0000000-0000-4000-8000-000000000002", FABRIKAM.id, "dr.garcia@fabrikam.example", "Dr. Quinn Garcia",
             description="Provider of another tenant (needs a shared configuration)"),
    ),
)  # fmt: skip
