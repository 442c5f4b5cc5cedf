"""Short-lived, single-use state rows (OAuth ``state``, sign-in flows), each in the account its kind belongs to.

Table ``AuthStates``: PartitionKey = kind, RowKey = the state value, the payload and an expiry. The payload
(PKCE verifier, nonce, msal flow; for a launch also its context tokens such as the CSN and the pending launch
carried through the Microsoft sign-in) is sealed (AES-256-GCM, ``Sealer``) for ``AuthStates/<kind>/<state>``.

Where a row lives (``StateRouter``, the one store every flow uses):

* the EHR launch's kinds (``ehr-launch``, ``launch-signin-intro``, ``launch-signin``, ``launch-confirm``) carry
  launch context, and an interpreter's guest link (``interpreter-link``) belongs to a visit, so they live in
  ``AuthStates`` of the **configuration's geography** account. The browser
  brings back only the state, so the state names its geography: ``<tag>.<256-bit random>`` with a fixed two-letter tag
  (``GEOGRAPHY_TAGS``: ``am.``, ``eu.``, ``ap.``), e.g. ``eu.Qm9…`` (46 characters, URL-safe: letters, digits,
  ``-``, ``_`` and one ``.``, all unreserved in RFC 3986, so neither Epic nor Entra ID re-encodes it). The
  callback routes by the tag before reading anything; a missing or unknown tag, or one naming a geography this
  deployment has no account for, is an unknown state: nothing is looked up anywhere. A tag changed in transit
  finds no row in the other account, and the sealed payload is bound to the full state, tag included. The tag
  tells only what the configuration's launch URL already implies (where its data lives); it adds no guessable
  bit to the random part.
* every other kind (the portal's Microsoft sign-in ``entra-signin``, the approver's EHR sign-in
  ``portal-ehr-signin``) holds no EHR context: untagged states in the **app's** account, next to the portal's
  sessions they belong to.

**Sealed states** (``seal`` / ``consume_sealed``, the EHR launch's ``ehr-launch``): the payload is not stored at
all but sealed into the state value itself, ``<tag>.s1.<key id>.<sealed payload>`` (AES-256-GCM, bound to the
kind and the tag, carrying its own expiry), so starting a launch writes nothing. Single use is one conditional
write: consuming creates the row ``AuthStates/<kind>/<SHA-256 of the state>`` in the tag's geography, and
Table Storage refuses a second create of the same key (``ResourceExistsError``) for every consumer but the
first. The row keeps only what single use needs (kind, digest, ``Consumed``, times) until the sweep removes it
after ``ExpiresAt``. A sealed state is ~350 characters; the authorization request switches to POST when the
EHR advertises it and the URL grows long (``shared.ehr.smart``). One longer than ``MAX_SEALED_STATE`` (a link
edited to carry outsized context tokens) would be refused on its way back, after the EHR's sign-in, so ``seal``
refuses it at once (``state_too_large``, "The launch request is too large").

**The reader's language** (``shared.kernel.reader``): the states of a reader's own round trip (``round_trips``:
the sign-ins and the launch's states, not an interpreter's link, which someone else opens) keep the language the
reader chose explicitly, if any, under a key of its own (``READER_LANGUAGE``) sealed with the payload (a sealed
state's too), and consuming one hands it back to the request that consumes it. Callers never see it in the payload.

Consumption of a stored row marks the row used with an etag-guarded update that also empties the payload: Table
Storage ignores a delete of a missing row, so a delete cannot tell two consumers apart, but an update
with ``IfNotModified`` fails for every consumer but the first. A consumed row keeps only what single
use needs (kind, state, ``Consumed``, times) until the sweep removes it after ``ExpiresAt``, in every account.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.kernel.clock import utcnow
from shared.kernel.errors import BadRequest, SealedValueInvalid, StateError
from shared.kernel.i18n import N_
from shared.kernel.identifiers import log_id, random_token
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.reader import chosen_language, resume
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage, StorageAccount, insert_row, storage_errors

logger = logging.getLogger(__name__)

TABLE = "AuthStates"
DEFAULT_TTL = timedelta(minutes=10)

# Fixed forever: a tag names the account a state lives in; changing one strands every state in flight.
GEOGRAPHY_TAGS: Mapping[Geography, str] = MappingProxyType(
    {Geography.AMERICAS: "am", Geography.EMEA: "eu", Geography.APAC: "ap"}
)
_GEOGRAPHY_BY_TAG = {tag: geography for geography, tag in GEOGRAPHY_TAGS.items()}
TAG_SEPARATOR = "."  # never in a random token (URL-safe base64), so a state has at most one tag
SEALED_PREFIX = "s1."  # a sealed state: the tag, then a ``Sealer`` value (its version, key id and body)
MAX_SEALED_STATE = 1024  # far above any payload we seal; anything longer is not ours
_SEALED_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.")
_TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_")
READER_LANGUAGE = "~lang"  # beside a round trip's payload: the reader's language choice (no payload key starts "~")

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "single-use OAuth state of the portal's sign-ins: admins' and approvers' Microsoft sign-in, the approver's "
        "EHR sign-in (no EHR context: the launches' states live in the geography)",
        (
            key("PartitionKey", "kind: entra-signin, portal-ehr-signin"),
            Field("RowKey", Classification.CREDENTIAL, Protection.CLEAR, "the state: random, 256 bits, single use"),
            Field(
                "Payload",
                Classification.PERSONAL,
                Protection.SEALED,
                "PKCE verifier, nonce, msal flow; the approver's EHR sign-in also its configuration, portal session "
                "binding and Microsoft object id; the reader's language choice, if any; emptied when consumed",
            ),
            *operational("CreatedAt", "ExpiresAt", "Consumed", "ConsumedAt"),
        ),
        "10 minutes; the payload only until consumed",
        "consumption empties it; the sweep timer deletes it after ExpiresAt",
    ),
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "single-use OAuth state of the EHR launches, which carry launch context: in the configuration's geography, "
        "named by the state's tag",
        (
            key(
                "PartitionKey", "kind: ehr-launch, launch-signin-intro, launch-signin, launch-confirm, interpreter-link"
            ),
            Field(
                "RowKey",
                Classification.CREDENTIAL,
                Protection.CLEAR,
                "the state: the geography's tag (am., eu., ap.) and 256 random bits, single use; ehr-launch: the "
                "SHA-256 of its sealed state, written when it is consumed",
            ),
            Field(
                "Payload",
                Classification.EHR_ID,
                Protection.SEALED,
                "ehr-launch: none (its PKCE verifier, nonce and launch URL context tokens travel sealed in the state "
                "itself); launch-signin-intro: the pending launch with its confirmed context (CSN, encounter, "
                "patient, EHR user) and the EHR user's name, until the clinician presses Continue; launch-signin: "
                "the msal flow and that carry; "
                "launch-confirm: that context and the Microsoft 365 account; interpreter-link: the visit's key "
                "(HMAC) only, until an interpreter's guest link is opened; all but interpreter-link also the "
                "reader's language choice, if any (ehr-launch: in its sealed state); emptied when consumed",
            ),
            *operational("CreatedAt", "ExpiresAt", "Consumed", "ConsumedAt"),
        ),
        "10 minutes (launch-confirm 5, interpreter-link 2 hours); the payload only until consumed",
        "consumption empties it; the sweep timer deletes it after ExpiresAt",
    ),
)


def _unknown() -> StateError:
    return StateError(N_("This sign-in link is not valid. Please start again."), code="state_unknown")


def geography_state(geography: Geography) -> str:
    """A fresh state for a row in ``geography``'s account: its tag, then 256 unguessable bits."""
    return f"{GEOGRAPHY_TAGS[geography]}{TAG_SEPARATOR}{random_token()}"


