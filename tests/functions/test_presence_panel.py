"""The presence endpoint behind the provider's panel: conditional (ETag / If-None-Match → 304 without a body),
one Table read per poll, a hint of when to look again that backs off and stops, JSON or the page's fragment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import azure.functions as func
import pytest

from connector.launch import POLL_AFTER_HEADER, visit_presence
from shared.kernel.clock import utcnow
from shared.kernel.settings import Settings
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role
from shared.visits.model import compose, with_presence, with_roster_fact
from shared.visits.repository import VisitRepository
from tests.functions.test_launch import World, installed_world, request
from tests.support.sealing import sealer_for

pytestmark = pytest.mark.azurite


@pytest.fixture
def world(env: dict[str, str], settings: Settings, storage: Storage) -> Iterator[World]:
    yield from installed_world(settings, storage)


class Visit:
    """The provider's visit after a launch, and its presence endpoint as the page calls it."""

    def __init__(self, world: World) -> None:
        location = world.provider().headers["Location"]
        self.key = urlsplit(location).path.split("/")[3]
        self.token = parse_qs(urlsplit(location).query)["t"][0]
        self.world = world
        self.visits = VisitRepository(world.storage, sealer_for(world.settings))

    def poll(
        self, *, etag: str | None = None, html: bool = False, token: str | None = None, query: str = ""
    ) -> func.HttpResponse:
        headers = {"accept": "text/html" if html else "application/json"}
        if etag is not None:
            headers["if-none-match"] = etag
        url = f"http://localhost/api/visits/{self.key}/presence?t={quote(token or self.token, safe='')}{query}"
        return visit_presence(request("GET", url, headers=headers, route_params={"visitKey": self.key}))

    def roster(self, role: Role, state: EventKind, seconds_ago: float = 0) -> None:
        """What the writeback worker records for a Graph roster fact."""
        at = utcnow() - timedelta(seconds=seconds_ago)
        visit = self.visits.get(self.world.config.geography, self.key)
        assert visit is not None
        self.visits.update(visit, compose(with_presence(role, state, at), with_roster_fact(role, state, at)))


def body(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def test_an_unchanged_poll_is_a_304_without_a_body_and_a_change_is_a_200(world: World) -> None:
    visit = Visit(world)
    first = visit.poll()
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"presence-')
    assert first.headers[POLL_AFTER_HEADER] == "5"  # just opened: look again soon

    unchanged = visit.poll(etag=etag)
    assert unchanged.status_code == 304 and unchanged.get_body() == b""
    assert unchanged.headers["ETag"] == etag and unchanged.headers[POLL_AFTER_HEADER] == "5"
    assert visit.poll(etag=f'W/{etag}, "other"').status_code == 304  # a list, weakly compared
    assert visit.poll(etag="*").status_code == 304

    visit.roster(Role.PATIENT, EventKind.LOBBY)
    changed = visit.poll(etag=etag)
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert body(changed)["participants"]["patient"]["state"] == "in_lobby"


def test_the_hint_backs_off_with_quiet_and_is_absent_once_the_meeting_has_ended(world: World) -> None:
    visit = Visit(world)
    visit.roster(Role.PROVIDER, EventKind.CONNECTED, seconds_ago=40)
    assert 40 <= int(visit.poll().headers[POLL_AFTER_HEADER]) <= 45
    visit.roster(Role.PROVIDER, EventKind.CONNECTED, seconds_ago=0)  # the same state again: nothing changed
    assert 40 <= int(visit.poll().headers[POLL_AFTER_HEADER]) <= 45
    visit.roster(Role.PATIENT, EventKind.LOBBY, seconds_ago=0)  # a change: start over
    assert visit.poll().headers[POLL_AFTER_HEADER] == "5"

    visit.roster(Role.PATIENT, EventKind.DISCONNECTED)
    visit.roster(Role.PROVIDER, EventKind.DISCONNECTED)
    ended = visit.poll()
    assert body(ended)["ended"] is True and POLL_AFTER_HEADER not in ended.headers
    assert visit.poll(etag=ended.headers["ETag"]).status_code == 304


def test_the_page_fragment_has_its_own_version_and_is_conditional_too(world: World) -> None:
    visit = Visit(world)
    fragment = visit.poll(html=True)
    assert fragment.status_code == 200 and fragment.mimetype == "text/html"
    text = fragment.get_body().decode()
    assert 'id="presence-patient" data-state="not_arrived"' in text and "<html" not in text
    assert fragment.headers["ETag"].startswith('"panel-') and fragment.headers["Vary"] == "Accept, Accept-Language"
    assert visit.poll(html=True, etag=fragment.headers["ETag"]).status_code == 304
    assert visit.poll(etag=fragment.headers["ETag"]).status_code == 200  # the JSON is another representation


def test_the_page_fragment_speaks_the_readers_language_and_its_version_says_which(world: World) -> None:
    visit = Visit(world)
    visit.roster(Role.PATIENT, EventKind.LOBBY, seconds_ago=0)
    english = visit.poll(html=True)
    german = visit.poll(html=True, query="&lang=de&tz=Europe/Berlin")
    assert "In the lobby" in english.get_body().decode()
    text = german.get_body().decode()
    assert "Im Wartebereich" in text and 'data-local="time"' in text and "Europe/Berlin</time>" in text
    assert german.headers["Content-Language"] == "de" and german.headers["ETag"] != english.headers["ETag"]
    assert visit.poll(html=True, query="&lang=de&tz=Europe/Berlin", etag=english.headers["ETag"]).status_code == 200


def test_each_poll_costs_one_table_read(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    visit = Visit(world)
    etag = visit.poll().headers["ETag"]
    reads: list[str] = []
    original = VisitRepository.get

    def counted(self: VisitRepository, *args: Any, **kwargs: Any) -> Any:
        reads.append("get")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VisitRepository, "get", counted)
    visit.poll(etag=etag)
    visit.poll()
    assert reads == ["get", "get"]
