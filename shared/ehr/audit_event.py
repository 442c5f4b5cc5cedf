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
    """The AuditEvent for ``event`` as the worker posts it: the compact JSON of ``audit_event_body``, the same text.

    Its fixed parts (codings, the observer) are serialized once, at import, and only the event's own values per
    event: a quarter of the CPU of serializing the whole body each time. ``tests/unit/test_audit_event.py`` holds
    the text equal to ``json.dumps(audit_event_body(event))`` for every kind, role, interpreter and reference.
    Validating it with fhir.resources on every event would cost ~0.55 ms of CPU, a seventh of the event's
    floor, for a shape that never changes: that test validates every shape with the R4B model instead, and the
    EHR validates what it receives.
    """
    tag = _text(event.id)
    entities = []
    if event.encounter:
        entities.append(f'{{"what":{{"reference":{_text(f"Encounter/{event.encounter}")}}},"type":{_OBJECT_TYPE}}}')
    if event.appointment:
        reference = _text(f"Appointment/{event.appointment}")
        entities.append(f'{{"what":{{"reference":{reference}}},"type":{_OBJECT_TYPE}}}')
    entities.append(
        f'{{"what":{{"identifier":{{"system":{_TAG_SYSTEM},"value":{tag}}}}},"name":"connector event",'
        f'"type":{_OBJECT_TYPE}}}'
    )
    if event.csn:
        entities.append(
            f'{{"what":{{"identifier":{{"type":{{"text":"CSN"}},"value":{_text(event.csn)}}}}},"name":"CSN"}}'
        )
    agent = (
        f'{{"type":{{"coding":[{_AGENT_TYPES[event.role, event.interpreter]}]}},"who":{_compact(_who(event))},'
        f'"requestor":{"true" if _requestor(event) else "false"}}}'
    )
    return (
        f'{{"resourceType":"AuditEvent","meta":{{"tag":[{{"system":{_TAG_SYSTEM},"code":{tag}}}]}},"type":{_TYPE},'
        f'"subtype":{_SUBTYPES[event.kind]},"action":"E","recorded":{_text(event.occurred_at.isoformat())},'
        f'"outcome":"0","agent":[{agent}],"source":{_SOURCE},"entity":[{",".join(entities)}]}}'
    )


def audit_event_body(event: VisitEvent) -> dict[str, Any]:
    """The AuditEvent resource for ``event`` as JSON data."""
    code, display = SUBTYPES[event.kind]
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
        "type": _audit_type(),
        "subtype": [{"system": SUBTYPE_SYSTEM, "code": code, "display": display}],
        "action": "E",
        "recorded": event.occurred_at.isoformat(),
        "outcome": "0",
        "agent": [
            {
                "type": {"coding": [_agent_type(event.role, interpreter=event.interpreter)]},
                "who": _who(event),
                "requestor": _requestor(event),
            }
        ],
        "source": {"observer": {"display": OBSERVER}},
        "entity": entities,
    }


def _agent_type(role: Role, *, interpreter: bool) -> dict[str, str]:
    if interpreter:  # the subtype's code and display stay the event's
        system, code, display = INTERPRETER_TYPE
        return {"system": system, "code": code, "display": display}
    code, display = AGENT_ROLES[role]
    return {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code, "display": display}


def _who(event: VisitEvent) -> dict[str, str]:
    if event.interpreter and event.role is Role.PATIENT:
        return {"display": "interpreter (guest)"}  # an anonymous joiner: never the visit's patient's reference
    if event.participant:
        return {"reference": event.participant}  # a staff interpreter is named like any clinician
    return {"display": f"{event.role.value} participant"}


def _requestor(event: VisitEvent) -> bool:
    return event.role is not Role.PATIENT and not event.interpreter


def _audit_type() -> dict[str, str]:
    return {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110100",
        "display": "Application Activity",
    }


def if_none_exist(event: VisitEvent) -> str:
    return f"_tag={EVENT_TAG_SYSTEM}|{event.id}"


def _object_type() -> dict[str, str]:
    system = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
    return {"system": system, "code": "2", "display": "System Object"}


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


_text = json.dumps  # a string's JSON (quoted and escaped as in any of the resource's values)
# The resource's fixed parts, serialized once (``audit_event_json``).
_TAG_SYSTEM = _text(EVENT_TAG_SYSTEM)
_TYPE = _compact(_audit_type())
_OBJECT_TYPE = _compact(_object_type())
_SOURCE = _compact({"observer": {"display": OBSERVER}})
_SUBTYPES = {
    kind: _compact([{"system": SUBTYPE_SYSTEM, "code": code, "display": display}])
    for kind, (code, display) in SUBTYPES.items()
}
_AGENT_TYPES = {
    (role, interpreter): _compact(_agent_type(role, interpreter=interpreter))
    for role in Role
    for interpreter in (False, True)
}
