"""The provider's panel of a group visit: one row per Teams participant, by role and arrival, never by name; how
many wait in the lobby, and a reminder to admit patients; the meeting ends when each participant has left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector.web import templates
from shared.kernel.settings import Geography
from shared.microsoft.call_events import participant_changes
from shared.visits.events import EventKind, Role, Source, VisitEvent, attendee_key
from shared.visits.lifetime import meeting_ended
from shared.visits.model import MAX_ATTENDEES, Visit, compose, with_attendee_fact, with_presence, with_roster_fact
from shared.visits.panel import Panel, PanelState, panel_of
from shared.visits.subscriptions import _finished as finished

T0 = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)
ORGANIZER = "b0000000-0000-4000-8000-000000000002"


def group(*facts: tuple[str, Role, EventKind, int, bool]) -> Visit:
    visit = Visit(Geography.EMEA, "g", "c", T0 + timedelta(hours=23), group_key="g", meeting_id="m", join_web_url="u")
    change = compose(
        *(with_attendee_fact(a, role, kind, T0 + timedelta(seconds=s), interpreter=i) for a, role, kind, s, i in facts)
    )
    return change(visit) or visit


def test_three_patients_an_interpreter_and_two_clinicians_each_have_a_row() -> None:
    visit = group(
        ("lee", Role.PROVIDER, EventKind.CONNECTED, 0, False),
        ("p1", Role.PATIENT, EventKind.LOBBY, 10, False),
        ("p2", Role.PATIENT, EventKind.LOBBY, 20, False),
        ("int", Role.PATIENT, EventKind.LOBBY, 25, True),
        ("p3", Role.PATIENT, EventKind.LOBBY, 30, False),
        ("kim", Role.STAFF, EventKind.CONNECTED, 40, False),
        ("p1", Role.PATIENT, EventKind.CONNECTED, 50, False),  # admitted one by one
    )
    panel = panel_of(visit)
    shown = [(a.label, a.number, a.state) for a in panel.attendees]
    assert shown == [
        ("clinician", 1, PanelState.IN_MEETING),
        ("patient", 1, PanelState.IN_MEETING),
        ("patient", 2, PanelState.IN_LOBBY),
        ("interpreter", 1, PanelState.IN_LOBBY),
        ("patient", 3, PanelState.IN_LOBBY),
        ("clinician", 2, PanelState.IN_MEETING),
    ]
    assert panel.group and panel.lobby_count == 3 and panel.admit_reminder and not panel.ended
    data = panel.to_json()
    assert data["lobbyCount"] == 3 and len(data["attendees"]) == 6


def test_only_clinicians_waiting_is_no_reminder_and_everyone_gone_ends_the_meeting() -> None:
    waiting = group(
        ("lee", Role.PROVIDER, EventKind.CONNECTED, 0, False), ("kim", Role.STAFF, EventKind.LOBBY, 5, False)
    )
    assert panel_of(waiting).lobby_count == 1 and not panel_of(waiting).admit_reminder
    # One patient leaving while another stays is no end of the meeting (per role, the roster would mix them).
    visit = group(
        ("lee", Role.PROVIDER, EventKind.CONNECTED, 0, False),
        ("p1", Role.PATIENT, EventKind.CONNECTED, 10, False),
        ("p2", Role.PATIENT, EventKind.CONNECTED, 20, False),
        ("p1", Role.PATIENT, EventKind.DISCONNECTED, 30, False),
    )
    assert not panel_of(visit).ended
    done = compose(
        with_attendee_fact("p2", Role.PATIENT, EventKind.DISCONNECTED, T0 + timedelta(seconds=40)),
        with_attendee_fact("lee", Role.PROVIDER, EventKind.DISCONNECTED, T0 + timedelta(seconds=50)),
    )(visit)
    assert done is not None and panel_of(done).ended and panel_of(done).ended_at == T0 + timedelta(seconds=50)


def test_a_single_visits_panel_has_no_group_rows() -> None:
    visit = Visit(Geography.EMEA, "v", "c", T0 + timedelta(hours=23))
    panel = panel_of(visit)
    assert not panel.group and panel.attendees == () and "attendees" not in panel.to_json()


def test_teams_facts_tell_participants_apart_and_recognise_the_interpreter_by_the_name_only() -> None:
    event = {
        "eventType": "rosterUpdated",
        "eventDateTime": "2026-12-05T15:00:00Z",
        "participants": [
            {"id": "leg-1", "isInLobby": True, "info": {"identity": {"guest": {"id": "g1", "displayName": "Sam"}}}},
            {"id": "leg-2", "isInLobby": True, "info": {"identity": {"guest": {"displayName": " interpreter "}}}},
        ],
    }
    one, two = participant_changes(event, organizer_object_id=ORGANIZER)
    assert (one.interpreter, two.interpreter) == (False, True) and one.role is two.role is Role.PATIENT
    assert attendee_key("leg-1") != attendee_key("leg-2") and "leg" not in (attendee_key("leg-1") or "")

    def fact(attendee: str) -> VisitEvent:
        return VisitEvent("c", "emea", "g", EventKind.LOBBY, Role.PATIENT, T0, Source.GRAPH, attendee=attendee)

    # Two patients in the lobby at the same instant are two events (no attendee: the id as always).
    assert fact("a").id != fact("b").id
    plain = VisitEvent("c", "emea", "g", EventKind.LOBBY, Role.PATIENT, T0, Source.GRAPH)
    assert VisitEvent.from_json(fact("a").to_json()) == fact("a") and plain.id not in (fact("a").id, fact("b").id)


def single(*facts: tuple[str, Role, EventKind, int]) -> Visit:
    """A single (non-group) visit whose organizer's colleagues are told apart by their call legs."""
    visit = Visit(Geography.EMEA, "v", "c", T0 + timedelta(hours=23), meeting_id="m", join_web_url="u")
    change = compose(
        *(with_roster_fact(role, kind, T0 + timedelta(seconds=s)) for _, role, kind, s in facts),
        *(with_attendee_fact(a, role, kind, T0 + timedelta(seconds=s)) for a, role, kind, s in facts if a),
    )
    return change(visit) or visit


