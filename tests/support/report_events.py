"""Queue messages of whole visits, as launches and Graph put them on the writeback queue (launch events sealed)."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.kernel.sealing import Sealer
from shared.visits.events import EventKind, Role, Source, VisitEvent, attendee_key
from shared.visits.sealed_context import seal_event

L, C, D = EventKind.LOBBY, EventKind.CONNECTED, EventKind.DISCONNECTED


def visit_messages(
    sealer: Sealer,
    *,
    configuration_id: str,
    geography: str,
    visit_key: str,
    start: datetime,
    outcome: str = "completed",
    csn: str = "CSN-1001",
    department: str | None = "10501101",
    wait_minutes: float = 2.0,
    patients: int = 1,
    first_patient: int = 0,
) -> list[str]:
    """The queue bodies of one visit: both launches (sealed references), then the roster as Graph reports it."""

    def at(minutes: float) -> datetime:
        return start + timedelta(minutes=minutes)

    def launch(role: Role, minutes: float, participant: str) -> VisitEvent:
        event = VisitEvent(
            configuration_id, geography, visit_key, C if role is Role.PROVIDER else L, role, at(minutes), Source.LAUNCH,
            participant=participant, csn=csn, department=department if role is Role.PROVIDER else None,
        )  # fmt: skip
        return seal_event(sealer, event)

    def graph(role: Role, kind: EventKind, minutes: float, leg: str) -> VisitEvent:
        return VisitEvent(
            configuration_id, geography, visit_key, kind, role, at(minutes), Source.GRAPH, attendee=attendee_key(leg)
        )

    events = [launch(Role.PROVIDER, 0, "Practitioner/dr-smith-123")]
    if outcome != "no_show":
        events.append(launch(Role.PATIENT, 1, "Patient/pat-456"))
    events.append(graph(Role.PROVIDER, C, 0.5, "leg-provider"))
    for n in range(first_patient, first_patient + (patients if outcome != "no_show" else 0)):
        events.append(graph(Role.PATIENT, L, 1.5, f"leg-patient-{n}"))
        if outcome == "completed":
            events.append(graph(Role.PATIENT, C, 1.5 + wait_minutes, f"leg-patient-{n}"))
            events.append(graph(Role.PATIENT, D, 20, f"leg-patient-{n}"))
        else:  # abandoned
            events.append(graph(Role.PATIENT, D, 5, f"leg-patient-{n}"))
    events.append(graph(Role.PROVIDER, D, 21, "leg-provider"))
    return [event.to_json() for event in events]
