"""The seeded clinic: practitioners, patients, departments and today's video visits, as FHIR R4 JSON.

Practitioners carry the same names as the providers seeded in Entra (``sandbox.seed``), so a
provider launch resolves to the Entra user of the same name. Ids are fixed; times are
computed for ``today`` so the schedule is always current.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

# Epic-style identifier systems (instance OIDs are per customer; these follow Epic's published shape).
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
CSN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8"
MRN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
EPIC_USER_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.697780"
DEPARTMENT_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.686980"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
# Epic does not publish the identifier system of a group visit's conference id; this one is the sandbox's own
# (the connector requires no system: any identifier of the launch's Appointment but its CSN).
CONFERENCE_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.99"
VIRTUAL_SERVICE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"


@dataclass(frozen=True)
class Department:
    id: str  # FHIR Location id
    epic_id: str  # Epic department id (what %PERFDEPID% expands to)
    name: str


@dataclass(frozen=True)
class EhrUser:
    """Somebody who signs in to Hyperspace (a Practitioner) or MyChart (a Patient)."""

    id: str  # FHIR id of the Practitioner or Patient
    resource_type: str  # "Practitioner" | "Patient"
    given: str
    family: str
    prefix: str = ""
    username: str = ""  # Epic user id / MyChart username
    role: str = ""
    npi: str = ""
    login_department: str = ""  # Location id
    gender: str = "unknown"
    birth_date: str = ""
    mrn: str = ""

    @property
    def display(self) -> str:
        return " ".join(part for part in (self.prefix, self.given, self.family) if part)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class Visit:
    """One scheduled video visit: an Appointment and its Encounter, sharing the CSN."""

    appointment_id: str
    encounter_id: str
    csn: str
    patient_id: str | None  # None: a clinician-to-clinician consult (practitioners only)
    practitioner_id: str
    department_id: str
    start: dt.datetime
    minutes: int
    conference_id: str  # = CSN, or a shared id for a group visit
    reason: str
    consultant_id: str | None = None  # a consult's second practitioner
    interpreter_id: str | None = None  # a staff interpreter booked on the visit (launches it with their own account)

    @property
    def is_group(self) -> bool:
        return self.conference_id != self.csn

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=self.minutes)


DEPARTMENTS = (
    Department("e-loc-virtual-care", "10501101", "Contoso Virtual Care"),
    Department("e-loc-family-medicine", "10501102", "Contoso Family Medicine"),
)

PRACTITIONERS = (
    EhrUser("e-prac-smith", "Practitioner", "Jordan", "Smith", "Dr.", "JSMITH", "Physician", "1234567893",
            "e-loc-virtual-care", "female"),
    EhrUser("e-prac-lee", "Practitioner", "Morgan", "Lee", "Dr.", "MLEE", "Physician", "1245319599",
            "e-loc-virtual-care", "male"),
    EhrUser("e-prac-nopolicy", "Practitioner", "Casey", "Nopolicy", "Dr.", "CNOPOLICY", "Physician", "1144221847",
            "e-loc-family-medicine", "other"),
    EhrUser("e-prac-kim", "Practitioner", "Robin", "Kim", "Nurse", "RKIM", "Registered Nurse", "1003000126",
            "e-loc-virtual-care", "female"),
    EhrUser("e-prac-analyst", "Practitioner", "Erin", "Analyst", "", "EANALYST", "Epic analyst (approver)", "",
            "e-loc-virtual-care", "unknown"),
    # An affiliate's clinician: same Epic, but a Microsoft 365 account in another tenant (Fabrikam).
    EhrUser("e-prac-garcia", "Practitioner", "Quinn", "Garcia", "Dr.", "QGARCIA", "Physician", "1234567802",
            "e-loc-family-medicine", "other"),
    # A staff interpreter with an Epic account: joins a visit by their own launch.
    EhrUser("e-prac-souza", "Practitioner", "Ana", "Souza", "", "ASOUZA", "Interpreter", "",
            "e-loc-virtual-care", "female"),
)  # fmt: skip

PATIENTS = (
    EhrUser("e-pat-rivera", "Patient", "Alex", "Rivera", username="alex.rivera", gender="female",
            birth_date="1984-03-12", mrn="E1001"),
    EhrUser("e-pat-patel", "Patient", "Sam", "Patel", username="sam.patel", gender="male",
            birth_date="1977-11-02", mrn="E1002"),
    EhrUser("e-pat-chen", "Patient", "Taylor", "Chen", username="taylor.chen", gender="female",
            birth_date="1992-07-21", mrn="E1003"),
    EhrUser("e-pat-okafor", "Patient", "Jamie", "Okafor", username="jamie.okafor", gender="male",
            birth_date="1969-01-30", mrn="E1004"),
    EhrUser("e-pat-novak", "Patient", "Riley", "Novak", username="riley.novak", gender="other",
            birth_date="2001-05-09", mrn="E1005"),
    EhrUser("e-pat-whitfield", "Patient", "Dana", "Whitfield", username="dana.whitfield", gender="female",
            birth_date="1958-09-17", mrn="E1006"),
)  # fmt: skip

# (practitioner, patient, hour UTC, minute, minutes, reason); group visits share a conference id below.
_SCHEDULE = (
    ("e-prac-smith", "e-pat-rivera", 9, 0, 20, "Follow-up: hypertension"),
    ("e-prac-smith", "e-pat-patel", 10, 0, 20, "Medication review"),
    ("e-prac-smith", "e-pat-chen", 14, 30, 30, "New patient video visit"),
    ("e-prac-lee", "e-pat-okafor", 9, 30, 20, "Post-operative check"),
    ("e-prac-lee", "e-pat-novak", 11, 0, 20, "Lab results"),
    ("e-prac-lee", "e-pat-rivera", 15, 0, 30, "Group session: diabetes education"),
    ("e-prac-lee", "e-pat-whitfield", 15, 0, 30, "Group session: diabetes education"),
    ("e-prac-nopolicy", "e-pat-whitfield", 10, 30, 20, "Annual wellness visit"),
    ("e-prac-nopolicy", "e-pat-patel", 13, 0, 20, "Follow-up: asthma"),
    ("e-prac-kim", "e-pat-chen", 8, 30, 15, "Nurse intake"),
    ("e-prac-kim", "e-pat-novak", 12, 0, 15, "Vaccination counselling"),
    ("e-prac-garcia", "e-pat-okafor", 16, 0, 20, "Affiliate clinic follow-up"),
    ("e-prac-lee", "e-pat-chen", 15, 0, 30, "Group session: diabetes education"),
    ("e-prac-smith", None, 17, 0, 20, "Clinician consult: cardiology"),
    ("e-prac-smith", "e-pat-okafor", 18, 0, 30, "Group session: heart health"),
    ("e-prac-smith", "e-pat-novak", 18, 0, 30, "Group session: heart health"),
)
GROUP_CONFERENCE_ID = "9000001"
GROUP_CSNS = frozenset({"1000006", "1000007", "1000013"})
# A second group visit (another conference id, so another meeting): Dr. Smith's heart health session.
SECOND_CONFERENCE_ID = "9000002"
SECOND_GROUP_CSNS = frozenset({"1000015", "1000016"})
# A clinician-to-clinician consult (no patient): Dr. Smith's appointment, with Dr. Lee as the consultant.
CONSULT_CSN = "1000014"
CONSULTANT = "e-prac-lee"
# The group visit's third patient needs an interpreter: the staff interpreter is booked on their appointment.
INTERPRETED_CSN = "1000013"
INTERPRETER = "e-prac-souza"


def _schedule(today: dt.date) -> tuple[Visit, ...]:
    visits = []
    for n, (practitioner, patient, hour, minute, minutes, reason) in enumerate(_SCHEDULE, start=1):
        csn = f"{1000000 + n}"
        practitioner_user = next(p for p in PRACTITIONERS if p.id == practitioner)
        visits.append(
            Visit(
                appointment_id=f"e-appt-{n:03d}",
                encounter_id=f"e-enc-{n:03d}",
                csn=csn,
                patient_id=patient,
                practitioner_id=practitioner,
                department_id=practitioner_user.login_department,
                start=dt.datetime.combine(today, dt.time(hour, minute), tzinfo=dt.UTC),
                minutes=minutes,
                conference_id=(
                    GROUP_CONFERENCE_ID
                    if csn in GROUP_CSNS
                    else SECOND_CONFERENCE_ID
                    if csn in SECOND_GROUP_CSNS
                    else csn
                ),
                reason=reason,
                consultant_id=CONSULTANT if csn == CONSULT_CSN else None,
                interpreter_id=INTERPRETER if csn == INTERPRETED_CSN else None,
            )
        )
    return tuple(visits)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Clinic:
    """Today's clinic, with FHIR R4 renderings. Immutable once built."""

    def __init__(self, today: dt.date, fhir_base: str, *, visit_number_system: str = CSN_SYSTEM) -> None:
        self.today = today
        self.fhir_base = fhir_base
        # Epic names a visit's contact by its CSN under Epic's OID; other vendors number visits their own way.
        self.visit_number_system = visit_number_system
        self.departments = DEPARTMENTS
        self.practitioners = PRACTITIONERS
        self.patients = PATIENTS
        self.visits = _schedule(today)

    # --- lookups -------------------------------------------------------------------------------
    def user(self, user_id: str) -> EhrUser | None:
        return next((u for u in (*self.practitioners, *self.patients) if u.id == user_id), None)

    def practitioner(self, practitioner_id: str) -> EhrUser | None:
        return next((p for p in self.practitioners if p.id == practitioner_id), None)

    def patient(self, patient_id: str | None) -> EhrUser | None:
        return next((p for p in self.patients if p.id == patient_id), None)

    def department(self, location_id: str) -> Department | None:
        return next((d for d in self.departments if d.id == location_id), None)

    def visit_by_appointment(self, appointment_id: str) -> Visit | None:
        return next((v for v in self.visits if v.appointment_id == appointment_id), None)

    def visits_for_practitioner(self, practitioner_id: str) -> list[Visit]:
        booked = (v for v in self.visits if practitioner_id in (v.practitioner_id, v.consultant_id, v.interpreter_id))
        return sorted(booked, key=lambda v: v.start)

    def visits_for_patient(self, patient_id: str) -> list[Visit]:
        return sorted((v for v in self.visits if v.patient_id == patient_id), key=lambda v: v.start)

    def conference_ids(self) -> frozenset[str]:
        """What ``SetExternalConnectionStatus`` accepts as ``ConferenceID``: every CSN and group conference id."""
        return frozenset({v.csn for v in self.visits} | {v.conference_id for v in self.visits})

    def participants(self, conference_id: str) -> frozenset[str]:
        """The practitioners and patients on the visits a conference id (CSN or group conference id) names."""
        visits = [v for v in self.visits if conference_id in (v.csn, v.conference_id)]
        people = {v.practitioner_id for v in visits} | {v.patient_id for v in visits if v.patient_id}
        return frozenset(people | {p for v in visits for p in (v.consultant_id, v.interpreter_id) if p})

    def fhir_user_url(self, user: EhrUser) -> str:
        return f"{self.fhir_base}/{user.reference}"

    # --- FHIR renderings ----------------------------------------------------------------------
    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        if resource_type == "Practitioner":
            return [self._practitioner(p) for p in self.practitioners]
        if resource_type == "Patient":
            return [self._patient(p) for p in self.patients]
        if resource_type == "Location":
            return [self._location(d) for d in self.departments]
        if resource_type == "Appointment":
            return [self._appointment(v) for v in self.visits]
        if resource_type == "Encounter":
            return [self._encounter(v) for v in self.visits]
        return []

    @staticmethod
    def _name(user: EhrUser) -> dict[str, Any]:
        name: dict[str, Any] = {"use": "usual", "text": user.display, "family": user.family, "given": [user.given]}
        if user.prefix:
            name["prefix"] = [user.prefix]
        return name

    def _practitioner(self, user: EhrUser) -> dict[str, Any]:
        identifiers = [
            {"use": "usual", "system": EPIC_USER_SYSTEM, "value": user.username, "type": {"text": "EXTERNAL"}}
        ]
        if user.npi:
            identifiers.append({"use": "usual", "system": NPI_SYSTEM, "value": user.npi, "type": {"text": "NPI"}})
        return {
            "resourceType": "Practitioner",
            "id": user.id,
            "identifier": identifiers,
            "active": True,
            "name": [self._name(user)],
            "gender": user.gender,
        }

    def _patient(self, user: EhrUser) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "id": user.id,
            "identifier": [
                {"use": "usual", "system": MRN_SYSTEM, "value": user.mrn, "type": {"text": "EPI"}},
            ],
            "active": True,
            "name": [{"use": "official", "text": user.display, "family": user.family, "given": [user.given]}],
            "gender": user.gender,
            "birthDate": user.birth_date,
        }

    def _location(self, department: Department) -> dict[str, Any]:
        return {
            "resourceType": "Location",
            "id": department.id,
            "identifier": [{"use": "usual", "system": DEPARTMENT_SYSTEM, "value": department.epic_id}],
            "status": "active",
            "name": department.name,
            "mode": "instance",
        }

    def _ref(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        display = ""
        if resource_type in ("Patient", "Practitioner"):
            user = self.user(resource_id)
            display = user.display if user else ""
        elif resource_type == "Location":
            department = self.department(resource_id)
            display = department.name if department else ""
        return {"reference": f"{resource_type}/{resource_id}", "display": display}

    def _appointment(self, visit: Visit) -> dict[str, Any]:
        identifiers = [{"use": "usual", "system": self.visit_number_system, "value": visit.csn}]
        if visit.is_group:
            identifiers.append({"use": "secondary", "system": CONFERENCE_SYSTEM, "value": visit.conference_id})
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "id": visit.appointment_id,
            "identifier": identifiers,
            "status": "booked",
            "serviceType": [{"text": "Video visit"}],
            "appointmentType": {"text": "Video Visit"},
            "reasonCode": [{"text": visit.reason}],
            "description": visit.reason,
            "start": _iso(visit.start),
            "end": _iso(visit.end),
            "minutesDuration": visit.minutes,
            "extension": [{"url": VIRTUAL_SERVICE_EXTENSION, "valueString": "Microsoft Teams"}],
            "participant": [
                {"actor": self._ref("Patient", visit.patient_id or ""), "required": "required", "status": "accepted"},
                {
                    "type": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "PPRF", "display": "primary performer",
                    }]}],
                    "actor": self._ref("Practitioner", visit.practitioner_id),
                    "required": "required",
                    "status": "accepted",
                },
                {"actor": self._ref("Location", visit.department_id), "required": "required", "status": "accepted"},
            ],
        }  # fmt: skip
        participants: list[dict[str, Any]] = appointment["participant"]
        if visit.patient_id is None:
            participants.pop(0)
        # Appointment.participant.type (encounter-participant-type): v3 ParticipationType's consultant, and FHIR's
        # own participant-type "translator" for the booked interpreter.
        for practitioner, system, code, display in (
            (visit.consultant_id, f"{TERMINOLOGY}/v3-ParticipationType", "CON", "consultant"),
            (visit.interpreter_id, f"{TERMINOLOGY}/participant-type", "translator", "Translator"),
        ):
            if practitioner:
                participants.insert(-1, {
                    "type": [{"coding": [{"system": system, "code": code, "display": display}]}],
                    "actor": self._ref("Practitioner", practitioner),
                    "required": "required",
                    "status": "accepted",
                })  # fmt: skip
        return appointment

    def _encounter(self, visit: Visit) -> dict[str, Any]:
        encounter: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": visit.encounter_id,
            "identifier": [{"use": "usual", "system": self.visit_number_system, "value": visit.csn}],
            "status": "planned",
            "class": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "VR",
                "display": "virtual",
            },
            "type": [{"text": "Video Visit"}],
            "subject": self._ref("Patient", visit.patient_id or ""),
            "participant": [
                {
                    "type": [{"coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "PPRF", "display": "primary performer",
                    }]}],
                    "period": {"start": _iso(visit.start), "end": _iso(visit.end)},
                    "individual": self._ref("Practitioner", visit.practitioner_id),
                }
            ],
            "appointment": [{"reference": f"Appointment/{visit.appointment_id}"}],
            "period": {"start": _iso(visit.start), "end": _iso(visit.end)},
            "location": [{"location": self._ref("Location", visit.department_id)}],
        }  # fmt: skip
        if visit.patient_id is None:
            del encounter["subject"]  # a consult between clinicians is about no patient's encounter of their own
        if visit.interpreter_id:  # Encounter.participant.type: encounter-participant-type, FHIR's "translator"
            encounter["participant"].append({
                "type": [{"coding": [{
                    "system": f"{TERMINOLOGY}/participant-type", "code": "translator", "display": "Translator",
                }]}],
                "individual": self._ref("Practitioner", visit.interpreter_id),
            })  # fmt: skip
        return encounter
