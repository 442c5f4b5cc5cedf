"""Per-vendor behaviour, in one place: what differs between Epic, Oracle Health and any other SMART 2.x EHR.

Everything else (discovery, PKCE, ``private_key_jwt``, id_token checks, the trusted launch context) is
SMART App Launch and the same for every vendor. A profile says only what the vendor's documentation
makes different (docs/setup.md has a chapter per vendor):

* **Epic** (fhir.epic.com OAuth 2.0 docs; ``shared/reference/smart-and-epic.md`` §9): FDI context tokens
  on the launch URL (``%CSN%``, ``%PERFDEPID%``), the ``Epic-Client-ID`` header on every call,
  ``SetExternalConnectionStatus`` writeback, id_token ``sub`` = the user's FHIR id.
* **Oracle Health** (Millennium; docs.oracle.com "Millennium Authorization Framework", fhir.cerner.com):
  the FHIR base carries the tenant id in its path (``https://fhir-ehr.cerner.com/r4/{tenant}``),
  PowerChart and the patient portal launch with ``iss`` + ``launch`` only (no context tokens), the token
  response carries ``patient``, ``encounter``, ``need_patient_banner`` (a JSON boolean), ``tenant``,
  ``username`` and no appointment; ``sub`` is a username or an opaque id, the user's FHIR id is
  ``fhirUser``; writeback by FHIR ``AuditEvent`` (or off). Patients are served from a separate
  patient-access service root of the same tenant (docs.oracle.com "Service Root URL": Non-Patient
  ``https://fhir-ehr-code.cerner.com/r4/{tenant}``, Patient Access ``https://fhir-myrecord.cerner.com/r4/{tenant}``),
  with its own SMART discovery: a patient-portal launch carries that root as ``iss``.
* **Other SMART 2.x**: the specification only; ``fhirContext`` may carry the Appointment.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.configurations.model import Vendor, WritebackMode
from shared.kernel.i18n import N_, Text

EPIC_CLIENT_ID_HEADER = "Epic-Client-ID"
# The one client authentication the connector uses (README "Configuration portal"): an EHR whose SMART
# configuration lists token_endpoint_auth_methods_supported without it cannot redeem our codes.
CLIENT_AUTH_METHOD = "private_key_jwt"

# Scopes. A provider reads the launch's Encounter and Appointment (the visit, its primary performer) and
# the clinician's Practitioner (their name); on Epic also the Location that confirms departmentId.
_PROVIDER_BASE = "launch openid fhirUser user/Encounter.read user/Appointment.read user/Practitioner.read"
EPIC_PROVIDER_SCOPES = (
    "launch openid fhirUser user/Encounter.read user/Appointment.read user/Location.read user/Practitioner.read"
)
# Oracle grants only scopes named resource by resource (no patient/*.read wildcard in its scope list).
ORACLE_PATIENT_SCOPES = "launch openid fhirUser patient/Patient.read patient/Encounter.read patient/Appointment.read"
PATIENT_SCOPES = "launch openid fhirUser patient/*.read"


@dataclass(frozen=True)
class VendorProfile:
    vendor: Vendor
    provider_context_tokens: str  # what the provider launch record appends to the launch URL ("" = nothing)
    patient_context_tokens: str
    provider_scopes: str
    patient_scopes: str
    writeback_modes: tuple[WritebackMode, ...]
    context_fields: str  # what the EHR's token response must carry for the connector to trust the visit
    provider_launch_point: str  # where clinicians press the button
    patient_launch_point: str
    approval_proof: str  # what the approver's EHR sign-in proves, in the vendor's own terms
    sends_client_id_header: bool = False
    sub_is_fhir_id: bool = False  # the id_token's ``sub`` is the user's FHIR resource id (Epic documents it)
    # Group visits (Epic only: %CONFERENCEID%): separate records whose tokens add the conference id ("": none).
    group_provider_context_tokens: str = ""
    group_patient_context_tokens: str = ""
    group_context_fields: str = ""
    # A separate patient-side FHIR base per tenant (Oracle Health's patient-access service root) is offered.
    patient_fhir_base: bool = False

    @property
    def label(self) -> str:
        return self.vendor.label

    def client_headers(self, client_id: str | None) -> dict[str, str]:
        """Headers that name our client on the EHR's APIs: ``Epic-Client-ID`` for Epic only."""
        return {EPIC_CLIENT_ID_HEADER: client_id} if self.sends_client_id_header and client_id else {}

    def patient_fhir_base_refusal(self, fhir_base_url: str, patient_fhir_base_url: str) -> Text | None:
        """Why ``patient_fhir_base_url`` cannot be this configuration's patient-side FHIR URL (None: it can).

        Both normalised. Only a vendor that has one offers it, it differs from the FHIR URL, and it names the
        same tenant: Oracle puts the tenant id in the last path segment of both service roots. The reason
        follows "Patient-side FHIR URL isn't valid: " (no full stop).
        """
        if not self.patient_fhir_base:
            return N_(
                "%(vendor)s serves patients from the FHIR URL itself: leave the patient-side FHIR URL empty",
                vendor=self.label,
            )
        if patient_fhir_base_url == fhir_base_url:
            return N_("it is the FHIR URL itself: leave it empty, or enter the patient-access service root")
        tenant, patient_tenant = tenant_segment(fhir_base_url), tenant_segment(patient_fhir_base_url)
        if not tenant or tenant != patient_tenant:
            none = N_("(none)")
            return N_(
                "it names tenant %(patient_tenant)s in its path, the FHIR URL tenant %(tenant)s: both must be service "
                "roots of the same tenant",
                patient_tenant=patient_tenant or none,
                tenant=tenant or none,
            )
        return None

    def allows_writeback(self, mode: WritebackMode) -> bool:
        return mode in self.writeback_modes

    def writeback_refusal(self, mode: WritebackMode) -> str | None:
        """Why ``mode`` is not offered for this vendor, in an admin's words (None: it is)."""
        if self.allows_writeback(mode):
            return None
        return N_(
            "%(vendor)s has no %(mode)s writeback: choose %(offered)s.",
            vendor=self.label,
            mode=_MODE_LABELS[mode],
            offered=_either([_MODE_LABELS[m] for m in self.writeback_modes]),
        )


