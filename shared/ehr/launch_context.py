"""What a completed EHR launch tells us: who launched, for which patient and appointment.

Two sources, trusted differently (docs: README "Trusted launch context"):

* what the EHR asserted on the back channel — the token response (``encounter``, ``appointment``,
  ``fhirContext``, ``patient``, Epic's ``location`` and ``loginDepartment``, and extra fields the
  integration is configured to return, such as ``csn``) and the validated id_token — is the EHR's
  own word (``asserted_context``);
* the launch URL's context tokens (``sessionId=%CSN%``, ``departmentId=%PERFDEPID%``) travel
  through the user's browser, where anyone can edit them: each is used only when it agrees with
  what the EHR asserted (``confirmed_context``), e.g. the CSN is an identifier of the launch's
  Encounter read with the launch's own token. A disagreement is refused, never repaired.

Pure functions; the reads are the launch service's (``shared/launch/context_check.py``).
Tokens Epic did not substitute (``%CSN%``), empty values and ``NONE`` count as absent, in the
URL and in the token response alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from shared.ehr.launch_params import context_value
from shared.ehr.vendors import EPIC_PROVIDER_SCOPES
from shared.ehr.vendors import PATIENT_SCOPES as VENDOR_PATIENT_SCOPES
from shared.kernel.errors import BadRequest, ErrorPage, Forbidden
from shared.kernel.i18n import N_
from shared.visits.model import Colleague, VisitContext, appointment_key

USER_TYPES_FOR_PROVIDERS = frozenset({"Practitioner", "PractitionerRole"})
PRIMARY_PERFORMER = "PPRF"
_MAX_ID = 256

# Scopes of Epic's launches (each vendor's are in ``shared.ehr.vendors``). A provider reads the launch's
# Encounter and Appointment (the CSN that confirms the launch URL, the primary performer who organizes the
# meeting), the Location (the department that confirms departmentId) and Practitioners (the clinician's
# name); a patient's patient/*.read reaches the same resources in their own compartment.
PROVIDER_SCOPES = EPIC_PROVIDER_SCOPES
PATIENT_SCOPES = VENDOR_PATIENT_SCOPES

# An EHR whose id_token names the user by ``sub`` alone, where ``sub`` is not documented as a FHIR id
# (OpenID: "locally unique within the issuer"; Oracle: a username or an opaque id): the user key is this
# pseudo-type and the subject. Stable for as long as the EHR keeps the subject; the issuer is implied by the
# configuration (one FHIR URL, one authorization server), so (configuration, key) is globally unique.
SUBJECT_USER_TYPE = "OpenIdSubject"

# Token response fields that carry the CSN when the integration is configured to return it
# (Epic: "additional fields ... based on the integration configuration"); ``csn`` is the one the
# integration records ask for.
TOKEN_CSN_FIELDS = ("csn", "sessionId")
# The token response field that carries a group visit's conference id when the integration returns it
# (the group-visit records ask for ``conferenceId`` = ``%CONFERENCEID%``).
TOKEN_CONFERENCE_FIELDS = ("conferenceId",)

# Epic identifier systems are OIDs under Epic's root, with a customer-specific part in the middle and
# the item that identifies the kind of id at the end: the CSN is ``….698084.8`` (public Epic payloads:
# urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8). Matching the root and the tail, never the customer
# part, recognises it in every Epic instance without per-hospital configuration.
EPIC_OID_ROOT = "urn:oid:1.2.840.114350."
CSN_OID_SUFFIX = ".698084.8"


@dataclass(frozen=True)
class LaunchContext:
    """References and ids only, each confirmed by the EHR; ``user`` is e.g. ``Practitioner/123``."""

    user: str
    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None
    login_department: str | None = None
    department: str | None = None
    conference: str | None = None  # a group visit's conference id, confirmed by the EHR (one meeting per id)

    @property
    def group_key(self) -> str | None:
        """What decides a group visit's meeting: its confirmed conference id (None: a visit of its own)."""
        return f"conference:{self.conference}" if self.conference else None

    @property
    def appointment_key(self) -> str:
        try:
            return appointment_key(csn=self.csn, appointment=self.appointment, encounter=self.encounter)
        except ValueError:
            raise NoAppointment() from None

    def visit_context(self, *, provider: str | None, colleague: Colleague | None = None) -> VisitContext:
        return VisitContext(
            csn=self.csn,
            appointment=self.appointment,
            encounter=self.encounter,
            patient=f"Patient/{self.patient}" if self.patient else None,
            provider=provider,
            confirmed=True,
            colleagues=(colleague,) if colleague is not None else (),
        )

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in vars(self).items() if v}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LaunchContext:
        return cls(**{k: str(v) for k, v in data.items() if k in cls.__dataclass_fields__ and v})


