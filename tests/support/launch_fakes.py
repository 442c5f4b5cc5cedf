"""In-process stand-ins for the launch's collaborators, each checking what the real one checks.

The EHR checks PKCE (S256), single-use codes, the redirect URI and echoes the nonce; the
Microsoft sign-in hands back the carried launch; the meetings are createOrGet-idempotent per
(organizer, externalId). Every call is counted, so tests can assert that nothing left.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.configurations.model import Vendor
from shared.kernel.errors import InvalidIdToken, UpstreamRejected, UpstreamThrottled, UpstreamUnavailable
from shared.kernel.identifiers import random_token
from shared.kernel.settings import Geography
from shared.launch.service import EhrSignInRejected
from shared.microsoft.entra import PortalIdentity
from shared.microsoft.teams import AccessPolicyMissing, Meeting


@dataclass(frozen=True)
class Config:
    id: str
    tenant_id: str
    fhir_base_url: str
    geography: Geography = Geography.EMEA
    provider_client_id: str = "provider-client"
    patient_client_id: str = "patient-client"
    is_approved: bool = True
    shared_with: tuple[str, ...] = ()
    vendor: Vendor = Vendor.EPIC
    organization: str = "Contoso Health"
    patient_fhir_base_url: str = ""

    def launch_base(self, iss: str, *, patient: bool) -> str | None:
        wanted = iss.rstrip("/")
        if wanted == self.fhir_base_url.rstrip("/"):
            return wanted
        if patient and self.patient_fhir_base_url and wanted == self.patient_fhir_base_url.rstrip("/"):
            return wanted
        return None


class Configurations:
    def __init__(self, *configs: Config) -> None:
        self.configs = {c.id: c for c in configs}
        self.lookups = 0

    def find_for_launch(self, configuration_id: str, iss: str, *, patient: bool = False) -> Config | None:
        self.lookups += 1
        config = self.configs.get(configuration_id)
        if config is None or config.launch_base(iss, patient=patient) is None:
            return None
        return config


@dataclass(frozen=True)
class SmartConfig:
    fhir_base_url: str
    authorization_endpoint: str
    token_endpoint: str
    capabilities: tuple[str, ...] = ("launch-ehr", "authorize-post")


@dataclass
class Login:
    claims: dict[str, Any]
    fields: dict[str, Any]


@dataclass
class FakeEhr:
    base: str = "https://ehr.example/interconnect/api/FHIR/R4"
    requests: list[str] = field(default_factory=list)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    advertise_post: bool = True
    unreachable: bool = False

    def discover(
        self, fhir_base_url: str, *, client_id: str | None = None, vendor: Vendor | None = None
    ) -> SmartConfig:
        self.requests.append("discover")
        if self.unreachable:
            raise UpstreamUnavailable("The EHR could not be reached.", system="EHR")
        capabilities = ("launch-ehr", "authorize-post") if self.advertise_post else ("launch-ehr",)
        return SmartConfig(
            fhir_base_url, "https://ehr.example/oauth2/authorize", "https://ehr.example/oauth2/token", capabilities
        )

    def authorize(self, request_url: str, fields: Mapping[str, str] | None, login: Login) -> str:
        """What the EHR's authorize endpoint does: remember the request, return a code."""
        params = dict(fields) if fields else {k: v[0] for k, v in parse_qs(urlsplit(request_url).query).items()}
        code = random_token(16)
        self.codes[code] = {"params": params, "login": login}
        return code

    def exchange_code(
        self, config: SmartConfig, *, client_id: str, code: str, redirect_uri: str, code_verifier: str
    ) -> Any:
        self.requests.append("token")
        issued = self.codes.pop(code, None)
        if issued is None:
            raise EhrSignInRejected("invalid_grant")
        params = issued["params"]
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, params["code_challenge"]) or params["redirect_uri"] != redirect_uri:
            raise EhrSignInRejected("invalid_grant")
        if params["client_id"] != client_id:
            raise EhrSignInRejected("invalid_client")
        login: Login = issued["login"]
        claims = {"nonce": params.get("nonce"), "aud": client_id, **login.claims}
        return Tokens(access_token=random_token(), id_token=f"id:{code}", fields=login.fields, claims=claims)

    def validate_id_token(self, config: SmartConfig, id_token: str, *, client_id: str, nonce: str | None) -> Any:
        self.requests.append("id_token")
        claims = _ID_TOKENS.get(id_token)
        if claims is None or claims.get("aud") != client_id:
            raise InvalidIdToken("it was issued for another application")
        if claims.get("nonce") != nonce:
            raise InvalidIdToken("its nonce does not match this sign-in")
        return claims

    def read(self, config: SmartConfig, reference: str, *, access_token: str) -> Any:
        self.requests.append(f"read {reference.split('/')[0]}")
        if reference not in self.resources:
            raise UpstreamRejected("not found", system="EHR", code="http_404")
        return self.resources[reference]


