"""Visit events and Graph rich-notification decoding."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asymmetric_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.kernel.errors import BadRequest, InvalidEvent, SealedValueInvalid
from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography
from shared.microsoft.call_events import participant_changes
from shared.microsoft.notification_crypto import EncryptedContent, decrypt_resource
from shared.microsoft.notifications import ClientStates, SubscriptionTarget
from shared.visits.events import EventContext, EventKind, Role, Source, VisitEvent
from shared.visits.sealed_context import open_event, seal_event

ORGANIZER = "b0000000-0000-4000-8000-000000000001"
WHEN = datetime(2026, 11, 25, 15, 0, 1, 250000, tzinfo=UTC)


def event(**changes: object) -> VisitEvent:
    fields: dict[str, object] = {
        "configuration_id": "cfg1",
        "geography": "emea",
        "visit_key": "v" * 64,
        "kind": EventKind.CONNECTED,
        "role": Role.PATIENT,
        "occurred_at": WHEN,
        "source": Source.GRAPH,
        "participant": "Patient/456",
        "csn": "1853",
    }
    fields.update(changes)
    return VisitEvent(**fields)  # type: ignore[arg-type]


def test_event_round_trips_through_json_with_no_clear_reference() -> None:
    original = event(participant=None, csn=None)  # a Graph event: the worker reads the references from the visit
    parsed = VisitEvent.from_json(original.to_json())
    assert parsed == original
    body = json.loads(original.to_json())
    assert body["v"] == 2 and body["occurredAt"] == "2026-11-25T15:00:01.250000Z"
    assert set(body) == {
        "v", "id", "configurationId", "geography", "visitKey", "kind", "role", "occurredAt", "source",
    }  # fmt: skip


def test_references_in_memory_never_reach_the_message() -> None:
    text = event().to_json()
    assert "Patient/456" not in text and "1853" not in text
    assert VisitEvent.from_json(text).references == {}


def test_a_launch_events_references_travel_sealed_and_open_for_that_event_only() -> None:
    sealer = Sealer.from_text(new_key_text())
    launch = event(source=Source.LAUNCH, appointment="e-appt-1", encounter="e-enc-1")
    sealed = seal_event(sealer, launch)
    text = sealed.to_json()
    for reference in ("Patient/456", "1853", "e-appt-1", "e-enc-1"):
        assert reference not in text
    parsed = VisitEvent.from_json(text)
    assert parsed.references == {} and parsed.sealed
    assert open_event(sealer, parsed).references == launch.references
    # Moved onto another event (another visit, role or time), or opened under another key: refused.
    other = event(source=Source.LAUNCH, role=Role.PROVIDER)
    with pytest.raises(SealedValueInvalid):
        open_event(sealer, dataclasses.replace(other, sealed=parsed.sealed))
    with pytest.raises(SealedValueInvalid):
        open_event(Sealer.from_text(new_key_text()), parsed)


def test_a_legacy_message_with_clear_references_is_read_and_sealed_when_written_again() -> None:
    legacy = json.dumps({**json.loads(OLD_MESSAGE), "csn": "1853"})
    parsed = VisitEvent.from_json(legacy)
    assert parsed.references == {"participant": "Patient/456", "csn": "1853"}
    sealer = Sealer.from_text(new_key_text())
    again = seal_event(sealer, parsed).to_json()
    assert "Patient/456" not in again and "1853" not in again
    assert open_event(sealer, VisitEvent.from_json(again)).references == parsed.references


def test_a_join_and_a_leave_in_the_same_millisecond_keep_their_order_through_the_queue() -> None:
    joined = event(participant=None, csn=None, occurred_at=WHEN + timedelta(microseconds=10))
    left = event(
        participant=None, csn=None, kind=EventKind.DISCONNECTED, occurred_at=WHEN + timedelta(microseconds=900)
    )
    parsed = [VisitEvent.from_json(e.to_json()) for e in (left, joined)]
    assert sorted(parsed, key=lambda e: e.occurred_at) == [joined, left]


# Queued by the release before occurredAt kept microseconds: it must still be accepted, with the same id.
OLD_MESSAGE = (
    '{"v":1,"id":"b15103e091052f8a9af05be37f46c62e","configurationId":"cfg1","geography":"emea",'
    '"visitKey":"' + "v" * 64 + '","kind":"disconnected","role":"patient","participant":"Patient/456",'
    '"csn":"1853","appointment":null,"encounter":null,"occurredAt":"2026-11-25T15:00:01.250Z","source":"graph"}'
)


def test_a_message_queued_by_the_previous_release_keeps_its_id() -> None:
    parsed = VisitEvent.from_json(OLD_MESSAGE)
    assert parsed.id == "b15103e091052f8a9af05be37f46c62e"
    same_fact_now = event(kind=EventKind.DISCONNECTED, occurred_at=WHEN + timedelta(microseconds=999))
    assert same_fact_now.id == parsed.id  # so its done-mark still stops a second write


def test_same_fact_has_same_id_whatever_the_context_or_time_zone() -> None:
    a = event()
    b = event(participant=None, csn=None, occurred_at=WHEN.astimezone(timezone(timedelta(hours=-5))))
    assert a.id == b.id


def test_context_filled_in_is_the_same_event_as_replace_would_make() -> None:
    """``with_context`` copies without ``__init__``: the copy must be what ``replace`` makes, id included."""
    graph = event(participant=None, csn=None)
    changes = {"participant": "Practitioner/1", "csn": "1853", "appointment": "a", "interpreter": True}
    filled = graph.with_context(**changes)  # type: ignore[arg-type]
    assert vars(filled) == vars(dataclasses.replace(graph, **changes))  # type: ignore[arg-type]
    assert filled.id == graph.id and (graph.participant, graph.csn, graph.interpreter) == (None, None, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        filled.csn = "2"  # type: ignore[misc]
    # What it may fill in is context only: none of it is part of the event's id.
    identity = {"visit_key", "role", "kind", "occurred_at", "source", "attendee", "id"}
    assert not identity & set(EventContext.__annotations__)
    assert set(EventContext.__annotations__) <= {f.name for f in dataclasses.fields(VisitEvent)}


@pytest.mark.parametrize(
    "change",
    [{"kind": EventKind.DISCONNECTED}, {"role": Role.PROVIDER}, {"source": Source.LAUNCH},
     {"occurred_at": WHEN + timedelta(milliseconds=1)}, {"visit_key": "w" * 64}],
)  # fmt: skip
def test_different_facts_have_different_ids(change: dict[str, object]) -> None:
    assert event(**change).id != event().id


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"v": 2}),
        json.dumps({"v": 1, "configurationId": "c"}),
        json.dumps({**json.loads(event().to_json()), "kind": "exploded"}),
        json.dumps({**json.loads(event().to_json()), "occurredAt": "2026-11-25T15:00:00"}),
        json.dumps({**json.loads(event().to_json()), "id": "forged"}),
        json.dumps({**json.loads(event().to_json()), "sealed": 42}),
    ],
)
def test_invalid_messages_are_permanent_errors(text: str) -> None:
    with pytest.raises(InvalidEvent):
        VisitEvent.from_json(text)


# --- rich notifications ----------------------------------------------------------------------


def encrypt_like_graph(resource: object, public_key: rsa.RSAPublicKey, certificate_id: str) -> dict[str, object]:
    key = os.urandom(32)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(json.dumps(resource).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = encryptor.update(padded) + encryptor.finalize()
    wrapped = public_key.encrypt(
        key,
        asymmetric_padding.OAEP(mgf=asymmetric_padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    return {
        "encryptedContent": {
            "data": base64.b64encode(data).decode(),
            "dataSignature": base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode(),
            "dataKey": base64.b64encode(wrapped).decode(),
            "encryptionCertificateId": certificate_id,
            "encryptionCertificateThumbprint": "00",
        }
    }


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rich_notification_decrypts(private_key: rsa.RSAPrivateKey) -> None:
    resource = {"@odata.type": "#microsoft.graph.callEvent", "eventType": "callStarted"}
    item = encrypt_like_graph(resource, private_key.public_key(), "cert-1")
    content = EncryptedContent.from_notification(item)
    assert decrypt_resource(content, {"cert-1": private_key}) == resource


def test_tampered_ciphertext_fails_the_signature(private_key: rsa.RSAPrivateKey) -> None:
    item = encrypt_like_graph({"a": 1}, private_key.public_key(), "cert-1")
    encrypted = item["encryptedContent"]
    assert isinstance(encrypted, dict)
    data = bytearray(base64.b64decode(encrypted["data"]))
    data[0] ^= 1
    encrypted["data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(BadRequest, match="signature"):
        decrypt_resource(EncryptedContent.from_notification(item), {"cert-1": private_key})


def test_unknown_certificate_or_wrong_key_is_rejected(private_key: rsa.RSAPrivateKey) -> None:
    item = encrypt_like_graph({"a": 1}, private_key.public_key(), "cert-1")
    content = EncryptedContent.from_notification(item)
    with pytest.raises(BadRequest, match="unknown certificate"):
        decrypt_resource(content, {})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BadRequest, match="could not be decrypted"):
        decrypt_resource(content, {"cert-1": other})


def test_missing_encrypted_content_is_rejected() -> None:
    with pytest.raises(BadRequest):
        EncryptedContent.from_notification({"resource": "x"})


def roster(*participants: dict[str, object], event_type: str = "rosterUpdated") -> dict[str, object]:
    return {
        "@odata.type": "#microsoft.graph.callEvent",
        "eventType": event_type,
        "eventDateTime": "2026-11-25T15:00:00.5Z",
        "participants@delta": list(participants),
    }


def guest(pid: str, **extra: object) -> dict[str, object]:
    return {"id": pid, "info": {"identity": {"guest": {"id": "g1", "displayName": "Guest"}}}, **extra}


def user(pid: str, oid: str, **extra: object) -> dict[str, object]:
    return {"id": pid, "info": {"identity": {"user": {"id": oid, "tenantId": "t"}}}, **extra}


def test_roster_maps_lobby_admit_leave() -> None:
    lobby = participant_changes(roster(guest("p1", isInLobby=True)), organizer_object_id=ORGANIZER)
    admitted = participant_changes(roster(guest("p1", isInLobby=False)), organizer_object_id=ORGANIZER)
    left = participant_changes(
        roster(guest("p1", removedState={"reason": "Removed from roster"})), organizer_object_id=ORGANIZER
    )
    assert [(c.role, c.kind) for c in lobby] == [(Role.PATIENT, EventKind.LOBBY)]
    assert [(c.role, c.kind) for c in admitted] == [(Role.PATIENT, EventKind.CONNECTED)]
    assert [(c.role, c.kind) for c in left] == [(Role.PATIENT, EventKind.DISCONNECTED)]
    assert lobby[0].occurred_at == datetime(2026, 11, 25, 15, 0, 0, 500000, tzinfo=UTC)


def test_tenant_users_are_provider_or_staff() -> None:
    changes = participant_changes(
        roster(user("p1", ORGANIZER.upper(), isInLobby=False), user("p2", "someone-else", isInLobby=False)),
        organizer_object_id=ORGANIZER,
    )
    assert [c.role for c in changes] == [Role.PROVIDER, Role.STAFF]


def test_call_ended_disconnects_everyone_listed() -> None:
    changes = participant_changes(
        roster(guest("p1"), user("p2", ORGANIZER), event_type="callEnded"), organizer_object_id=ORGANIZER
    )
    assert {c.kind for c in changes} == {EventKind.DISCONNECTED}


def test_malformed_call_event_is_rejected() -> None:
    with pytest.raises(BadRequest):
        participant_changes({"eventType": "rosterUpdated"}, organizer_object_id=ORGANIZER)


def test_client_state_check_drops_mismatches() -> None:
    states = ClientStates("a-client-state-secret-of-at-least-32-characters")
    target = SubscriptionTarget(Geography.EMEA, "k" * 64, ORGANIZER, "cfg1")
    items = [{"clientState": states.issue(target)}, {"clientState": "nope"}, {}, {"clientState": 5}]
    assert [states.check(item.get("clientState")) for item in items] == [target, None, None, None]


def test_odd_roster_identity_shapes_count_as_patient_not_crash() -> None:
    for odd in ({"id": "p", "info": "x", "isInLobby": True}, {"id": "p", "info": {"identity": []}, "isInLobby": True}):
        changes = participant_changes(roster(odd), organizer_object_id=ORGANIZER)
        assert [(c.role, c.kind) for c in changes] == [(Role.PATIENT, EventKind.LOBBY)]
