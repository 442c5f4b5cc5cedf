"""Everything the EHR remembers, in memory behind one lock, optionally persisted to a JSON file.

Short-lived OAuth artefacts (launches, codes, tokens, assertion ``jti`` values) live in memory
only; integration records, registered clients, AuditEvents, connection-status writebacks and the
signing key are persisted when a ``state_file`` is configured.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandbox.ehr.config import RegisteredClient


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


@dataclass
class LaunchContext:
    """What a launch, code and token carry about the user's situation in the EHR."""

    user_id: str
    user_type: str  # Practitioner | Patient
    patient_id: str | None = None
    encounter_id: str | None = None
    appointment_id: str | None = None
    location_id: str | None = None  # encounter department
    login_department_id: str | None = None
    csn: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # the client's extra token fields, e.g. csn
    ehr_launch: bool = False  # False: standalone launch (no encounter/appointment context)


@dataclass
class Launch:
    value: str
    client_id: str
    record_id: str
    context: LaunchContext
    expires_at: float
    used: bool = False
    fhir_base: str = ""  # the iss the launch URL carried: the authorize request's aud must name it


@dataclass
class AuthorizationCode:
    value: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: list[str]
    context: LaunchContext | None
    nonce: str | None
    state: str | None
    expires_at: float
    used: bool = False
    issued_tokens: list[str] = field(default_factory=list)


@dataclass
class AccessToken:
    value: str
    client_id: str
    scopes: list[str]
    expires_at: float
    grant_type: str
    context: LaunchContext | None = None
    revoked: bool = False


@dataclass
class PendingSignIn:
    """A standalone authorize request waiting for the user to pick who signs in."""

    value: str
    params: dict[str, str]
    expires_at: float


@dataclass
class IntegrationRecord:
    """An FDI record as an Epic analyst builds it: where to launch and which context tokens to append."""

    id: str
    name: str
    kind: str  # provider | patient
    environment: str
    launch_url: str
    context_tokens: str
    client_id: str
    created_at: float


@dataclass
class ConnectionStatusChange:
    conference_id: str
    external_id: str
    external_id_type: str
    vendor_name: str
    connection_status: str
    client_id: str
    method: str
    recorded_at: float


class EhrState:
    def __init__(self, clients: tuple[RegisteredClient, ...], state_file: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.state_file = state_file
        self.clients: dict[str, RegisteredClient] = {c.client_id: c for c in clients}
        self.launches: dict[str, Launch] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.pending: dict[str, PendingSignIn] = {}
        self.seen_jtis: dict[tuple[str, str], float] = {}
        self.records: dict[str, IntegrationRecord] = {}
        self.audit_events: list[dict[str, Any]] = []
        self.status_changes: list[ConnectionStatusChange] = []
        self.signing_key_pem: str | None = None
        self.csrf_tokens: dict[str, float] = {}
        # conference id (CSN or group conference id) → EHR users who launched that visit (memory only)
        self.launch_links: dict[str, set[str]] = {}
        self._load()

    # --- persistence -------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.state_file or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text())
        for client in data.get("clients", []):
            registered = RegisteredClient.from_json(client)
            self.clients.setdefault(registered.client_id, registered)
        self.records = {r["id"]: IntegrationRecord(**r) for r in data.get("records", [])}
        self.audit_events = list(data.get("audit_events", []))
        self.status_changes = [ConnectionStatusChange(**c) for c in data.get("status_changes", [])]
        self.signing_key_pem = data.get("signing_key_pem")

    def save(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            data = {
                "clients": [c.to_json() for c in self.clients.values()],
                "records": [asdict(r) for r in self.records.values()],
                "audit_events": self.audit_events,
                "status_changes": [asdict(c) for c in self.status_changes],
                "signing_key_pem": self.signing_key_pem,
            }
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, indent=1))
            temporary.chmod(0o600)
            temporary.replace(self.state_file)

    # --- clients and records ----------------------------------------------------------------------
    def client(self, client_id: str | None) -> RegisteredClient | None:
        with self.lock:
            return self.clients.get(client_id or "")

    def register_client(self, client: RegisteredClient) -> None:
        with self.lock:
            self.clients[client.client_id] = client
        self.save()

    def add_record(self, record: IntegrationRecord) -> None:
        with self.lock:
            self.records[record.id] = record
        self.save()

    def delete_record(self, record_id: str) -> bool:
        with self.lock:
            found = self.records.pop(record_id, None) is not None
        self.save()
        return found

    def records_of(self, kind: str) -> list[IntegrationRecord]:
        with self.lock:
            return sorted((r for r in self.records.values() if r.kind == kind), key=lambda r: r.created_at)

    # --- single-use artefacts --------------------------------------------------------------------
    def consume_launch(self, value: str) -> tuple[Launch | None, str]:
        """The launch if valid, else ``None`` and why. A launch is spent by its first use, even a failing one."""
        with self.lock:
            launch = self.launches.get(value)
            if launch is None:
                return None, "unknown launch"
            if launch.used:
                return None, "launch already used"
            launch.used = True
            if launch.expires_at < time.time():
                return None, "launch expired"
            return launch, ""

    def consume_code(self, value: str) -> tuple[AuthorizationCode | None, str]:
        """Redeem a code once; a second redemption revokes the tokens of the first (RFC 6749 §4.1.2)."""
        with self.lock:
            code = self.codes.get(value)
            if code is None:
                return None, "unknown authorization code"
            if code.used:
                for token in code.issued_tokens:
                    if token in self.tokens:
                        self.tokens[token].revoked = True
                return None, "authorization code already used"
            code.used = True
            if code.expires_at < time.time():
                return None, "authorization code expired"
            return code, ""

    def remember_jti(self, client_id: str, jti: str, expires_at: float) -> bool:
        """False when the (client, jti) pair was seen before (a replay)."""
        now = time.time()
        with self.lock:
            for key in [k for k, exp in self.seen_jtis.items() if exp < now - 600]:
                del self.seen_jtis[key]
            if (client_id, jti) in self.seen_jtis:
                return False
            self.seen_jtis[(client_id, jti)] = expires_at
            return True

    def issue_csrf(self) -> str:
        value = new_token()
        with self.lock:
            now = time.time()
            for key in [k for k, exp in self.csrf_tokens.items() if exp < now]:
                del self.csrf_tokens[key]
            self.csrf_tokens[value] = now + 3600
        return value

    def check_csrf(self, value: str | None) -> bool:
        with self.lock:
            expires = self.csrf_tokens.get(value or "")
            return expires is not None and expires >= time.time()

    def link_launch(self, conference_ids: set[str], user_id: str) -> None:
        """Remember that ``user_id`` launched the visit: its conference is now linked to them."""
        with self.lock:
            for conference_id in conference_ids:
                self.launch_links.setdefault(conference_id, set()).add(user_id)

    def launched_by(self, conference_id: str) -> set[str]:
        with self.lock:
            return set(self.launch_links.get(conference_id, ()))

    # --- writebacks -----------------------------------------------------------------------------
    def add_audit_event(self, resource: dict[str, Any]) -> None:
        with self.lock:
            self.audit_events.append(resource)
        self.save()

    def add_status_change(self, change: ConnectionStatusChange) -> None:
        with self.lock:
            self.status_changes.append(change)
        self.save()
