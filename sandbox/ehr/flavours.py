"""The sandbox EHR's vendor flavours: the same clinic, served as each vendor's documentation describes it.

``EhrConfig(flavour="epic" | "oracle" | "smart")``. Only what a SMART client can observe differs:

* **epic** (fhir.epic.com OAuth 2.0 docs; ``shared/reference/smart-and-epic.md`` §9): FHIR base
  ``/api/FHIR/R4`` on the Interconnect origin, ``/oauth2/authorize`` and ``/oauth2/token``, id_token ``iss`` =
  ``{origin}/oauth2`` signed RS256 with ``kid`` = base64url SHA-256 of the key, ``fhirUser`` absolute; the token
  response carries ``encounter``, ``location``, ``appointment``, ``loginDepartment``, ``__epic.dstu2.patient``
  and ``need_patient_banner`` as the *string* ``"false"``; ``SetExternalConnectionStatus``; CSN identifiers
  under Epic's OID.
* **oracle** (Oracle Health Millennium: docs.oracle.com "Get well-known SMART configuration", fhir.cerner.com
  authorization and OpenID Connect pages, Cerner FHIR developers' published token responses): the tenant id is
  a path segment of both the FHIR base (``/r4/{tenant}``) and the authorization server
  (``/tenants/{tenant}/protocols/oauth2/profiles/smart-v1/...``); discovery names ``jwks_uri`` (``/jwk``) but no
  ``issuer``; ``token_endpoint_auth_methods_supported`` = ``client_secret_basic``, ``private_key_jwt`` (RS384,
  ES384); the token response carries ``patient``, ``encounter``, ``need_patient_banner`` as a JSON boolean,
  ``smart_style_url``, ``tenant``, ``username``, ``user`` and ``expires_in`` 570, and **no** appointment; the
  id_token's ``sub`` is an opaque id, ``fhirUser`` the absolute Practitioner/Patient URL. (In production the
  authorization server is another host, ``authorization.cerner.com``; here one origin serves both.) Patients
  have a service root of their own, as docs.oracle.com "Service Root URL" lists it (Non-Patient
  ``fhir-ehr-code.cerner.com/r4/{tenant}``, Patient Access ``fhir-myrecord.cerner.com/r4/{tenant}``): another
  host in production, here the path ``/myrecord/r4/{tenant}`` of the same origin, with the **same tenant id**,
  its own SMART discovery (the patient persona's authorize endpoint) and CapabilityStatement; patient
  records launch with it as ``iss``, and a launch's ``aud`` must be the root it was issued with.
* **smart** (a plain SMART App Launch 2 server, as the spec allows it to be): ``/fhir``, ``/auth/authorize``,
  ``/auth/token``; id_tokens **without** ``kid`` (one key in the JWKS), ``fhirUser`` **relative**
  (``Practitioner/123``), no ``appointment`` field: the Appointment travels in SMART 2.1 ``fhirContext``.
"""

from __future__ import annotations

from dataclasses import dataclass

EPIC = "epic"
ORACLE = "oracle"
SMART = "smart"
ORACLE_TENANT = "5b0e5e1c-7f2a-4d7e-9c53-0a1d2e3f4a5b"  # a sandbox tenant id, in the path as Millennium puts it

_EPIC_CAPABILITIES = (
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "context-banner", "context-style", "context-ehr-patient",
    "context-ehr-encounter", "context-standalone-patient", "permission-patient", "permission-user",
    "permission-v1", "permission-v2", "sso-openid-connect", "authorize-post",
)  # fmt: skip
# Captured from Oracle's public sandbox tenant's smart-configuration.
_ORACLE_CAPABILITIES = (
    "authorize-post", "launch-ehr", "launch-standalone", "client-public", "client-confidential-asymmetric",
    "client-confidential-symmetric", "sso-openid-connect", "context-banner", "context-style",
    "context-ehr-patient", "context-ehr-encounter", "permission-patient", "permission-user", "permission-offline",
    "permission-online", "permission-v1", "permission-v2",
)  # fmt: skip
_SMART_CAPABILITIES = (
    "launch-ehr", "launch-standalone", "client-confidential-asymmetric", "context-ehr-patient",
    "context-ehr-encounter", "permission-patient", "permission-user", "permission-v2", "sso-openid-connect",
)  # fmt: skip