@dataclass(frozen=True)
class AssertedContext:
    """What the EHR itself said in this launch: the token response and the id_token."""

    user: str
    csn: str | None = None
    appointment: str | None = None
    encounter: str | None = None
    patient: str | None = None
    location: str | None = None  # the encounter's department, a FHIR Location id
    login_department: str | None = None
    conference: str | None = None  # an extra token field ``conferenceId`` (group-visit records)

    @property
    def names_a_visit(self) -> bool:
        return bool(self.csn or self.appointment or self.encounter)

    @property
    def references(self) -> tuple[str, ...]:
        """The launch's Encounter and Appointment, the resources whose identifiers confirm a CSN."""
        found = [f"Encounter/{self.encounter}"] if self.encounter else []
        return (*found, *([f"Appointment/{self.appointment}"] if self.appointment else []))

    @property
    def names_a_conference(self) -> bool:
        """Something the EHR named could confirm a conference id: the field itself, or a launch resource."""
        return bool(self.conference or self.references)


# --- errors with their own pages ---------------------------------------------------------------------


class NoAppointment(BadRequest):
    code = "launch_without_appointment"

    def __init__(self) -> None:
        super().__init__(
            N_(
                "This launch does not say which appointment it is for. The EHR must send encounter or appointment "
                "context in its token response (Epic: launch from the appointment or encounter)."
            )
        )


_RELAUNCH = N_("Please start the visit again from Epic or MyChart. If this keeps happening, tell your IT support.")


class LaunchContextMismatch(Forbidden):
    """A launch URL context token contradicts what the EHR asserted: the link was edited, or the record is wrong."""

    code = "launch_context_mismatch"

    def __init__(self, token: str) -> None:
        super().__init__(f"The launch link's {token} does not match the visit the EHR signed you in for.")
        self.token = token
        asserted = {
            "sessionId": N_(
                "the CSN the EHR returned, or the identifiers of the launch's Encounter and Appointment "
                "read with the launch's own access token"
            ),
            "departmentId": N_("the identifiers of the department (Location) the EHR returned for the launch"),
            "conferenceId": N_(
                "the conferenceId the EHR returned, or the identifiers of the launch's Appointment "
                "(named by the token response or by the launch's Encounter) read with the launch's own access token"
            ),
        }[token]
        self.page = ErrorPage(
            N_("This visit link does not match your appointment"),
            N_(
                "This link does not match the visit you signed in for, so it was not opened. %(relaunch)s",
                relaunch=_RELAUNCH,
            ),
            help=(
                N_(
                    "For the analyst: the launch URL's %(token)s context token is not among %(asserted)s. "
                    "Either the link was edited in the browser, or the FDI record's context tokens do not match "
                    "the integration records in the configuration portal.",
                    token=token,
                    asserted=asserted,
                ),
                N_("The refusal is logged with hashed identifiers under the correlation id below."),
            ),
        )


