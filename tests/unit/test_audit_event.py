"""The FHIR AuditEvent built for each visit event."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from shared.ehr.audit_event import (
    EVENT_TAG_SYSTEM,
    SUBTYPES,
    audit_event_body,
    audit_event_json,
    build_audit_event,
    if_none_exist,
)
from shared.http.upstream import error_for_response, error_for_transport, retry_after_seconds
from shared.kernel.errors import UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.visits.events import EventKind, Role, Source, VisitEvent


def event(kind: EventKind = EventKind.CONNECTED, role: Role = Role.PATIENT, **extra: str) -> VisitEvent:
    return VisitEvent(
        configuration_id="cfg",
        geography="americas",
        visit_key="k" * 64,
        kind=kind,
        role=role,
        occurred_at=datetime(2026, 11, 25, 15, 0, tzinfo=UTC),
        source=Source.GRAPH,
        **extra,  # type: ignore[arg-type]
    )


def test_connected_patient_event() -> None:
    resource = json.loads(
        build_audit_event(
            event(participant="Patient/456", encounter="E1", appointment="A1", csn="1853")
        ).model_dump_json()
    )
    assert resource["resourceType"] == "AuditEvent"
    assert resource["subtype"][0]["code"] == "participant-connected"
    assert resource["agent"][0]["who"] == {"reference": "Patient/456"}
    assert resource["agent"][0]["requestor"] is False
    refs = [e["what"].get("reference") for e in resource["entity"]]
    assert refs[:2] == ["Encounter/E1", "Appointment/A1"]
    assert resource["meta"]["tag"] == [{"system": EVENT_TAG_SYSTEM, "code": event().id}]
    assert resource["recorded"].startswith("2026-11-25T15:00:00")


@pytest.mark.parametrize(
    ("kind", "code"),
    [(EventKind.LOBBY, "participant-in-lobby"), (EventKind.DISCONNECTED, "participant-disconnected")],
)
def test_subtype_follows_the_event_kind(kind: EventKind, code: str) -> None:
    resource = json.loads(build_audit_event(event(kind, Role.PROVIDER)).model_dump_json())
    assert resource["subtype"][0]["code"] == code
    assert resource["agent"][0]["type"]["coding"][0]["code"] == "PPRF"
    assert resource["agent"][0]["requestor"] is True


def test_no_names_or_clinical_content() -> None:
    text = build_audit_event(event(participant="Patient/456")).model_dump_json()
    assert "name" not in json.loads(text)["agent"][0]


def test_conditional_create_header_names_the_event() -> None:
    assert if_none_exist(event()) == f"_tag={EVENT_TAG_SYSTEM}|{event().id}"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, None), (201, None), (400, UpstreamRejected), (404, UpstreamRejected), (408, UpstreamUnavailable),
     (429, UpstreamThrottled), (500, UpstreamUnavailable), (503, UpstreamUnavailable)],
)  # fmt: skip
def test_response_classification(status: int, kind: type | None) -> None:
    error = error_for_response(httpx.Response(status, headers={"Retry-After": "3"}), system="EHR")
    assert (type(error) if error else None) is kind


def test_retry_after_forms() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "2.5"}).headers) == 2.5
    assert (
        retry_after_seconds(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}).headers) == 0
    )
    assert retry_after_seconds(httpx.Response(429).headers) is None


def test_retry_after_accepts_every_rfc_9110_form_and_refuses_nonsense() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=120)
    assert 100 < (retry_after_seconds({"Retry-After": format_datetime(soon, usegmt=True)}) or 0) <= 120
    assert 100 < (retry_after_seconds({"retry-after": soon.strftime("%A, %d-%b-%y %H:%M:%S GMT")}) or 0) <= 120
    assert 100 < (retry_after_seconds({"RETRY-AFTER": soon.strftime("%a %b %d %H:%M:%S %Y")}) or 0) <= 120
    assert retry_after_seconds({"Retry-After": "120"}) == 120
    assert retry_after_seconds({"Retry-After": "-5"}) == 0
    for nonsense in ("soon", "inf", "nan", ""):
        assert retry_after_seconds({"Retry-After": nonsense}) is None


def test_transport_errors_are_retryable() -> None:
    assert error_for_transport(httpx.ReadTimeout("t"), system="EHR").retryable
    assert "reached" in error_for_transport(httpx.ConnectError("c"), system="EHR").message


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(
    "references",
    [{}, {"participant": "Practitioner/eP1"}, {"participant": "Patient/p-1", "encounter": "E1", "appointment": "A1",
                                              "csn": "1853"}],
)  # fmt: skip
def test_the_json_the_worker_posts_is_a_valid_r4b_audit_event_of_the_same_content(
    kind: EventKind, role: Role, references: dict[str, str]
) -> None:
    """The worker posts plain JSON (no per-event pydantic cost): every shape it sends validates as R4B."""
    built = event(kind, role, **references)
    posted = json.loads(audit_event_json(built))
    validated = json.loads(build_audit_event(built).model_dump_json(exclude_none=True))
    assert posted["resourceType"] == "AuditEvent"
    assert _normalised(posted) == _normalised(validated)


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("interpreter", [False, True])
@pytest.mark.parametrize(
    "references",
    [{}, {"participant": "Practitioner/eP1"}, {"encounter": "E1"}, {"appointment": "A1", "csn": "1853"},
     {"participant": 'Patient/"quoted"\\ \u00e9\u4e2d</script>', "encounter": "E\n1", "appointment": "A\u20281",
      "csn": "18\"53"}],
)  # fmt: skip
def test_the_posted_text_is_exactly_the_compact_json_of_the_body(
    kind: EventKind, role: Role, interpreter: bool, references: dict[str, str]
) -> None:
    """``audit_event_json`` serializes the fixed parts once: the text must still be the body's own JSON, byte for
    byte, whatever the event's values hold (quotes, backslashes, non-ASCII, line separators)."""
    built = replace(event(kind, role, **references), interpreter=interpreter)
    assert audit_event_json(built) == json.dumps(audit_event_body(built), separators=(",", ":"))


