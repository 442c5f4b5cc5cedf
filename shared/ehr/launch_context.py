"""What a completed EHR launch tells us: who launched, for which patient and appointment.

Pure functions over the token response (read leniently: Epic sends string booleans, vendor
prefixed keys and per-integration extras), the validated id_token claims and the context
tokens carried through ``state`` from the launch URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from shared.kernel.errors import BadRequest, Forbidden
from shared.visits.model import VisitContext, appointment_key

USER_TYPES_FOR_PROVIDERS = frozenset({"Practitioner", "PractitionerRole"})
PRIMARY_PERFORMER = "PPRF"
_MAX_ID = 256


@dataclass(frozen=True)
class LaunchContext:
    """References and ids only; ``user`` is e.g. ``Practitioner/123`` or ``Patient/456``."""

    user: str
    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None
    login_department: str | None = None
    department: str | None = None

    @property
    def appointment_key(self) -> str:
        try:
            return appointment_key(csn=self.csn, appointment=self.appointment, encounter=self.encounter)
        except ValueError:
            raise NoAppointment() from None

    def visit_context(self, *, provider: str | None) -> VisitContext:
        return VisitContext(
            csn=self.csn,
            appointment=self.appointment,
            encounter=self.encounter,
            patient=f"Patient/{self.patient}" if self.patient else None,
            provider=provider,
        )

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchContext:
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__ and v})


class NoAppointment(BadRequest):
    code = "launch_without_appointment"

    def __init__(self) -> None:
        super().__init__(
            "This launch does not say which appointment it is for. The EHR integration record must add the "
            "sessionId=%CSN% context token, or the EHR must send appointment or encounter context."
        )


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    """A short string or number from the token response, else None (booleans and objects are not ids)."""
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and len(text) <= _MAX_ID else None


def launch_context(
    fields: Mapping[str, Any],
    claims: Mapping[str, Any],
    *,
    session_id: str | None,
    department_id: str | None,
    provider_launch: bool,
) -> LaunchContext:
    """Combine the token response, the id_token and the launch URL's context tokens."""
    user = user_reference(claims, provider_launch=provider_launch)
    return LaunchContext(
        user=user,
        # The CSN arrives as a launch-URL context token (sessionId=%CSN%) or as an extra token field.
        csn=session_id or text_field(fields, "sessionId") or text_field(fields, "csn"),
        appointment=_bare_id(text_field(fields, "appointment"), "Appointment"),
        encounter=_bare_id(text_field(fields, "encounter"), "Encounter"),
        patient=_bare_id(text_field(fields, "patient"), "Patient"),
        login_department=text_field(fields, "loginDepartment"),
        department=department_id,
    )


def user_reference(claims: Mapping[str, Any], *, provider_launch: bool) -> str:
    """``Type/id`` of the EHR user, from ``fhirUser`` (absolute or relative URL) or ``sub``."""
    reference: str | None = None
    fhir_user = claims.get("fhirUser")
    if isinstance(fhir_user, str) and fhir_user:
        segments = [s for s in urlsplit(fhir_user).path.split("/") if s]
        if len(segments) >= 2:
            reference = f"{segments[-2]}/{segments[-1]}"
    if reference is None:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise BadRequest("The EHR did not say who launched the visit.", code="launch_without_user")
        reference = f"{'Practitioner' if provider_launch else 'Patient'}/{sub}"
    if len(reference) > _MAX_ID:
        raise BadRequest("The EHR user id is too long.", code="launch_without_user")
    if provider_launch and reference.split("/", 1)[0] not in USER_TYPES_FOR_PROVIDERS:
        raise Forbidden(
            "This launch is for clinicians, but the EHR signed in a patient or proxy. Patients launch from MyChart.",
            code="provider_launch_by_non_provider",
        )
    return reference


def primary_performer(resource: Mapping[str, Any]) -> str | None:
    """The primary performer (``PPRF``) Practitioner of an Appointment or Encounter, else None."""
    for participant in resource.get("participant") or ():
        if not isinstance(participant, Mapping):
            continue
        types = participant.get("type") or ()
        codes = {
            coding.get("code")
            for concept in types
            if isinstance(concept, Mapping)
            for coding in concept.get("coding") or ()
            if isinstance(coding, Mapping)
        }
        if PRIMARY_PERFORMER not in codes:
            continue
        actor = participant.get("actor") or participant.get("individual")
        reference = actor.get("reference") if isinstance(actor, Mapping) else None
        if isinstance(reference, str):
            segments = [s for s in reference.split("/") if s]
            if len(segments) >= 2 and segments[-2] == "Practitioner":
                return f"Practitioner/{segments[-1]}"
    return None


def _bare_id(value: str | None, resource_type: str) -> str | None:
    if value and value.startswith(f"{resource_type}/"):
        return value.removeprefix(f"{resource_type}/") or None
    return value
