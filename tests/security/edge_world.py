"""The security suite's world: the real function app on the local Functions host with every stand-in wired
(``tests.support.launch_world``), plus portal sessions and HTTP helpers for calling it as a browser or a
stranger would. Test modules import the ``world`` fixture from here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connector import portal
from connector.services import services
from shared.microsoft.entra import GLOBAL_ADMINISTRATOR, PortalIdentity
from shared.portal.sessions import PortalSession
from tests.support.launch_world import LaunchWorld, launch_world


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, azurite_port_base: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LaunchWorld]:
    folder = Path(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    with launch_world(azurite_port_base, folder) as running:
        yield running


def new_session(
    *, upn: str, admin: bool = False, tenant_id: str | None = None, oid: str | None = None
) -> PortalSession:
    """A signed-in portal user of the world's connector (the row the sign-in callback would write)."""
    identity = PortalIdentity(
        tenant_id=tenant_id or str(uuid.uuid4()),
        object_id=oid or str(uuid.uuid4()),
        upn=upn,
        name=upn.split("@", 1)[0],
        wids=(GLOBAL_ADMINISTRATOR,) if admin else (),
    )
    return services().sessions.create(identity)


def session_cookie(session: PortalSession) -> dict[str, str]:
    return {"cookie": f"{portal.cookie_name(services().settings)}={session.id}"}


def client(world: LaunchWorld) -> httpx.Client:
    return httpx.Client(base_url=world.host.url, follow_redirects=False, timeout=20)


def still_signed_in(world: LaunchWorld, session: PortalSession) -> bool:
    with client(world) as http:
        page = http.get("/api/portal", headers=session_cookie(session))
    return page.status_code == 200 and "/api/portal/signout" in page.text
