"""The patient's email/SMS join link (Oracle Health patients join "from email or SMS notifications"), called as the
Functions host calls the visit page: issued on the clinician's page only, signed with our key, good for one
appointment, and expiring; it leads to the same lobby as a patient launch, with no account."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from connector.services import services
from shared.kernel.errors import Forbidden
from shared.kernel.settings import Settings
from shared.storage.accounts import Storage
from shared.visits.events import Role
from shared.visits.tokens import JOIN_LINK_LIFETIME, VisitTokens
from tests.functions.test_launch import World, html, installed_world, join_link

pytestmark = pytest.mark.azurite


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    yield from installed_world(settings, storage)


def patient_link(page: str) -> str:
    found = re.search(r'id="patient-join-link" type="text" readonly value="([^"]+)"', page)
    assert found, page
    return found.group(1).replace("&amp;", "&")


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


def clinicians_page(world: World, csn: str = "1853") -> tuple[str, str]:
    """(the clinician's visit URL, its page) after a provider launch for the visit with ``csn``."""
    launched = world.provider(csn=csn)
    assert launched.status_code == 303
    page = world.open(launched.headers["Location"])
    assert page.status_code == 200
    return launched.headers["Location"], html(page)


def test_the_clinicians_page_offers_a_signed_link_that_opens_the_same_lobby(world: World) -> None:
    visit_url, page = clinicians_page(world)
    link = patient_link(page)
    assert link.split("?")[0] == visit_url.split("?")[0]  # this visit, and only this visit
    assert token_of(link) != token_of(visit_url)

    opened = world.open(link)  # a patient's phone: no account, no EHR sign-in, no cookie
    assert opened.status_code == 303
    assert opened.headers["Location"] == join_link(page)  # the meeting's lobby, as a patient launch leads

    grant = services().launch.grant(visit_url.split("/")[5].split("?")[0], token_of(link))
    assert grant.role is Role.PATIENT and grant.configuration_id == world.config.id
    assert grant.expires_at - time.time() == pytest.approx(JOIN_LINK_LIFETIME.total_seconds(), abs=60)

    presence = world.open(link.replace("?t=", "/presence?t="))  # it learns whether the meeting exists, nothing else
    assert json.loads(presence.get_body()) == {"meeting": True, "overdue": False}


def test_a_link_for_one_appointment_opens_no_other(world: World) -> None:
    _, first = clinicians_page(world, csn="1853")
    other_url, _ = clinicians_page(world, csn="2000")
    other_key = urlsplit(other_url).path.split("/")[3]
    moved = f"{world.settings.public_base_url}/api/visits/{other_key}?t={quote(token_of(patient_link(first)))}"
    refused = world.open(moved)
    assert refused.status_code == 403 and "This link has expired" in html(refused)  # a patient's words


def test_an_expired_link_is_refused_with_its_own_words(world: World, settings: Settings) -> None:
    visit_url, _ = clinicians_page(world)
    key = urlsplit(visit_url).path.split("/")[3]
    grant = services().launch.grant(key, token_of(visit_url))
    issued = time.time() - JOIN_LINK_LIFETIME.total_seconds() - 120  # issued a lifetime (and 2 minutes) ago
    old = services().launch.patient_join_link(grant, now=issued)
    refused = world.open(old)
    assert refused.status_code == 403 and "This link has expired" in html(refused)
    fresh = world.open(services().launch.patient_join_link(grant))
    assert fresh.status_code == 303


def test_a_forged_or_edited_link_is_refused(world: World, settings: Settings) -> None:
    visit_url, page = clinicians_page(world)
    link = patient_link(page)
    token = token_of(link)
    edited = link.replace(token, token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"))
    assert world.open(edited).status_code == 403
    key = urlsplit(visit_url).path.split("/")[3]
    forged = VisitTokens("another connector's secret").issue(
        geography=services().launch.grant(key, token_of(visit_url)).geography,
        key=key,
        role=Role.PATIENT,
        configuration_id=world.config.id,
    )
    assert world.open(link.replace(token, quote(forged))).status_code == 403  # not signed with our key


def test_only_a_clinicians_page_issues_join_links(world: World) -> None:
    _, page = clinicians_page(world)
    link = patient_link(page)
    key = urlsplit(link).path.split("/")[3]
    patients_grant = services().launch.grant(key, token_of(link))
    with pytest.raises(Forbidden):  # a patient cannot mint links (for other people, or longer-lived ones)
        services().launch.patient_join_link(patients_grant)
