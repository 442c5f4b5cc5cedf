"""Graph change notifications: clientState, validationTokens, decryption and event mapping."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.graph.crypto import EncryptionCertificate, encrypt_content
from sandbox.local_settings import self_signed_certificate_pem
from sandbox.server import ServerThread
from shared.jose.jwks import JwksCache
from shared.kernel.errors import BadRequest, Unauthenticated, UpstreamUnavailable
from shared.kernel.settings import Geography
from shared.microsoft.entra import EntraDocuments
from shared.microsoft.notifications import (
    GRAPH_NOTIFICATION_PUBLISHER,
    ClientStates,
    NotificationCertificate,
    NotificationDecoder,
    SubscriptionTarget,
    ValidationTokens,
    parse_body,
)
from shared.visits.events import EventKind, Role, Source, user_hint
from tests.support.outbound import local_http

CLIENT_ID = "22222222-2222-4222-8222-222222222222"
TENANT = "11111111-1111-4111-8111-111111111111"
ORGANIZER = "b0000000-0000-4000-8000-000000000001"
NURSE = "b0000000-0000-4000-8000-000000000004"
SECRET = "a-client-state-secret-of-at-least-32-characters"
TARGET = SubscriptionTarget(Geography.EMEA, "k" * 64, ORGANIZER, str(uuid.UUID(int=7)))


class Signer:
    def __init__(self, kid: str = "entra-1") -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": kid, "use": "sig"}]}

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "aud": CLIENT_ID,
            "iss": f"https://sts.windows.net/{TENANT}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": GRAPH_NOTIFICATION_PUBLISHER,
            "tid": TENANT,
        }
        claims.update(overrides)
        return jwt.encode({k: v for k, v in claims.items() if v is not None}, self.key, "RS256", {"kid": self.kid})


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture(scope="module")
def jwks_url(signer: Signer) -> Iterator[str]:
    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(signer.jwks)

    with ServerThread(Starlette(routes=[Route("/common/discovery/v2.0/keys", keys)])) as server:
        yield server.url + "/common/discovery/v2.0/keys"


def validation_tokens(jwks_uri: str) -> ValidationTokens:
    return ValidationTokens(JwksCache(EntraDocuments(local_http()).get), jwks_uri=jwks_uri, client_id=CLIENT_ID)


@pytest.fixture(scope="module")
def certificate() -> NotificationCertificate:
    return NotificationCertificate.from_pem(self_signed_certificate_pem())


@pytest.fixture
def decoder(jwks_url: str, certificate: NotificationCertificate) -> NotificationDecoder:
    tokens = validation_tokens(jwks_url)
    return NotificationDecoder(
        ClientStates(SECRET), tokens, {certificate.certificate_id: certificate.private_key}, connector_secret=SECRET
    )


def call_event(event_type: str, participants: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.callevent",
        "id": str(uuid.uuid4()),
        "eventType": event_type,
        "eventDateTime": "2026-11-25T15:00:01.25Z",
    }
    if participants is not None:
        payload["participants@delta"] = participants
    return payload


def guest(participant_id: str, *, in_lobby: bool, removed: bool = False, name: str = "Jane Patient") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": participant_id,
        "info": {"identity": {"guest": {"id": "g-1", "displayName": name}}},
        "isInLobby": in_lobby,
    }
    if removed:
        entry["removedState"] = {"reason": "Removed from call"}
    return entry


def user(participant_id: str, object_id: str) -> dict[str, Any]:
    return {
        "id": participant_id,
        "info": {"identity": {"user": {"id": object_id, "displayName": "Dr Smith", "tenantId": TENANT}}},
        "isInLobby": False,
    }


def notification(
    certificate: NotificationCertificate,
    payload: dict[str, Any],
    *,
    client_state: str | None = None,
    tenant: str = TENANT,
) -> dict[str, Any]:
    encrypted = encrypt_content(
        payload, EncryptionCertificate(certificate.certificate_base64), certificate.certificate_id
    )
    return {
        "subscriptionId": str(uuid.uuid4()),
        "clientState": client_state if client_state is not None else ClientStates(SECRET).issue(TARGET),
        "changeType": "updated",
        "tenantId": tenant,
        "resource": "communications/onlineMeetings(joinWebUrl='x')/meetingCallEvents",
        "resourceData": {"@odata.type": "#microsoft.graph.callevent", "id": payload["id"]},
        "encryptedContent": encrypted,
    }


def batch(*items: dict[str, Any], tokens: list[str]) -> dict[str, Any]:
    return {"value": list(items), "validationTokens": tokens}


# --- clientState ------------------------------------------------------------------------------


def test_client_state_round_trips_and_fits_graph_limit() -> None:
    states = ClientStates(SECRET)
    value = states.issue(TARGET)
    assert len(value) <= 255
    assert states.check(value) == TARGET


@pytest.mark.parametrize(
    "tamper",
    [
        lambda v: v[:-1] + ("0" if v[-1] != "0" else "1"),  # wrong tag
        lambda v: v.replace("emea", "apac"),  # another geography, same tag
        lambda v: "",
        lambda v: None,
        lambda v: v + "~x",
    ],
)
def test_tampered_or_foreign_client_state_is_refused(tamper: Any) -> None:
    assert ClientStates(SECRET).check(tamper(ClientStates(SECRET).issue(TARGET))) is None


def test_client_state_under_another_secret_is_refused() -> None:
    other = ClientStates("another-secret-of-at-least-32-characters-long")
    assert ClientStates(SECRET).check(other.issue(TARGET)) is None


# --- decryption and mapping -------------------------------------------------------------------


def test_roster_updates_map_to_lobby_connected_and_disconnected_per_role(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    payloads = [
        call_event("callStarted"),
        call_event("rosterUpdated", [user("p1", ORGANIZER)]),
        call_event("rosterUpdated", [guest("p2", in_lobby=True)]),
        call_event("rosterUpdated", [guest("p2", in_lobby=False), user("p3", NURSE)]),
        call_event("rosterUpdated", [guest("p2", in_lobby=False, removed=True)]),
        call_event("callEnded", [user("p1", ORGANIZER)]),
    ]
    data = batch(*(notification(certificate, p) for p in payloads), tokens=[signer.token()])
    decoded = decoder.change_notifications(data)
    assert decoded.dropped == 0
    assert [(e.role, e.kind) for e in decoded.events] == [
        (Role.PROVIDER, EventKind.CONNECTED),
        (Role.PATIENT, EventKind.LOBBY),
        (Role.PATIENT, EventKind.CONNECTED),
        (Role.STAFF, EventKind.CONNECTED),
        (Role.PATIENT, EventKind.DISCONNECTED),
        (Role.PROVIDER, EventKind.DISCONNECTED),
    ]
    first = decoded.events[0]
    assert (first.geography, first.visit_key, first.configuration_id) == (
        "emea",
        TARGET.visit_key,
        TARGET.configuration_id,
    )
    assert first.source is Source.GRAPH and first.participant is None
    assert first.occurred_at == datetime(2026, 11, 25, 15, 0, 1, 250000, tzinfo=UTC)
    assert "Jane" not in "".join(e.to_json() for e in decoded.events)  # no names travel


def test_a_visit_number_in_a_guests_name_and_a_users_account_travel_as_member_hints_never_as_names(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    names = ["Maria 4821", "4821 Maria", "Jane Patient", "Jo 48210", "Ann 1234 5678", "Interpreter"]
    participants = [guest(f"g{n}", in_lobby=True, name=name) for n, name in enumerate(names)]
    payload = call_event("rosterUpdated", [*participants, user("p3", NURSE)])
    decoded = decoder.change_notifications(batch(notification(certificate, payload), tokens=[signer.token()]))
    assert [(e.member_hint, e.interpreter) for e in decoded.events] == [
        ("label:4821", False),
        ("label:4821", False),
        (None, False),  # no number: tied to nobody
        (None, False),  # five digits are not a visit number
        (None, False),  # two numbers: ambiguous, tied to nobody
        (None, True),
        (user_hint(SECRET, NURSE), False),
    ]
    assert user_hint(SECRET, NURSE) != user_hint(SECRET, ORGANIZER) and NURSE not in user_hint(SECRET, NURSE)
    assert user_hint("another-secret", NURSE) != user_hint(SECRET, NURSE)  # keyed: no one recomputes it
    assert user_hint(SECRET, NURSE.upper()) == user_hint(SECRET, NURSE)  # object ids compare case-insensitively
    sent = "".join(e.to_json() for e in decoded.events)
    assert "Maria" not in sent and "Jane" not in sent and NURSE not in sent  # no names or object ids travel


def test_redelivered_notification_yields_the_same_event_ids(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    payload = call_event("rosterUpdated", [guest("p2", in_lobby=True)])
    first = decoder.change_notifications(batch(notification(certificate, payload), tokens=[signer.token()]))
    again = decoder.change_notifications(batch(notification(certificate, payload), tokens=[signer.token()]))
    assert [e.id for e in first.events] == [e.id for e in again.events]


def test_items_with_a_wrong_client_state_are_dropped_and_the_rest_kept(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    good = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]))
    bad = notification(certificate, call_event("rosterUpdated", [guest("q", in_lobby=True)]), client_state="nope")
    decoded = decoder.change_notifications(batch(good, bad, tokens=[signer.token()]))
    assert len(decoded.events) == 1 and decoded.dropped == 1


def test_only_wrong_client_states_needs_no_token_check(
    decoder: NotificationDecoder, certificate: NotificationCertificate
) -> None:
    bad = notification(certificate, call_event("callStarted"), client_state="forged")
    decoded = decoder.change_notifications({"value": [bad]})
    assert decoded.events == [] and decoded.dropped == 1


def test_tampered_ciphertext_is_dropped(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    item = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]))
    data = bytearray(base64.b64decode(item["encryptedContent"]["data"]))
    data[0] ^= 1
    item["encryptedContent"]["data"] = base64.b64encode(bytes(data)).decode()
    decoded = decoder.change_notifications(batch(item, tokens=[signer.token()]))
    assert decoded.events == [] and decoded.dropped == 1


def test_content_for_an_unknown_certificate_is_dropped(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    item = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]))
    item["encryptedContent"]["encryptionCertificateId"] = "retired-cert"
    assert decoder.change_notifications(batch(item, tokens=[signer.token()])).dropped == 1


def test_notification_certificate_id_and_public_part(certificate: NotificationCertificate) -> None:
    der = base64.b64decode(certificate.certificate_base64)
    from cryptography import x509

    public = x509.load_der_x509_certificate(der).public_key()
    assert public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == certificate.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert len(certificate.certificate_id) <= 128


# --- validationTokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "someone-else"},
        {"iss": "https://sts.windows.net/99999999-9999-4999-8999-999999999999/"},
        {"appid": "00000000-0000-0000-0000-000000000000"},
        {"exp": int(time.time()) - 3600},
        {"tid": None},
    ],
)
def test_invalid_validation_tokens_reject_the_batch(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer, overrides: dict[str, Any]
) -> None:
    item = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]))
    with pytest.raises(Unauthenticated):
        decoder.change_notifications(batch(item, tokens=[signer.token(), signer.token(**overrides)]))


def test_token_signed_by_an_unknown_key_or_missing_tokens_reject_the_batch(
    decoder: NotificationDecoder, certificate: NotificationCertificate
) -> None:
    item = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]))
    with pytest.raises(Unauthenticated) as forged:
        decoder.change_notifications(batch(item, tokens=[Signer("forger").token()]))
    assert forged.value.code == "invalid_validation_token"
    with pytest.raises(Unauthenticated):
        decoder.change_notifications({"value": [item]})


def test_a_rotated_entra_key_is_fetched_again(signer: Signer) -> None:
    rotated = Signer("entra-2")
    published = [signer.jwks]
    keys = JwksCache(lambda url: published[-1], min_refetch_seconds=0)
    tokens = ValidationTokens(keys, jwks_uri="https://entra.example/keys", client_id=CLIENT_ID)
    assert tokens.vouched_tenants([signer.token()]) == {TENANT}
    published.append(rotated.jwks)
    assert tokens.vouched_tenants([rotated.token()]) == {TENANT}


@pytest.mark.parametrize("document", [{"keys": []}, {"keys": [{"kty": "unknown"}]}, {"nokeys": 1}])
def test_an_unreadable_entra_key_set_makes_the_token_invalid(signer: Signer, document: dict[str, Any]) -> None:
    tokens = ValidationTokens(
        JwksCache(lambda url: document), jwks_uri="https://entra.example/keys", client_id=CLIENT_ID
    )
    with pytest.raises(Unauthenticated) as caught:
        tokens.vouched_tenants([signer.token()])
    assert caught.value.code == "invalid_validation_token"


def test_unreachable_entra_keys_are_an_outage_not_a_forgery(signer: Signer) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    documents = EntraDocuments(local_http(transport=httpx.MockTransport(refuse)))
    tokens = ValidationTokens(JwksCache(documents.get), jwks_uri="https://entra.example/keys", client_id=CLIENT_ID)
    with pytest.raises(UpstreamUnavailable):
        tokens.vouched_tenants([signer.token()])


def test_items_of_a_tenant_no_token_vouches_for_are_dropped(
    decoder: NotificationDecoder, certificate: NotificationCertificate, signer: Signer
) -> None:
    other = "33333333-3333-4333-8333-333333333333"
    item = notification(certificate, call_event("rosterUpdated", [guest("p", in_lobby=True)]), tenant=other)
    decoded = decoder.change_notifications(batch(item, tokens=[signer.token()]))
    assert decoded.events == [] and decoded.dropped == 1


# --- lifecycle and body parsing ---------------------------------------------------------------


def test_lifecycle_reauthorization_required_names_the_subscription(decoder: NotificationDecoder) -> None:
    states = ClientStates(SECRET)
    data = {
        "value": [
            {"subscriptionId": "s-1", "clientState": states.issue(TARGET), "lifecycleEvent": "reauthorizationRequired"},
            {"subscriptionId": "s-2", "clientState": states.issue(TARGET), "lifecycleEvent": "missed"},
            {"subscriptionId": "s-3", "clientState": "forged", "lifecycleEvent": "reauthorizationRequired"},
        ]
    }
    decoded = decoder.lifecycle_notifications(data)
    assert decoded.reauthorize == [("s-1", TARGET)]
    assert decoded.dropped == 1


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"value": 3}', b"{}"])
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_body(body)


def test_two_certificates_during_rotation_decrypt_and_the_first_is_current(jwks_url: str, signer: Signer) -> None:
    from shared.microsoft.notifications import notification_certificates

    old_pem, new_pem = self_signed_certificate_pem("old"), self_signed_certificate_pem("new")
    current, previous = notification_certificates(new_pem + old_pem)
    assert current.certificate_id == NotificationCertificate.from_pem(new_pem + old_pem).certificate_id
    assert current.certificate_id != previous.certificate_id
    tokens = validation_tokens(jwks_url)
    keys = {c.certificate_id: c.private_key for c in (current, previous)}
    decoder = NotificationDecoder(ClientStates(SECRET), tokens, keys, connector_secret=SECRET)
    items = [notification(c, call_event("rosterUpdated", [guest("p", in_lobby=True)])) for c in (current, previous)]
    assert len(decoder.change_notifications(batch(*items, tokens=[signer.token()])).events) == 2


def test_a_certificate_without_its_key_is_a_configuration_error() -> None:
    from shared.kernel.errors import ConfigurationError

    pem = self_signed_certificate_pem()
    certificate_only = pem[: pem.index("-----BEGIN " + "PRIVATE KEY-----")]
    with pytest.raises(ConfigurationError):
        NotificationCertificate.from_pem(
            certificate_only + self_signed_certificate_pem().split("-----END CERTIFICATE-----\n")[1]
        )
