"""What an EHR sandbox instance is: its base URL, registered OAuth clients, seed and fault settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.ehr.flavours import EPIC, Flavour, flavour

FHIR_PATH = "/api/FHIR/R4"
AUTHORIZE_PATH = "/oauth2/authorize"
TOKEN_PATH = "/oauth2/token"
JWKS_PATH = "/api/epic/2019/Security/Open/PublicKeys/530005/OIDC"
SCS_PATH = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"

# Launch context an EHR launch's token response carries (Epic: encounter, its department, the appointment
# when there is one, and the user's login department).
LAUNCH_CONTEXT_FIELDS = ("encounter", "appointment", "location", "loginDepartment")

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True)
class RegisteredClient:
    """An app registered with this EHR (Epic: a client id on App Orchard / Showroom, synced to the instance).

    Authentication: ``jwks_url`` (preferred; fetched over HTTP, cached, refetched on an unknown
    ``kid``) or a static ``jwks`` for ``private_key_jwt``; ``client_secret`` for
    ``client_secret_basic`` / ``client_secret_post``; none of them makes a public client.
    ``scopes`` limits what may be granted (``None``: any scope this EHR understands).
    ``epic_apis`` lists the non-FHIR web services enabled for the client id, e.g.
    ``"SetExternalConnectionStatus"``.

    What an EHR launch's token response carries is configured per client, as an Epic integration
    is: ``launch_context`` names the context fields returned (of ``LAUNCH_CONTEXT_FIELDS``; the
    patient always is), and ``token_fields`` adds extra fields written like context tokens, e.g.
    ``csn=%CSN%`` ("additional fields ... based on the integration configuration"). By default no
    extra field is returned; the launch URL's context tokens never are.
    """

    client_id: str
    redirect_uris: tuple[str, ...] = ()
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    client_secret: str | None = None
    name: str = ""
    grant_types: tuple[str, ...] = (GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS)
    scopes: tuple[str, ...] | None = None
    epic_apis: tuple[str, ...] = ("SetExternalConnectionStatus",)
    launch_context: tuple[str, ...] = LAUNCH_CONTEXT_FIELDS
    token_fields: str = ""

    @property
    def is_public(self) -> bool:
        return not (self.jwks_url or self.jwks or self.client_secret)

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "jwks_url": self.jwks_url,
            "jwks": self.jwks,
            "client_secret": self.client_secret,
            "name": self.name,
            "grant_types": list(self.grant_types),
            "scopes": None if self.scopes is None else list(self.scopes),
            "epic_apis": list(self.epic_apis),
            "launch_context": list(self.launch_context),
            "token_fields": self.token_fields,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegisteredClient:
        client_id = data.get("client_id")
        if not isinstance(client_id, str) or not client_id.strip():
            raise ValueError("client_id is required")

        def strings(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            value = data.get(key)
            if value is None:
                return default
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of strings")
            return tuple(value)

        scopes = data.get("scopes")
        jwks = data.get("jwks")
        if jwks is not None and not isinstance(jwks, dict):
            raise ValueError("jwks must be a JWK Set object")
        return cls(
            client_id=client_id.strip(),
            redirect_uris=strings("redirect_uris", ()),
            jwks_url=data.get("jwks_url") or None,
            jwks=jwks,
            client_secret=data.get("client_secret") or None,
            name=str(data.get("name") or ""),
            grant_types=strings("grant_types", (GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS)),
            scopes=None if scopes is None else strings("scopes", ()),
            epic_apis=strings("epic_apis", ("SetExternalConnectionStatus",)),
            launch_context=strings("launch_context", LAUNCH_CONTEXT_FIELDS),
            token_fields=str(data.get("token_fields") or ""),
        )


@dataclass
class Faults:
    """Fault-injection switches; every field off by default. Also settable via ``POST /_sandbox/faults``.

    ``latency_ms`` delays every call; ``error_rate`` answers that fraction with 500/503;
    ``throttle_rate`` answers that fraction with 429 + ``Retry-After: retry_after``;
    ``timeout_rate`` hangs that fraction for ``hang_seconds`` (then 504);
    ``outage_until`` (Unix seconds) fails every call with 503 until then;
    ``fail_next`` fails the next N calls with ``fail_status``. ``seed`` makes the dice reproducible.
    """

    latency_ms: int = 0
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: int = 1
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    outage_until: float | None = None
    fail_next: int = 0
    fail_status: int = 503
    seed: int = 0
    paths: tuple[str, ...] = ("/api/", "/oauth2/")

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "throttle_rate": self.throttle_rate,
            "retry_after": self.retry_after,
            "timeout_rate": self.timeout_rate,
            "hang_seconds": self.hang_seconds,
            "outage_until": self.outage_until,
            "fail_next": self.fail_next,
            "fail_status": self.fail_status,
            "seed": self.seed,
            "paths": list(self.paths),
        }


@dataclass(frozen=True)
class EhrConfig:
    """One sandbox Epic instance. ``base_url`` is the Interconnect origin, e.g. ``http://127.0.0.1:7300``.

    ``today`` fixes the clinic day (default: the UTC date when the app starts).
    ``state_file`` persists integration records, clients, AuditEvents, writebacks and the signing key.
    """

    base_url: str
    clients: tuple[RegisteredClient, ...] = ()
    environment: str = "test"
    organization: str = "Contoso Health"
    today: dt.date | None = None
    faults: Faults = field(default_factory=Faults)
    state_file: Path | None = None
    access_token_seconds: int = 3600
    backend_token_seconds: int = 300
    launch_seconds: int = 300
    code_seconds: int = 300
    connection_statuses: frozenset[str] | None = None  # None: any non-empty value is accepted
    flavour: str = EPIC  # which vendor's documented behaviour to follow (``sandbox.ehr.flavours``)
    fhir_version: str = "4.0.1"  # the CapabilityStatement's fhirVersion (R4)

    def __post_init__(self) -> None:
        flavour(self.flavour)  # an unknown flavour fails at once

    @property
    def spec(self) -> Flavour:
        return flavour(self.flavour)

    @property
    def origin(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def fhir_base(self) -> str:
        return self.origin + self.spec.fhir_path

    @property
    def patient_fhir_base(self) -> str:
        """The FHIR base patient launches carry as ``iss``: the flavour's patient-side one, else the FHIR base."""
        return self.origin + self.spec.patient_fhir_path if self.spec.patient_fhir_path else self.fhir_base

    @property
    def fhir_bases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.fhir_base, self.patient_fhir_base)))

    def base_of(self, path: str) -> str:
        """The FHIR base a request path is under (the patient-side one or the FHIR base)."""
        patient = self.spec.patient_fhir_path
        return self.patient_fhir_base if patient and (path + "/").startswith(patient + "/") else self.fhir_base

    def authorize_url_for(self, fhir_base: str) -> str:
        """The authorize endpoint a FHIR base's discovery names (Oracle: the patient persona's for patients)."""
        if fhir_base != self.fhir_base and self.spec.patient_authorize_path:
            return self.origin + self.spec.patient_authorize_path
        return self.authorize_url

    @property
    def issuer(self) -> str:
        """The id_token ``iss``: ``https://<Interconnect>/oauth2`` for Epic (May 2020+), the flavour's otherwise."""
        return self.origin + self.spec.issuer_path

    @property
    def authorize_url(self) -> str:
        return self.origin + self.spec.authorize_path

    @property
    def token_url(self) -> str:
        return self.origin + self.spec.token_path

    @property
    def jwks_url(self) -> str:
        return self.origin + self.spec.jwks_path
