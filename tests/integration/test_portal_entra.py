"""Portal sign-in against the sandbox Entra ID: real msal over TLS, the account picker, form_post, our checks."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connector import portal
from connector.services import reset as reset_services
from sandbox.entra import RunningEntra, start_entra
from sandbox.seed import CONTOSO, FABRIKAM
from sandbox.tls import TlsFiles, ensure_tls, trust_env
from tests.functions.portal_support import call, text
from tests.sandbox.entra_browser import authorization_response, choose_account

pytestmark = pytest.mark.azurite


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return ensure_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def entra(tls: TlsFiles) -> Iterator[RunningEntra]:
    with start_entra(tls) as running:
        yield running


@pytest.fixture
def signed_env(
    env: dict[str, str], entra: RunningEntra, tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    for key, value in {**trust_env(tls), "ENTRA_AUTHORITY_HOST": entra.issuer_host}.items():
        monkeypatch.setenv(key, value)
    reset_services()
    yield env
    reset_services()


def sign_in(upn: str) -> tuple[httpx.Response | None, object]:
    started = call(portal.signin, "GET", "portal/signin")
    assert started.status_code == 302, text(started)
    auth_uri = started.headers["Location"]
    assert parse_qs(urlsplit(auth_uri).query)["response_mode"] == ["form_post"]
    with httpx.Client() as browser:
        answer = choose_account(browser, auth_uri, upn)
    fields = authorization_response(answer)
    binding = next(c for c in started.headers.get_all("Set-Cookie") if c.startswith("portal_signin="))
    return answer, call(
        portal.signin_callback,
        "POST",
        "portal/signin/callback",
        form=fields,
        headers={"cookie": binding.split(";", 1)[0]},
    )


def cookie_of(response: object) -> str:
    cookies = response.headers.get_all("Set-Cookie")  # type: ignore[attr-defined]
    return str(next(c for c in cookies if c.startswith("portal_session="))).split(";", 1)[0]


def test_a_global_administrator_signs_in_and_is_an_admin(signed_env: dict[str, str]) -> None:
    _, response = sign_in("admin@contoso.example")
    assert response.status_code == 303, text(response)  # type: ignore[attr-defined]
    page = text(call(portal.dashboard, "GET", "portal", headers={"cookie": cookie_of(response)}))
    assert "Avery Admin" in page and "Add configurations" in page


@pytest.mark.parametrize("upn", ["teamsadmin@contoso.example", "appadmin@contoso.example"])
def test_teams_administrators_and_connector_admins_are_admins(signed_env: dict[str, str], upn: str) -> None:
    _, response = sign_in(upn)
    page = text(call(portal.dashboard, "GET", "portal", headers={"cookie": cookie_of(response)}))
    assert "Add configurations" in page


def test_an_ordinary_user_signs_in_as_a_possible_approver(signed_env: dict[str, str]) -> None:
    _, response = sign_in("analyst@contoso.example")
    page = text(call(portal.dashboard, "GET", "portal", headers={"cookie": cookie_of(response)}))
    assert "Erin Analyst" in page and "Add configurations" not in page


def test_a_tenant_outside_the_allowed_list_is_refused(
    signed_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENTRA_ALLOWED_TENANT_IDS", CONTOSO.id)
    reset_services()
    _, response = sign_in(f"admin@{FABRIKAM.domain}")
    assert response.status_code == 403  # type: ignore[attr-defined]
    assert "not enabled" in text(response)