class UnverifiableLaunchContext(Forbidden):
    """Only the launch URL says which visit this is: it cannot decide the meeting, so the launch is refused."""

    code = "launch_context_unverifiable"

    def __init__(self, reason: str) -> None:
        super().__init__("The EHR did not confirm which visit this launch is for.")
        self.reason = reason
        why = {
            "no_ehr_context": N_(
                "The EHR's token response names no encounter and no appointment, and carries no CSN "
                "field, so the CSN in the launch URL (sessionId) cannot be confirmed."
            ),
            "unreadable": N_(
                "The launch's Encounter and Appointment could not be read with the launch's own access "
                "token, so the CSN in the launch URL (sessionId) cannot be confirmed."
            ),
            "no_csn_identifier": N_(
                "The launch's Encounter and Appointment carry no CSN identifier (an Epic OID "
                "ending in .698084.8), so the CSN in the launch URL (sessionId) cannot be confirmed."
            ),
            "no_conference_source": N_(
                "The EHR's token response carries no conferenceId field and names no "
                "encounter or appointment, so the group visit's conference id in the launch URL (conferenceId) "
                "cannot be confirmed."
            ),
            "no_conference_identifier": N_(
                "The launch's Appointment could not be read, or carries no identifier "
                "other than its CSN, so the group visit's conference id in the launch URL (conferenceId) cannot be "
                "confirmed."
            ),
        }[reason]
        self.page = ErrorPage(
            N_("The EHR did not confirm this visit"),
            N_(
                "The visit could not be started because the EHR did not confirm which appointment it is for. "
                "%(relaunch)s",
                relaunch=_RELAUNCH,
            ),
            help=(
                N_("For the analyst: %(why)s", why=why),
                N_(
                    "Configure one trusted source: launch from the appointment or encounter so that the token response "
                    "carries encounter (and appointment) context, and grant the provider app user/Encounter.read and "
                    "user/Appointment.read (the patient app patient/*.read), as the integration records list them; "
                    "or add the extra token response field csn = %CSN% to the integration."
                ),
            ),
        )


# --- the back channel ---------------------------------------------------------------------------------


def text_field(fields: Mapping[str, Any], key: str) -> str | None:
    """A short string or number from the token response, else None (booleans, objects, ``%CSN%``, ``NONE``)."""
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = context_value(str(value))
    return text if text and len(text) <= _MAX_ID else None


def asserted_context(
    fields: Mapping[str, Any], claims: Mapping[str, Any], *, provider_launch: bool, sub_is_fhir_id: bool = True
) -> AssertedContext:
    """The token response (read leniently: string booleans, ``__epic.*`` keys, extras) and the id_token."""
    return AssertedContext(
        user=user_reference(claims, provider_launch=provider_launch, sub_is_fhir_id=sub_is_fhir_id),
        csn=next((v for v in (text_field(fields, k) for k in TOKEN_CSN_FIELDS) if v), None),
        appointment=_bare_id(text_field(fields, "appointment"), "Appointment")
        or _from_fhir_context(fields, "Appointment"),
        encounter=_bare_id(text_field(fields, "encounter"), "Encounter") or _from_fhir_context(fields, "Encounter"),
        patient=_bare_id(text_field(fields, "patient"), "Patient"),
        location=_bare_id(text_field(fields, "location"), "Location"),
        login_department=_bare_id(text_field(fields, "loginDepartment"), "Location"),
        conference=next((v for v in (text_field(fields, k) for k in TOKEN_CONFERENCE_FIELDS) if v), None),
    )


def _from_fhir_context(fields: Mapping[str, Any], resource_type: str) -> str | None:
    """The first ``Type/id`` of SMART's ``fhirContext`` (2.0: strings; 2.1: objects with ``reference``)."""
    entries = fields.get("fhirContext")
    if not isinstance(entries, list):
        return None
    for entry in entries[:20]:
        reference = entry.get("reference") if isinstance(entry, Mapping) else entry
        if not isinstance(reference, str):
            continue
        value = _bare_id(text_field({"r": reference}, "r"), resource_type)
        if value and "/" not in value:
            return value
    return None


# --- the browser's tokens, confirmed ----------------------------------------------------------------


def csn_identifiers(resource: Mapping[str, Any]) -> frozenset[str]:
    """The CSNs among an Encounter's or Appointment's identifiers (Epic OID ending in ``.698084.8``)."""
    return frozenset(value for system, value in _identifiers(resource) if _is_csn_system(system))