def _either(choices: list[str]) -> str:
    """The choices joined the reader's way ("A or B", "A, B or C"); each may be marked text."""
    if len(choices) == 1:
        return choices[0]
    if len(choices) == 2:
        return N_("%(first)s or %(second)s", first=choices[0], second=choices[1])
    return N_("%(first)s, %(second)s or %(third)s", first=choices[0], second=choices[1], third=_either(choices[2:]))


_MODE_LABELS = {
    WritebackMode.EPIC: "Epic SetExternalConnectionStatus",
    WritebackMode.FHIR_AUDIT_EVENT: "FHIR AuditEvent",
    WritebackMode.NONE: N_("no writeback (off)"),
}


def tenant_segment(fhir_base_url: str) -> str:
    """The last path segment of a FHIR base (Oracle Health: the tenant id, ``/r4/{tenant}``), lower case."""
    return urlsplit(fhir_base_url).path.rstrip("/").rsplit("/", 1)[-1].lower()


# No patient signs in when the approver proves a configuration, so the patient-side URL is proven by what the
# connector itself can check, again at the approver's sign-in: docs/setup.md "Oracle Health".
PATIENT_BASE_PROOF: Text = N_(
    "the patient-side FHIR URL was checked by the connector, not signed in to: it answers SMART discovery with "
    "private_key_jwt for the patient client id, serves FHIR R4 and names the same tenant id in its path; the first "
    "patient launch through it is its first sign-in"
)

_SMART_APPROVAL: Text = N_(
    "the approver signed in to this EHR's SMART authorization server with the provider client id: the FHIR "
    "URL answers SMART discovery, redeems a code with our private_key_jwt and signs a valid id_token"
)

PROFILES: dict[Vendor, VendorProfile] = {
    Vendor.EPIC: VendorProfile(
        vendor=Vendor.EPIC,
        provider_context_tokens="sessionId=%CSN%&departmentId=%PERFDEPID;;; ; ;;NONE;%",
        patient_context_tokens="sessionId=%CSN%",
        provider_scopes=EPIC_PROVIDER_SCOPES,
        patient_scopes=PATIENT_SCOPES,
        writeback_modes=(WritebackMode.EPIC, WritebackMode.FHIR_AUDIT_EVENT, WritebackMode.NONE),
        context_fields="encounter, appointment (launch context); recommended extra field: csn = %CSN%",
        provider_launch_point=N_("Hyperspace / Haiku / Canto (FDI record of the provider app)"),
        patient_launch_point=N_("MyChart (FDI record of the patient app)"),
        approval_proof=N_(
            "%(smart)s; Epic also checks the client id is activated for this instance", smart=_SMART_APPROVAL
        ),
        sends_client_id_header=True,
        sub_is_fhir_id=True,
        group_provider_context_tokens=(
            "sessionId=%CSN%&conferenceId=%CONFERENCEID%&departmentId=%PERFDEPID;;; ; ;;NONE;%"
        ),
        group_patient_context_tokens="sessionId=%CSN%&conferenceId=%CONFERENCEID%",
        group_context_fields="encounter, appointment (launch context); recommended extra fields: csn = %CSN%, "
        "conferenceId = %CONFERENCEID% (else the Appointment's identifiers must carry the conference id)",
    ),
    Vendor.ORACLE: VendorProfile(
        vendor=Vendor.ORACLE,
        provider_context_tokens="",
        patient_context_tokens="",
        provider_scopes=_PROVIDER_BASE,
        patient_scopes=ORACLE_PATIENT_SCOPES,
        writeback_modes=(WritebackMode.FHIR_AUDIT_EVENT, WritebackMode.NONE),
        context_fields="patient, encounter (PowerChart launches from the appointment's encounter)",
        provider_launch_point=N_("PowerChart (SMART application activity: table of contents or MPage component)"),
        patient_launch_point=N_("the patient portal, and email/SMS join links (no account)"),
        approval_proof=N_("%(smart)s for this tenant (the tenant id in the FHIR URL's path)", smart=_SMART_APPROVAL),
        patient_fhir_base=True,
    ),
    Vendor.SMART: VendorProfile(
        vendor=Vendor.SMART,
        provider_context_tokens="",
        patient_context_tokens="",
        provider_scopes=_PROVIDER_BASE,
        patient_scopes=PATIENT_SCOPES,
        writeback_modes=(WritebackMode.FHIR_AUDIT_EVENT, WritebackMode.NONE),
        context_fields="encounter, or fhirContext with the Appointment",
        provider_launch_point=N_("the EHR's clinician app (SMART EHR launch)"),
        patient_launch_point=N_("the EHR's patient portal (SMART EHR launch)"),
        approval_proof=_SMART_APPROVAL,
    ),
}


def profile_for(vendor: Vendor | str) -> VendorProfile:
    """The profile of a configuration's vendor (an unknown name is a ``ValueError``)."""
    return PROFILES[Vendor(vendor)]