def test_a_single_visits_second_and_third_clinicians_are_clinician_2_and_3_never_other_staff() -> None:
    visit = single(
        ("", Role.PROVIDER, EventKind.CONNECTED, 0),
        ("", Role.PATIENT, EventKind.CONNECTED, 5),
        ("kim", Role.STAFF, EventKind.CONNECTED, 10),
        ("ray", Role.STAFF, EventKind.LOBBY, 20),
        ("kim", Role.STAFF, EventKind.DISCONNECTED, 30),
    )
    panel = panel_of(visit)
    assert [(c.label, c.number, c.state) for c in panel.colleagues] == [
        ("clinician", 2, PanelState.LEFT),
        ("clinician", 3, PanelState.IN_LOBBY),
    ]
    # The per-role staff row says "left" (its latest fact), but one colleague still waits: not ended.
    assert not panel.group and not panel.ended and panel.to_json()["colleagues"][1]["number"] == 3
    html = render_panel(panel)
    assert "Clinician 2" in html and "Clinician 3" in html and "Other staff" not in html
    assert 'id="presence-staff"' not in html  # each colleague has their own row instead
    everyone_left = compose(
        with_attendee_fact("ray", Role.STAFF, EventKind.DISCONNECTED, T0 + timedelta(seconds=40)),
        with_roster_fact(Role.STAFF, EventKind.DISCONNECTED, T0 + timedelta(seconds=40)),
        with_roster_fact(Role.PATIENT, EventKind.DISCONNECTED, T0 + timedelta(seconds=41)),
        with_roster_fact(Role.PROVIDER, EventKind.DISCONNECTED, T0 + timedelta(seconds=42)),
    )(visit)
    assert everyone_left is not None and panel_of(everyone_left).ended_at == T0 + timedelta(seconds=42)