def _is_csn_system(system: str) -> bool:
    return system.startswith(EPIC_OID_ROOT) and system.endswith(CSN_OID_SUFFIX)


def conference_identifiers(appointment: Mapping[str, Any]) -> frozenset[str]:
    """The values an Appointment's identifiers could give a group visit's conference id: all but its CSNs.

    Epic does not publish the identifier system of a group visit's conference id, so no system is required;
    each value is the EHR's own word about this patient's (or clinician's) appointment. A CSN names one
    visit, never a group, so it is not taken for a conference id.
    """
    return frozenset(value for system, value in _identifiers(appointment) if not _is_csn_system(system))


def identifier_values(resource: Mapping[str, Any]) -> frozenset[str]:
    """Every identifier value of a resource (a Location's: its department ids, whatever their system)."""
    return frozenset(value for _, value in _identifiers(resource))


def _identifiers(resource: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    identifiers = resource.get("identifier")
    for identifier in identifiers if isinstance(identifiers, list) else ():
        if not isinstance(identifier, Mapping):
            continue
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(value, str) and value.strip():
            yield (system if isinstance(system, str) else ""), value.strip()


def confirmed_context(
    asserted: AssertedContext,
    *,
    session_id: str | None,
    department_id: str | None,
    csns: frozenset[str] | None,
    department_ids: frozenset[str] | None,
    conference_id: str | None = None,
    conference_ids: frozenset[str] | None = None,
) -> LaunchContext:
    """The launch's context, with each URL context token kept only when the EHR's word confirms it.

    ``csns`` are the CSN identifiers of the launch's Encounter and Appointment as read with the
    launch's own token (``None``: not read or not readable); ``department_ids`` the identifiers of
    the department the EHR named (``None``: unknown). A URL CSN the EHR contradicts raises
    ``LaunchContextMismatch``; one nothing can confirm raises ``UnverifiableLaunchContext``. A
    departmentId that cannot be confirmed is dropped: it decides nothing; a contradicted one is
    refused like the CSN, as it shows an edited link.
    """
    csn = asserted.csn
    if session_id is not None:
        if asserted.csn is not None:
            if session_id != asserted.csn:
                raise LaunchContextMismatch("sessionId")
        elif not asserted.references:
            raise UnverifiableLaunchContext("no_ehr_context")
        elif csns is None:
            raise UnverifiableLaunchContext("unreadable")
        elif not csns:
            raise UnverifiableLaunchContext("no_csn_identifier")
        elif session_id not in csns:
            raise LaunchContextMismatch("sessionId")
        csn = session_id
    elif csn is None and csns is not None and len(csns) == 1:
        [csn] = csns  # the EHR's own records name it: the same key whether or not the URL carried it
    department = None
    if department_id is not None and department_ids is not None:
        if department_id not in department_ids:
            raise LaunchContextMismatch("departmentId")
        department = department_id
    return _with_conference(
        LaunchContext(
            user=asserted.user,
            csn=csn,
            appointment=asserted.appointment,
            encounter=asserted.encounter,
            patient=asserted.patient,
            login_department=asserted.login_department,
            department=department,
        ),
        asserted,
        conference_id=conference_id,
        conference_ids=conference_ids,
    )


def _with_conference(
    context: LaunchContext,
    asserted: AssertedContext,
    *,
    conference_id: str | None,
    conference_ids: frozenset[str] | None,
) -> LaunchContext:
    """The launch's group visit: the URL's conferenceId only when the EHR confirms it, else the EHR's own one.

    Two people are put in one meeting only on the EHR's word: the token response's ``conferenceId``, or an
    identifier of the launch's Appointment read with the launch's own token (``conference_ids``; None: not
    read or not readable). A URL conference id the EHR contradicts is refused like an edited CSN.
    """
    if conference_id is None:
        return replace(context, conference=asserted.conference)
    if asserted.conference is not None:
        if conference_id != asserted.conference:
            raise LaunchContextMismatch("conferenceId")
        return replace(context, conference=conference_id)
    if not asserted.names_a_conference:
        raise UnverifiableLaunchContext("no_conference_source")
    if not conference_ids:
        raise UnverifiableLaunchContext("no_conference_identifier")
    if conference_id not in conference_ids:
        raise LaunchContextMismatch("conferenceId")
    return replace(context, conference=conference_id)


def user_reference(claims: Mapping[str, Any], *, provider_launch: bool, sub_is_fhir_id: bool = True) -> str:
    """``Type/id`` of the EHR user, from ``fhirUser`` (absolute or relative URL) or ``sub``.

    Without ``fhirUser``, ``sub`` is a FHIR id only where the vendor documents it (Epic: the user's Practitioner
    or Patient id); elsewhere the key is ``OpenIdSubject/<sub>``: it names no FHIR resource (nothing is read
    with it) and is not refused as a non-provider, as the EHR's provider client registration decides who may
    launch the provider app.
    """
    reference: str | None = None
    fhir_user = claims.get("fhirUser")
    if isinstance(fhir_user, str) and fhir_user:
        segments = [s for s in urlsplit(fhir_user).path.split("/") if s]
        if len(segments) >= 2:
            reference = f"{segments[-2]}/{segments[-1]}"
    if reference is None:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise BadRequest(N_("The EHR did not say who launched the visit."), code="launch_without_user")
        if sub_is_fhir_id:
            reference = f"{'Practitioner' if provider_launch else 'Patient'}/{sub}"
        else:
            reference = f"{SUBJECT_USER_TYPE}/{sub}"
    if len(reference) > _MAX_ID:
        raise BadRequest(N_("The EHR user id is too long."), code="launch_without_user")
    kind = reference.split("/", 1)[0]
    if provider_launch and kind not in USER_TYPES_FOR_PROVIDERS and kind != SUBJECT_USER_TYPE:
        raise Forbidden(
            N_(
                "This launch is for clinicians, but the EHR signed in a patient or proxy. Patients launch from MyChart."
            ),
            code="provider_launch_by_non_provider",
        )
    return reference


def primary_performer(resource: Mapping[str, Any]) -> str | None:
    """The primary performer (``PPRF``) Practitioner of an Appointment or Encounter, else None."""
    for practitioner, codings in _practitioners(resource):
        if any(code == PRIMARY_PERFORMER for _, code in codings):
            return practitioner
    return None


# Who "is facilitating communication with the patient": FHIR's participant type (Encounter.participant.type and
# Appointment.participant.type both allow it) and HL7 v3's interpreter.
INTERPRETER_TYPES = frozenset(
    {
        ("http://terminology.hl7.org/CodeSystem/participant-type", "translator"),
        ("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "INTPRTER"),
    }
)


def books_as_interpreter(resource: Mapping[str, Any], practitioner: str) -> bool:
    """The Appointment or Encounter names ``practitioner`` ("Practitioner/123") as its interpreter."""
    return any(
        who == practitioner and any(coding in INTERPRETER_TYPES for coding in codings)
        for who, codings in _practitioners(resource)
    )


def _practitioners(resource: Mapping[str, Any]) -> Iterator[tuple[str, set[tuple[Any, Any]]]]:
    """Each participant that is a Practitioner: ("Practitioner/<id>", its type codings as (system, code))."""
    for participant in resource.get("participant") or ():
        if not isinstance(participant, Mapping):
            continue
        codings = {
            (coding.get("system"), coding.get("code"))
            for concept in participant.get("type") or ()
            if isinstance(concept, Mapping)
            for coding in concept.get("coding") or ()
            if isinstance(coding, Mapping)
        }
        actor = participant.get("actor") or participant.get("individual")
        reference = actor.get("reference") if isinstance(actor, Mapping) else None
        if isinstance(reference, str):
            segments = [s for s in reference.split("/") if s]
            if len(segments) >= 2 and segments[-2] == "Practitioner":
                yield f"Practitioner/{segments[-1]}", codings


def _bare_id(value: str | None, resource_type: str) -> str | None:
    if value and value.startswith(f"{resource_type}/"):
        return value.removeprefix(f"{resource_type}/") or None
    return value