def _normalised(resource: dict[str, object]) -> str:
    data = dict(resource)
    recorded = str(data.pop("recorded"))
    data["recorded"] = datetime.fromisoformat(recorded.replace("Z", "+00:00")).isoformat()
    return json.dumps(data, sort_keys=True)


@pytest.mark.parametrize("kind", list(EventKind))
def test_a_staff_interpreter_is_an_agent_of_type_translator_named_by_their_own_reference(kind: EventKind) -> None:
    interpreting = VisitEvent(
        "cfg", "americas", "k" * 64, kind, Role.STAFF, datetime(2026, 11, 25, 15, 0, tzinfo=UTC), Source.GRAPH,
        participant="Practitioner/e-prac-souza", csn="1853", interpreter=True,
    )  # fmt: skip
    posted = json.loads(audit_event_json(interpreting))
    [agent] = posted["agent"]
    assert agent["type"]["coding"][0]["code"] == "translator"
    assert agent["who"] == {"reference": "Practitioner/e-prac-souza"} and agent["requestor"] is False
    assert posted["subtype"][0]["code"] == SUBTYPES[kind][0]  # the event's own kind, not the agent's type
    assert _normalised(posted) == _normalised(
        json.loads(build_audit_event(interpreting).model_dump_json(exclude_none=True))
    )


@pytest.mark.parametrize("kind", list(EventKind))
def test_a_guest_interpreter_is_an_agent_of_type_translator_never_the_patients_reference(kind: EventKind) -> None:
    interpreting = VisitEvent(
        "cfg", "americas", "k" * 64, kind, Role.PATIENT, datetime(2026, 11, 25, 15, 0, tzinfo=UTC), Source.GRAPH,
        participant="Patient/456", csn="1853", attendee="0123456789abcdef", interpreter=True,
    )  # fmt: skip
    posted = json.loads(audit_event_json(interpreting))
    agent = posted["agent"][0]
    assert agent["type"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/participant-type",
            "code": "translator",
            "display": "Translator",
        }
    ]
    assert agent["who"] == {"display": "interpreter (guest)"} and agent["requestor"] is False
    assert posted["subtype"][0]["code"] == SUBTYPES[kind][0]
    assert "Patient/456" not in json.dumps(posted)  # the visit's CSN still names the visit, as for anyone
    assert _normalised(posted) == _normalised(
        json.loads(build_audit_event(interpreting).model_dump_json(exclude_none=True))
    )
