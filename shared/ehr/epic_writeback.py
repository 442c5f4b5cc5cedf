"""Epic ``SetExternalConnectionStatus`` (Telehealth context linking, 2018): connect / disconnect.

Call shape as publicly described: ``GET {Interconnect}/api/epic/2018/Telehealth/ContextLinking/
SetExternalConnectionStatus`` with ``ConferenceID``, ``ExternalID``, ``ExternalIDType``,
``VendorName``, ``ConnectionStatus`` and the ``Epic-Client-ID`` header; authorised here with a
SMART Backend Services token (the OAuth variant), not Basic credentials.

The enum meanings are not public. The values we send, chosen once and kept here:

==================  =====  ==========================================================
parameter           value  meaning we assign
==================  =====  ==========================================================
ConnectionStatus    1      connected (the public sample's value)
ConnectionStatus    2      disconnected
ExternalIDType      1      ExternalID is the provider's FHIR Practitioner id
ExternalIDType      2      ExternalID is the patient's FHIR Patient id (the sample's 2)
==================  =====  ==========================================================

ConferenceID is the CSN. Only what Teams reports is sent: launch events are not (Epic launched the
app, so it knows; the connect follows when Teams' roster shows the person in the call), lobby events
are not (no public "waiting" status), nor a colleague's who never launched the visit (no EHR participant:
a further clinician who launched it is named by their own Practitioner id). A guest interpreter's events
are not sent either: the call's public shape has no participant role, and a guest interpreter has no Epic id,
so the only ids at hand (the patient's) would record the interpreter as the patient. A staff interpreter who
launches from Epic is written like any clinician, under their own Practitioner id (``ExternalIDType`` 1): Epic
knows who they are. Customers whose Epic build uses other values change only this table.
"""

from __future__ import annotations

from shared.ehr.backend_services import BackendServices
from shared.http.outbound import HttpResult, SafeHttp
from shared.kernel.errors import UpstreamRejected
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.writeback.model import WritebackTarget, Written

SYSTEM = "EHR"
PATH = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"
SCOPE = "system/Encounter.write"
CONNECTION_STATUS = {EventKind.CONNECTED: "1", EventKind.DISCONNECTED: "2"}
EXTERNAL_ID_TYPE = {Role.PROVIDER: "1", Role.STAFF: "1", Role.PATIENT: "2"}  # 1: a practitioner, 2: a patient


def interconnect_base(fhir_base_url: str) -> str:
    """``https://host/interconnect-x/api/FHIR/R4`` → ``https://host/interconnect-x``."""
    base = fhir_base_url.rstrip("/")
    index = base.lower().find("/api/fhir/")
    return base[:index] if index >= 0 else base


def participant_id(reference: str) -> str:
    """``Practitioner/123`` → ``123``."""
    return reference.rstrip("/").rsplit("/", 1)[-1]


class EpicConnectionStatus:
    idempotent = False  # SetExternalConnectionStatus has no idempotency key: the worker's ledger guards it

    def __init__(self, http: SafeHttp, backend: BackendServices) -> None:
        self._http = http
        self._backend = backend

    def skips(self, event: VisitEvent) -> bool:
        """Launch and lobby events, a guest interpreter's, and events naming no participant (an unknown colleague).

        A staff interpreter or a further clinician who launched the visit is named by their own Practitioner id.
        """
        return (
            event.source is not Source.GRAPH
            or (event.interpreter and event.role is Role.PATIENT)  # a guest: the only ids at hand are the patient's
            or event.kind not in CONNECTION_STATUS
            or event.role not in EXTERNAL_ID_TYPE
            or not event.participant
        )

    def write(self, event: VisitEvent, target: WritebackTarget) -> Written:
        if self.skips(event) or event.participant is None:
            return Written.SKIPPED
        status = CONNECTION_STATUS[event.kind]
        id_type = EXTERNAL_ID_TYPE[event.role]
        if not event.csn:
            raise UpstreamRejected("The visit has no CSN to use as ConferenceID.", system=SYSTEM, code="no_csn")
        params = {
            "ConferenceID": event.csn,
            "ExternalID": participant_id(event.participant),
            "ExternalIDType": id_type,
            "VendorName": target.vendor_name,
            "ConnectionStatus": status,
        }

        def request(token: str) -> HttpResult:
            return self._http.request(
                "GET",
                interconnect_base(target.fhir_base_url) + PATH,
                params=params,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Epic-Client-ID": target.client_id,
                    "Accept": "application/json",
                },
            )

        self._backend.send(target.fhir_base_url, target.client_id, SCOPE, request, vendor=target.ehr_vendor)
        return Written.WRITTEN
