"""FHIR R4 ``AuditEvent`` writeback for any SMART-on-FHIR EHR.

Each visit event becomes one AuditEvent (fhir.resources R4B models): subtype participant
in lobby / connected / disconnected, agent = the participant's reference from the launch
context (an interpreter: participant type ``translator``; a guest one has no reference), entity = the
Encounter and Appointment. R4 AuditEvent has no ``identifier``, so the
event id travels twice: as a ``meta.tag`` (``_tag`` is a standard search parameter on every
resource) and as an ``entity.what.identifier`` (searchable as ``entity-identifier`` / Epic-style
``identifier``). The create is conditional on the tag (``If-None-Exist: _tag=<system>|<id>``):
a redelivered event finds the first one and creates nothing — exactly-once effect on any
conformant server.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from shared.visits.events import EventKind, Role, VisitEvent

if TYPE_CHECKING:
    from fhir.resources.R4B.auditevent import AuditEvent

EVENT_TAG_SYSTEM = "urn:teams-ehr-connector:event-id"
SUBTYPE_SYSTEM = "urn:teams-ehr-connector:virtual-visit"
SUBTYPES = {
    EventKind.LOBBY: ("participant-in-lobby", "Participant waiting in the lobby"),
    EventKind.CONNECTED: ("participant-connected", "Participant connected"),
    EventKind.DISCONNECTED: ("participant-disconnected", "Participant disconnected"),
}
AGENT_ROLES = {
    Role.PROVIDER: ("PPRF", "primary performer"),
    Role.STAFF: ("SPRF", "secondary performer"),
    Role.PATIENT: ("PAT", "patient"),
}
# A guest interpreter (joined as "Interpreter" through the clinician's link): FHIR's participant type for one who
# "is facilitating communication with the patient" (agent.type's binding is extensible). They have no EHR
# reference: ``who`` says what they are, never the patient's reference.
INTERPRETER_TYPE = ("http://terminology.hl7.org/CodeSystem/participant-type", "translator", "Translator")
OBSERVER = "Microsoft Teams EHR connector"


def build_audit_event(event: VisitEvent) -> AuditEvent:
    """The AuditEvent for ``event``, validated by the R4B model (tests hold every shape the worker sends to it)."""
    # fhir.resources costs ~170 ms to import: only the tests and tools that validate pay for it.
    from fhir.resources.R4B.auditevent import AuditEvent

    return AuditEvent.model_validate(audit_event_body(event))


def audit_event_json(event: VisitEvent) -> str:
    """The AuditEvent for ``event`` as the worker posts it: plain JSON of ``audit_event_body``.

    Validating it with fhir.resources on every event would cost ~0.55 ms of CPU, a seventh of the event's
    floor, for a shape that never changes: ``tests/unit/test_audit_event.py`` validates every event kind and
    role with the R4B model instead, and the EHR validates what it receives.
    """
    return json.dumps(audit_event_body(event), separators=(",", ":"))


def audit_event_body(event: VisitEvent) -> dict[str, Any]:
    """The AuditEvent resource for ``event`` as JSON data."""
    code, display = SUBTYPES[event.kind]
    role_code, role_display = AGENT_ROLES[event.role]
    agent_type = {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
        "code": role_code,
        "display": role_display,
    }
    who: dict[str, Any] = {"display": f"{event.role.value} participant"}
    if event.interpreter:
        type_system, type_code, type_display = INTERPRETER_TYPE  # the subtype's code and display stay the event's
        agent_type = {"system": type_system, "code": type_code, "display": type_display}
    if event.interpreter and event.role is Role.PATIENT:
        who = {"display": "interpreter (guest)"}  # an anonymous joiner: never the visit's patient's reference
    elif event.participant:
        who = {"reference": event.participant}  # a staff interpreter is named like any clinician
    entities: list[dict[str, Any]] = []
    if event.encounter:
        entities.append({"what": {"reference": f"Encounter/{event.encounter}"}, "type": _object_type()})
    if event.appointment:
        entities.append({"what": {"reference": f"Appointment/{event.appointment}"}, "type": _object_type()})
    entities.append(
        {
            "what": {"identifier": {"system": EVENT_TAG_SYSTEM, "value": event.id}},
            "name": "connector event",
            "type": _object_type(),
        }
    )
    if event.csn:
        entities.append({"what": {"identifier": {"type": {"text": "CSN"}, "value": event.csn}}, "name": "CSN"})
    return {
        "resourceType": "AuditEvent",
        "meta": {"tag": [{"system": EVENT_TAG_SYSTEM, "code": event.id}]},
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity",
        },
        "subtype": [{"system": SUBTYPE_SYSTEM, "code": code, "display": display}],
        "action": "E",
        "recorded": event.occurred_at.isoformat(),
        "outcome": "0",
        "agent": [
            {
                "type": {"coding": [agent_type]},
                "who": who,
                "requestor": event.role is not Role.PATIENT and not event.interpreter,
            }
        ],
        "source": {"observer": {"display": OBSERVER}},
        "entity": entities,
    }


def if_none_exist(event: VisitEvent) -> str:
    return f"_tag={EVENT_TAG_SYSTEM}|{event.id}"


def _object_type() -> dict[str, str]:
    system = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
    return {"system": system, "code": "2", "display": "System Object"}