@dataclass(frozen=True)
class Flavour:
    name: str
    product: str  # shown on the sandbox's pages
    provider_app: str  # where clinicians press Begin virtual visit
    patient_app: str
    fhir_path: str
    authorize_path: str
    token_path: str
    jwks_path: str
    issuer_path: str  # id_token iss (its OpenID configuration is served under it)
    discovery_names_issuer: bool
    auth_methods: tuple[str, ...]
    signing_algs: tuple[str, ...]
    capabilities: tuple[str, ...]
    launch_context: tuple[str, ...]  # token response context fields this vendor can return at all
    id_token_kid: bool = True
    relative_fhir_user: bool = False
    banner_as_string: bool = False  # Epic's published responses: "false"; SMART's type is boolean
    epic_extras: bool = False  # __epic.dstu2.patient, Epic's style URL, SetExternalConnectionStatus, Epic OIDs
    oracle_extras: bool = False  # tenant, username, user
    appointment_in_fhir_context: bool = False
    expires_in: int | None = None  # fixed access token lifetime (Oracle: 570 s); None: the config's
    api_prefixes: tuple[str, ...] = ()  # request paths that count as the EHR's APIs (faults, request counts)
    patient_fhir_path: str = ""  # a separate patient-side FHIR base (Oracle's patient access); "": the FHIR base
    patient_authorize_path: str = ""  # the patient persona's authorize endpoint, named by that base's discovery


FLAVOURS: dict[str, Flavour] = {
    EPIC: Flavour(
        name=EPIC,
        product="Epic",
        provider_app="Hyperspace",
        patient_app="MyChart",
        fhir_path="/api/FHIR/R4",
        authorize_path="/oauth2/authorize",
        token_path="/oauth2/token",
        jwks_path="/api/epic/2019/Security/Open/PublicKeys/530005/OIDC",
        issuer_path="/oauth2",
        discovery_names_issuer=True,
        auth_methods=("client_secret_post", "client_secret_basic", "private_key_jwt"),
        signing_algs=("RS256", "RS384", "RS512", "ES256", "ES384"),
        capabilities=_EPIC_CAPABILITIES,
        launch_context=("encounter", "appointment", "location", "loginDepartment"),
        banner_as_string=True,
        epic_extras=True,
        api_prefixes=("/api/", "/oauth2/"),
    ),
    ORACLE: Flavour(
        name=ORACLE,
        product="Oracle Health",
        provider_app="PowerChart",
        patient_app="Patient portal",
        fhir_path=f"/r4/{ORACLE_TENANT}",
        authorize_path=f"/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/personas/provider/authorize",
        token_path=f"/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/token",
        jwks_path="/jwk",
        issuer_path=f"/tenants/{ORACLE_TENANT}/oidc/idsps/{ORACLE_TENANT}",
        discovery_names_issuer=False,
        auth_methods=("client_secret_basic", "private_key_jwt"),
        signing_algs=("RS384", "ES384"),
        capabilities=_ORACLE_CAPABILITIES,
        launch_context=("encounter",),
        oracle_extras=True,
        expires_in=570,
        api_prefixes=("/r4/", "/myrecord/r4/", "/tenants/", "/jwk"),
        patient_fhir_path=f"/myrecord/r4/{ORACLE_TENANT}",
        patient_authorize_path=f"/tenants/{ORACLE_TENANT}/protocols/oauth2/profiles/smart-v1/personas/patient/authorize",
    ),
    SMART: Flavour(
        name=SMART,
        product="SMART EHR",
        provider_app="Clinician app",
        patient_app="Patient app",
        fhir_path="/fhir",
        authorize_path="/auth/authorize",
        token_path="/auth/token",
        jwks_path="/auth/jwks",
        issuer_path="/auth",
        discovery_names_issuer=True,
        auth_methods=("private_key_jwt",),
        signing_algs=("RS384", "ES384"),
        capabilities=_SMART_CAPABILITIES,
        launch_context=("encounter", "appointment"),
        id_token_kid=False,
        relative_fhir_user=True,
        appointment_in_fhir_context=True,
        api_prefixes=("/fhir", "/auth/"),
    ),
}


def flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise ValueError(f"unknown EHR flavour {name!r}; one of {', '.join(FLAVOURS)}") from None