def test_a_colleague_known_only_by_role_is_clinician_2() -> None:
    # A row from before colleagues were told apart: the staff role row, labelled as the second clinician.
    visit = single(("", Role.PROVIDER, EventKind.CONNECTED, 0), ("", Role.STAFF, EventKind.CONNECTED, 10))
    panel = panel_of(visit)
    assert panel.colleagues == () and "colleagues" not in panel.to_json()
    html = render_panel(panel)
    assert 'id="presence-staff"' in html and "Clinician 2" in html and "Other staff" not in html


def render_panel(panel: Panel) -> str:
    return templates().get_template("launch/_panel.html").render(panel=panel)


def test_a_single_visits_guest_interpreter_has_their_own_row_and_is_not_the_patient() -> None:
    visit = single(("", Role.PROVIDER, EventKind.CONNECTED, 0), ("", Role.PATIENT, EventKind.LOBBY, 5))
    joined = with_attendee_fact("int", Role.PATIENT, EventKind.CONNECTED, T0 + timedelta(seconds=9), interpreter=True)
    visit = joined(visit) or visit
    panel = panel_of(visit)
    assert [(c.label, c.number, c.state) for c in panel.colleagues] == [("interpreter", 1, PanelState.IN_MEETING)]
    assert [r.state for r in panel.rows if r.role is Role.PATIENT] == [PanelState.IN_LOBBY]
    html = render_panel(panel)
    assert 'id="interpreter-1"' in html and ">Interpreter<" in html and 'id="presence-staff"' in html


def test_a_single_visit_goes_on_when_its_interpreter_or_second_clinician_leaves() -> None:
    """Only everyone's leaving ends a single visit: its roles, and each further participant it tells apart."""
    visit = Visit(Geography.EMEA, "single", "cfg", T0 + timedelta(hours=23))
    base = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)
    for role in (Role.PROVIDER, Role.PATIENT):
        visit = (
            compose(with_presence(role, EventKind.CONNECTED, base), with_roster_fact(role, EventKind.CONNECTED, base))(
                visit
            )
            or visit
        )
    for n, (leg, role, interpreter) in enumerate((("int", Role.PATIENT, True), ("kim", Role.STAFF, False)), start=1):
        joined = with_attendee_fact(
            leg, role, EventKind.CONNECTED, base + timedelta(minutes=n), interpreter=interpreter
        )
        left = with_attendee_fact(leg, role, EventKind.DISCONNECTED, base + timedelta(minutes=n + 5))
        visit = left(joined(visit) or visit) or visit
    later = base + timedelta(hours=2)
    assert not meeting_ended(visit) and not finished(visit, later)  # provider and patient are still there
    for role in (Role.PROVIDER, Role.PATIENT):
        visit = with_presence(role, EventKind.DISCONNECTED, base + timedelta(minutes=30))(visit) or visit
    assert meeting_ended(visit) and finished(visit, later)
    # A further participant still there keeps it going, whoever else has left.
    back = with_attendee_fact("kim", Role.STAFF, EventKind.CONNECTED, base + timedelta(minutes=40))(visit) or visit
    assert not meeting_ended(back) and not finished(back, later)


def test_a_group_row_keeps_at_most_its_limit_of_call_legs_dropping_the_longest_gone_first() -> None:
    facts = [(f"gone{n}", Role.PATIENT, EventKind.DISCONNECTED, n, False) for n in range(MAX_ATTENDEES)]
    visit = group(("lee", Role.PROVIDER, EventKind.CONNECTED, 0, False), *facts)
    assert len(visit.attendees) == MAX_ATTENDEES and "lee" in visit.attendees and "gone0" not in visit.attendees
    present = group(*[(f"here{n}", Role.PATIENT, EventKind.CONNECTED, n, False) for n in range(MAX_ATTENDEES + 5)])
    assert len(present.attendees) == MAX_ATTENDEES + 5  # nobody still present is dropped