def state_geography(state: str) -> Geography | None:
    """The geography a state's tag names; None when it has no tag, an unknown one, or is malformed."""
    tag, separator, token = state.partition(TAG_SEPARATOR)
    if not separator or not _is_token(token):
        return None
    return _GEOGRAPHY_BY_TAG.get(tag)


class StateRouter:
    """The app's one state store: each kind's rows in the account its placement names (see the module docstring).

    ``in_geography`` names the kinds that carry EHR context; their states are tagged with the configuration's
    geography and live in its account. Every other kind lives in the app's account under untagged states.
    """

    def __init__(
        self, storage: Storage, sealer: Sealer, *, in_geography: Iterable[str], round_trips: Iterable[str] = ()
    ) -> None:
        self.in_geography = frozenset(in_geography)
        self.round_trips = frozenset(round_trips)  # kinds whose states keep the reader's language choice
        self._sealer = sealer
        self._app = AuthStateStore(storage.app, sealer)
        self._geographies = {g: AuthStateStore(storage.for_geography(g), sealer) for g in storage.geographies}

    def new_state(self, geography: Geography) -> str:
        """A state for a row to be created later in ``geography`` (e.g. to seal a payload bound to it first)."""
        return geography_state(geography)

    def create(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        ttl: timedelta = DEFAULT_TTL,
        state: str | None = None,
        geography: Geography | None = None,
    ) -> str:
        """Store ``payload`` under a fresh (or the given, unguessable) state and return it.

        A kind kept in the geography needs its geography, named by ``geography`` or by the given state's tag;
        any other kind takes neither. A mismatch is a programming error (``ValueError``), never a silent move.
        """
        payload = self._with_reader(kind, payload)
        if kind not in self.in_geography:
            if geography is not None or (state is not None and state_geography(state) is not None):
                raise ValueError(f"{kind} states live in the app's account: they take no geography")
            return self._app.create(kind, payload, ttl=ttl, state=state)
        if state is None:
            if geography is None:
                raise ValueError(f"{kind} states live in the configuration's geography: name it")
            state = geography_state(geography)
        tagged = state_geography(state)
        if tagged is None or (geography is not None and tagged is not geography):
            raise ValueError(f"a {kind} state must carry its geography's tag")
        store = self._geographies.get(tagged)
        if store is None:  # as for every write to a geography this deployment has no account for
            raise BadRequest(N_("Geography %(value)s is not configured in this deployment.", value=repr(tagged.value)))
        return store.create(kind, payload, ttl=ttl, state=state)

    def consume(self, kind: str, state: str) -> dict[str, Any]:
        """Return the payload exactly once, from the account the kind and the state's tag name.

        Unknown, expired or used state raises ``StateError``; so does a tag that is missing, unknown or names a
        geography without an account here (nothing is looked up then), or a tag on a state of the app's account.
        """
        if kind not in self.in_geography:
            if TAG_SEPARATOR in state:
                logger.info("State of kind %s refused: a geography's state offered to the app's account", kind)
                raise _unknown()
            return self._resumed(kind, self._app.consume(kind, state))
        geography = state_geography(state)
        store = self._geographies.get(geography) if geography is not None else None
        if store is None:
            logger.info("State of kind %s refused: no geography tag of this deployment", kind)
            raise _unknown()
        return self._resumed(kind, store.consume(kind, state))

    def seal(self, kind: str, payload: Mapping[str, Any], *, geography: Geography, ttl: timedelta = DEFAULT_TTL) -> str:
        """A state that carries ``payload`` sealed in itself (nothing is written): see "Sealed states" above."""
        if kind not in self.in_geography:
            raise ValueError(f"{kind} states live in the app's account: only a geography's kinds are sealed")
        if geography not in self._geographies:
            raise BadRequest(f"Geography {geography.value!r} is not configured in this deployment.")
        tag = GEOGRAPHY_TAGS[geography]
        body = {"p": self._with_reader(kind, payload), "x": (utcnow() + ttl).timestamp()}
        sealed = self._sealer.seal(json.dumps(body, separators=(",", ":")), purpose=_sealed_purpose(kind, tag))
        state = f"{tag}{TAG_SEPARATOR}{sealed}"
        if len(state) > MAX_SEALED_STATE:  # ``consume_sealed`` would refuse it after the EHR's sign-in: say so now
            raise BadRequest(N_("The launch request is too large."), code="state_too_large")
        return state

    def consume_sealed(self, kind: str, state: str) -> dict[str, Any]:
        """A sealed state's payload, exactly once: one conditional create in the tag's geography.

        Unknown (malformed, tampered with, sealed for another kind or tag, or its key retired), expired or
        used state raises ``StateError``, as ``consume`` does; only a state that opens and is live is written.
        """
        tag, _, sealed = state.partition(TAG_SEPARATOR)
        geography = _GEOGRAPHY_BY_TAG.get(tag)
        store = self._geographies.get(geography) if geography is not None else None
        if (
            kind not in self.in_geography
            or store is None
            or not sealed.startswith(SEALED_PREFIX)
            or len(state) > MAX_SEALED_STATE
            or not set(sealed) <= _SEALED_CHARACTERS
        ):
            logger.info("Sealed state of kind %s refused: not a sealed state of this deployment", kind)
            raise _unknown()
        try:
            body = json.loads(self._sealer.open(sealed, purpose=_sealed_purpose(kind, tag)))
            payload, expires = body["p"], datetime.fromtimestamp(float(body["x"]), UTC)
        except (SealedValueInvalid, ValueError, KeyError, TypeError):
            logger.info("Sealed state %s of kind %s cannot be opened", log_id(state), kind)
            raise _unknown() from None
        if expires <= utcnow():
            raise StateError("This sign-in link has expired. Please start again.", code="state_expired")
        store.mark_used(kind, _digest(state), expires)
        return self._resumed(kind, dict(payload))

    def _with_reader(self, kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``payload``, and the reader's language choice when ``kind`` is a round trip of theirs and they made one."""
        language = chosen_language() if kind in self.round_trips else None
        return {**payload, READER_LANGUAGE: language} if language is not None else dict(payload)

    def _resumed(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A consumed payload without the reader's language, which goes back to the request consuming it."""
        language = payload.pop(READER_LANGUAGE, None)
        if kind in self.round_trips:
            resume(language)
        return payload


class AuthStateStore:
    """``AuthStates`` of one account (``StateRouter`` picks the account)."""

    def __init__(self, account: StorageAccount, sealer: Sealer) -> None:
        self._account = account
        self._sealer = sealer

    def create(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        ttl: timedelta = DEFAULT_TTL,
        state: str | None = None,
    ) -> str:
        """Store ``payload`` under a fresh unguessable state (256 bits) and return it."""
        value = state or random_token()
        now = utcnow()
        entity = {
            "PartitionKey": kind,
            "RowKey": value,
            "Payload": self._sealer.seal(
                json.dumps(dict(payload), separators=(",", ":")), purpose=_purpose(kind, value)
            ),
            "CreatedAt": now,
            "ExpiresAt": now + ttl,
            "Consumed": False,
        }
        with storage_errors(self._account.name):
            insert_row(self._account.table(TABLE), entity)
        return value

    def mark_used(self, kind: str, key: str, expires_at: datetime) -> None:
        """Single use of a sealed state in one write: the first create of its key wins, any other is a reuse."""
        now = utcnow()
        entity = {
            "PartitionKey": kind,
            "RowKey": key,
            "CreatedAt": now,
            "ExpiresAt": expires_at,
            "Consumed": True,
            "ConsumedAt": now,
        }
        with storage_errors(self._account.name):
            try:
                insert_row(self._account.table(TABLE), entity)
            except ResourceExistsError:
                raise StateError(
                    "This sign-in link was already used. Please start again.", code="state_reused"
                ) from None

    def consume(self, kind: str, state: str) -> dict[str, Any]:
        """Return the payload exactly once; unknown, expired or used state raises ``StateError``."""
        if not _looks_like_state(state):
            raise _unknown()
        table = self._account.table(TABLE)
        with storage_errors(self._account.name):
            try:
                entity = table.get_entity(kind, state)
            except ResourceNotFoundError:
                raise _unknown() from None
            if entity.get("Consumed"):
                raise StateError(N_("This sign-in link was already used. Please start again."), code="state_reused")
            if _as_datetime(entity["ExpiresAt"]) <= utcnow():
                raise StateError(N_("This sign-in link has expired. Please start again."), code="state_expired")
            sealed = entity.get("Payload") or ""
            entity["Consumed"] = True
            entity["ConsumedAt"] = utcnow()
            entity["Payload"] = ""  # single use needs no payload from here on
            try:
                table.update_entity(entity, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified)
            except (ResourceModifiedError, ResourceNotFoundError):
                raise StateError(
                    N_("This sign-in link was already used. Please start again."), code="state_reused"
                ) from None
        try:
            payload: dict[str, Any] = json.loads(self._sealer.open(sealed, purpose=_purpose(kind, state)))
        except SealedValueInvalid:
            logger.error(
                "State %s of kind %s cannot be opened (tampered with, or its key retired)", log_id(state), kind
            )
            raise _unknown() from None
        return payload


def _purpose(kind: str, state: str) -> str:
    return f"{TABLE}/{kind}/{state}"


def _sealed_purpose(kind: str, tag: str) -> str:
    return f"{TABLE}/{kind}/sealed/{tag}"


def _digest(state: str) -> str:
    """The row key of a consumed sealed state: its SHA-256 (a state is too long, and not ours to keep)."""
    return hashlib.sha256(state.encode()).hexdigest()


def _looks_like_state(value: str) -> bool:
    """A state of ours: URL-safe base64, optionally behind a geography tag (Table keys may not hold / \\ # ?)."""
    return _is_token(value) or state_geography(value) is not None


def _is_token(value: str) -> bool:
    return 16 <= len(value) <= 128 and all(c in _TOKEN_CHARACTERS for c in value)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))