_ID_TOKENS: dict[str, dict[str, Any]] = {}


class Tokens:
    def __init__(self, *, access_token: str, id_token: str, fields: dict[str, Any], claims: dict[str, Any]) -> None:
        self.access_token = access_token
        self.id_token = id_token
        self.fields = {"access_token": access_token, "id_token": id_token, **fields}
        _ID_TOKENS[id_token] = claims


@dataclass
class FakeSignIn:
    """The one-time Microsoft 365 sign-in: ``user`` is who signs in when the browser gets there."""

    user: PortalIdentity | None = None
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    begun: int = 0

    def begin(
        self,
        redirect_uri: str,
        *,
        browser_binding: str | None,
        login_hint: str | None = None,
        carry: Mapping[str, Any] | None = None,
        state: str | None = None,
    ) -> str:
        self.begun += 1
        state = state or random_token()
        self.pending[state] = {"carry": dict(carry or {}), "redirect_uri": redirect_uri, "binding": browser_binding}
        return f"https://login.example/organizations/oauth2/v2.0/authorize?state={state}"

    def complete_with_carry(
        self, auth_response: Mapping[str, str], *, browser_binding: str | None
    ) -> tuple[PortalIdentity, dict[str, Any]]:
        from shared.kernel.errors import StateError

        entry = self.pending.pop(auth_response.get("state", ""), None)
        if entry is None:
            raise StateError("This sign-in link is not valid. Please start again.", code="state_unknown")
        if entry["binding"] is not None and entry["binding"] != browser_binding:
            raise StateError("This sign-in was not started in this browser.", code="state_not_bound")
        assert self.user is not None
        return self.user, entry["carry"]


@dataclass
class FakeMeetings:
    tenant_id: str
    store: dict[tuple[str, str, str], Meeting]
    calls: list[str]
    fail_with: Exception | None = None

    def create_or_get_meeting(
        self, *, organizer_object_id: str, external_id: str, subject: str, start: datetime, end: datetime
    ) -> Meeting:
        self.calls.append(f"createOrGet {organizer_object_id}")
        if self.fail_with is not None:
            raise self.fail_with
        key = (self.tenant_id, organizer_object_id, external_id)
        if key not in self.store:
            n = len(self.store) + 1
            self.store[key] = Meeting(id=f"meeting-{n}", join_web_url=f"https://teams.example/l/meetup-join/{n}")
        return self.store[key]

    def secure_lobby(self, *, organizer_object_id: str, meeting_id: str) -> None:
        self.calls.append(f"lobby {meeting_id}")


@dataclass
class Graph:
    store: dict[tuple[str, str, str], Meeting] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    def meetings_for(self, tenant_id: str) -> FakeMeetings:
        return FakeMeetings(tenant_id, self.store, self.calls, self.fail_with)


def microsoft_user(
    tenant_id: str, object_id: str, *, upn: str = "someone@example.org", name: str = "Someone"
) -> PortalIdentity:
    return PortalIdentity(tenant_id=tenant_id, object_id=object_id, upn=upn, name=name)


def access_policy_error() -> UpstreamRejected:
    return AccessPolicyMissing()


def throttled() -> UpstreamThrottled:
    return UpstreamThrottled("busy", system="Microsoft Graph", code="graph_throttled")
