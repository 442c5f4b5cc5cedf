"""The provider's panel tells launches from Teams' roster, dates each state, and polls less while nothing changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role
from shared.visits.model import (
    Presence,
    RosterEntry,
    Visit,
    VisitContext,
    compose,
    with_launch,
    with_presence,
    with_roster_fact,
)
from shared.visits.panel import FIRST_POLL, IDLE_STOP, MAX_POLL, PanelState, panel_of, poll_after
from shared.visits.repository import LIFETIME

T0 = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)
LOBBY, CONNECTED, LEFT = EventKind.LOBBY, EventKind.CONNECTED, EventKind.DISCONNECTED


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_visit() -> Visit:
    return Visit(
        geography=Geography.EMEA,
        key="k" * 64,
        configuration_id="cfg",
        context=VisitContext(csn="1"),
        expires_at=T0 + LIFETIME,  # opened at T0
        join_web_url="https://teams.example/l/1",
        meeting_id="m1",
    )


def launch(visit: Visit, role: Role, at: datetime) -> Visit:
    kind = LOBBY if role is Role.PATIENT else CONNECTED  # what a launch event says, as the launch service sends it
    return compose(with_presence(role, kind, at), with_launch(role, at))(visit) or visit


def roster(visit: Visit, role: Role, state: EventKind, at: datetime) -> Visit:
    return compose(with_presence(role, state, at), with_roster_fact(role, state, at))(visit) or visit


def state_of(visit: Visit, role: Role) -> PanelState:
    return next(row.state for row in panel_of(visit).rows if row.role is role)


# --- states -------------------------------------------------------------------------------------


def test_nobody_has_arrived_on_a_new_visit() -> None:
    panel = panel_of(new_visit())
    assert [(row.role, row.state, row.since) for row in panel.rows] == [
        (Role.PATIENT, PanelState.NOT_ARRIVED, None),
        (Role.PROVIDER, PanelState.NOT_ARRIVED, None),
        (Role.STAFF, PanelState.NOT_ARRIVED, None),
    ]
    assert not panel.ended and panel.meeting


def test_a_launch_is_launched_or_waiting_to_join_never_in_the_meeting_or_lobby() -> None:
    visit = launch(launch(new_visit(), Role.PROVIDER, s(1)), Role.PATIENT, s(2))
    panel = panel_of(visit)
    assert {row.role: (row.state, row.since) for row in panel.rows} == {
        Role.PROVIDER: (PanelState.LAUNCHED, s(1)),
        Role.PATIENT: (PanelState.WAITING_TO_JOIN, s(2)),
        Role.STAFF: (PanelState.NOT_ARRIVED, None),
    }
    # Writeback still sees the launch's own facts.
    assert visit.presence[Role.PROVIDER] == Presence(CONNECTED, s(1))


def test_the_full_lobby_admit_leave_end_sequence() -> None:
    visit = launch(new_visit(), Role.PROVIDER, s(0))
    visit = roster(visit, Role.PROVIDER, CONNECTED, s(30))
    assert state_of(visit, Role.PROVIDER) is PanelState.IN_MEETING
    visit = launch(visit, Role.PATIENT, s(100))
    assert state_of(visit, Role.PATIENT) is PanelState.WAITING_TO_JOIN
    visit = roster(visit, Role.PATIENT, LOBBY, s(130))
    row = panel_of(visit).rows[0]
    assert (row.state, row.since, row.lobby_since, row.lobby_wait) == (PanelState.IN_LOBBY, s(130), s(130), None)
    visit = roster(visit, Role.PATIENT, CONNECTED, s(310))
    row = panel_of(visit).rows[0]
    assert (row.state, row.since, row.lobby_wait) == (PanelState.IN_MEETING, s(310), timedelta(minutes=3))
    visit = roster(visit, Role.PATIENT, LEFT, s(900))
    assert state_of(visit, Role.PATIENT) is PanelState.LEFT and not panel_of(visit).ended
    visit = roster(visit, Role.PROVIDER, LEFT, s(910))
    panel = panel_of(visit)
    assert panel.ended and panel.ended_at == s(910)
    assert poll_after(panel, s(911)) is None


def test_a_relaunch_while_in_the_meeting_does_not_pretend_the_clinician_left_teams() -> None:
    visit = roster(launch(new_visit(), Role.PROVIDER, s(0)), Role.PROVIDER, CONNECTED, s(30))
    visit = launch(visit, Role.PROVIDER, s(60))  # pressed "Begin virtual visit" again
    row = panel_of(visit).rows[1]
    assert (row.state, row.since) == (PanelState.IN_MEETING, s(30))


def test_a_launch_after_leaving_means_coming_back() -> None:
    visit = roster(new_visit(), Role.PATIENT, LOBBY, s(0))
    visit = roster(visit, Role.PATIENT, LEFT, s(20))
    assert panel_of(visit).ended
    visit = launch(visit, Role.PATIENT, s(40))
    assert state_of(visit, Role.PATIENT) is PanelState.WAITING_TO_JOIN and not panel_of(visit).ended


def test_a_repeated_roster_fact_does_not_move_since_nor_the_version() -> None:
    visit = roster(new_visit(), Role.PATIENT, LOBBY, s(10))
    before = panel_of(visit)
    visit = roster(visit, Role.PATIENT, LOBBY, s(50))
    assert panel_of(visit).rows[0].since == s(10)
    assert panel_of(visit).version == before.version


def test_the_version_changes_with_what_the_panel_shows() -> None:
    visit = new_visit()
    versions = {panel_of(visit).version}
    for change in (
        lambda v: launch(v, Role.PROVIDER, s(1)),
        lambda v: roster(v, Role.PROVIDER, CONNECTED, s(2)),
        lambda v: roster(v, Role.PATIENT, LOBBY, s(3)),
        lambda v: roster(v, Role.PATIENT, CONNECTED, s(4)),
    ):
        visit = change(visit)
        versions.add(panel_of(visit).version)
    assert len(versions) == 5


FACTS = [(LOBBY, s(0)), (CONNECTED, s(90)), (LEFT, s(600))]


@pytest.mark.parametrize("order", list(itertools.permutations(FACTS[:2])))
def test_the_lobby_wait_is_known_whichever_fact_the_queue_delivers_first(
    order: tuple[tuple[EventKind, datetime], ...],
) -> None:
    visit = new_visit()
    for state, at in order:
        visit = roster(visit, Role.PATIENT, state, at)
    assert visit.roster[Role.PATIENT] == RosterEntry(CONNECTED, since=s(90), at=s(90), lobby_since=s(0))
    assert panel_of(visit).rows[0].lobby_wait == timedelta(seconds=90)


@pytest.mark.parametrize("order", list(itertools.permutations(FACTS)))
def test_the_roster_ends_in_the_newest_state_whatever_the_order(order: tuple[tuple[EventKind, datetime], ...]) -> None:
    visit = new_visit()
    for state, at in order:
        visit = roster(visit, Role.PATIENT, state, at)
    entry = visit.roster[Role.PATIENT]
    assert (entry.state, entry.since, entry.at) == (LEFT, s(600), s(600))


def test_the_organizer_bypassing_the_lobby_has_no_lobby_wait() -> None:
    visit = roster(new_visit(), Role.PROVIDER, CONNECTED, s(5))
    assert panel_of(visit).rows[1].lobby_wait is None


def test_a_row_from_before_the_roster_was_kept_reads_as_its_presence() -> None:
    visit = with_presence(Role.PATIENT, LOBBY, s(5))(new_visit())
    assert visit is not None
    assert state_of(visit, Role.PATIENT) is PanelState.IN_LOBBY


def test_the_json_form_names_roles_states_and_iso_times_only() -> None:
    visit = roster(roster(new_visit(), Role.PATIENT, LOBBY, s(0)), Role.PATIENT, CONNECTED, s(125))
    assert panel_of(visit).to_json()["participants"]["patient"] == {
        "state": "in_meeting",
        "since": "2026-12-05T15:02:05Z",
        "lobbyWaitSeconds": 125,
    }


# --- when to look again -------------------------------------------------------------------------


def test_polls_back_off_while_nothing_changes_and_start_over_on_a_change() -> None:
    visit = launch(new_visit(), Role.PROVIDER, s(0))
    panel = panel_of(visit)
    now, delays = s(1), []
    while now < s(600):
        delay = poll_after(panel, now)
        assert delay is not None
        delays.append(delay)
        now += timedelta(seconds=delay)
    assert delays[:6] == [5, 6, 12, 24, 48, 60]
    assert set(delays[6:]) == {60}
    changed = panel_of(roster(visit, Role.PATIENT, LOBBY, now))
    assert poll_after(changed, now + timedelta(seconds=2)) == FIRST_POLL.total_seconds()


def test_the_delay_stays_between_its_bounds_even_with_skewed_clocks() -> None:
    panel = panel_of(roster(new_visit(), Role.PATIENT, LOBBY, s(100)))
    assert poll_after(panel, s(90)) == FIRST_POLL.total_seconds()  # an event stamped in our future
    assert poll_after(panel, s(100) + IDLE_STOP - timedelta(seconds=1)) == MAX_POLL.total_seconds()


def test_polling_stops_after_a_long_quiet_and_once_the_meeting_has_ended() -> None:
    panel = panel_of(roster(new_visit(), Role.PATIENT, LOBBY, s(0)))
    assert poll_after(panel, s(0) + IDLE_STOP + timedelta(seconds=1)) is None
    ended = panel_of(roster(new_visit(), Role.PATIENT, LEFT, s(0)))
    assert poll_after(ended, s(1)) is None


def test_a_new_visit_with_no_fact_yet_backs_off_from_its_opening() -> None:
    panel = panel_of(new_visit())
    assert poll_after(panel, T0) == 5
    assert poll_after(panel, T0 + timedelta(seconds=30)) == 30


def test_times_from_another_offset_are_shown_in_utc() -> None:
    rome = timezone(timedelta(hours=1))
    visit = roster(new_visit(), Role.PATIENT, LOBBY, datetime(2026, 12, 5, 16, 0, tzinfo=rome))
    since = panel_of(visit).rows[0].since
    assert since is not None and since.utcoffset() == timedelta(0) and since == T0
