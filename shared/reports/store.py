"""Table ``ReportVisits`` in the configuration's geography: one row per visit per UTC day of its events.

Partition ``<configuration id>_<YYYYMMDD>`` (a day of a configuration: what a report reads), row key a keyed
id of the visit (not the visit's own key, so the report cannot be joined with the short-lived visit rows).
A row holds the merged facts (``shared.reports.facts``): times, roles, a keyed id of the organizer, hashed
call-participant ids, the department id, and the CSN only when the configuration opted in, sealed.

Writing is one merge per event: the row this process last wrote is remembered with its etag, so an event
costs one etag-guarded write (none when it adds nothing, e.g. a duplicate) and the first event of a visit-day
one insert; a conflict or a cold cache costs a read first.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.kernel.errors import Conflict, SealedValueInvalid
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key
from shared.kernel.memo import Memo
from shared.kernel.sealing import Sealer
from shared.kernel.settings import Geography
from shared.reports.facts import MAX_ATTENDEES, AttendeeFacts, LaunchFacts, VisitFacts, earlier, later, merged
from shared.storage.accounts import Storage, insert_row, storage_errors
from shared.visits.events import Role

TABLE = "ReportVisits"
CSN_PURPOSE = "ReportVisits"
_ATTEMPTS = 10
MEMORY_SECONDS = 900.0  # a visit's events arrive within minutes of each other

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "usage report facts: one row per visit and UTC day, for the configuration's admins, approver and report "
        "readers (only while the configuration's analytics are on)",
        (
            key("PartitionKey", "configuration id and UTC day (YYYYMMDD)"),
            Field("RowKey", Classification.EHR_ID, Protection.HMAC, "keyed id of the visit (report purpose)"),
            Field("Launched", Classification.OPERATIONAL, Protection.CLEAR, "per role: the earliest launch time"),
            Field(
                "Organizer",
                Classification.PERSONAL,
                Protection.HMAC,
                "keyed id of the clinician whose launch came first (no name, no EHR id)",
            ),
            Field(
                "Departments",
                Classification.TENANT,
                Protection.CLEAR,
                "per role: the departmentId the EHR confirmed at launch (a department, not a person)",
            ),
            Field(
                "Attendees",
                Classification.OPERATIONAL,
                Protection.HASHED,
                "per attendee (role, or SHA-256 of a random call-leg id): first lobby, first in meeting, last "
                "present, last left",
            ),
            Field(
                "Csn",
                Classification.EHR_ID,
                Protection.SEALED,
                "the visit's CSN, only when the configuration's admin opted in to show it",
            ),
        ),
        "the configuration's report retention (default 90 days, 1-730)",
        "the report upkeep timer, a whole day (partition) at a time once it is past the retention "
        "(shared.reports.retention), or all of them once the configuration is deleted",
    ),
)


def partition(configuration_id: str, day: date) -> str:
    return f"{configuration_id}_{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class StoredFacts:
    visit: str  # the row key
    day: date
    facts: VisitFacts


@dataclass
class _Known:
    facts: VisitFacts
    etag: str


class ReportFacts:
    def __init__(self, storage: Storage, sealer: Sealer) -> None:
        self._storage = storage
        self._sealer = sealer
        self._known: Memo[tuple[str, str, str], _Known] = Memo(MEMORY_SECONDS, max_items=50_000)
        self._locks = tuple(threading.Lock() for _ in range(64))
        self.operations = 0  # Table calls made (benchmarks and tests read it)

    def record(
        self,
        geography: Geography,
        configuration_id: str,
        visit: str,
        day: date,
        facts: VisitFacts,
    ) -> bool:
        """Merge ``facts`` into the visit's row of ``day``; True when something was written."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        pk = partition(configuration_id, day)
        memory = (geography.value, pk, visit)
        # One writer per row at a time in this process (a busy visit's burst queues here, each write starting
        # from the etag the previous one got); across instances the etag retry below applies.
        with self._locks[hash(memory) % len(self._locks)]:
            return self._record(table, account.name, geography, pk, visit, memory, facts)

    def _record(
        self,
        table: Any,
        account: str,
        geography: Geography,
        pk: str,
        visit: str,
        memory: tuple[str, str, str],
        facts: VisitFacts,
    ) -> bool:
        known = self._known.get(memory)
        with storage_errors(account):
            if known is None:
                if self._inserted(table, geography, pk, visit, memory, facts):
                    return True
                known = self._read(table, geography, pk, visit)
            for _ in range(_ATTEMPTS):
                if known is None:  # swept meanwhile: start again
                    if self._inserted(table, geography, pk, visit, memory, facts):
                        return True
                    known = self._read(table, geography, pk, visit)
                    continue
                combined = merged(known.facts, facts)
                if combined == known.facts:
                    self._known.put(memory, known)
                    return False
                try:
                    self.operations += 1
                    metadata = table.update_entity(
                        self.entity(geography, pk, visit, combined),
                        mode=UpdateMode.REPLACE,
                        etag=known.etag,
                        match_condition=MatchConditions.IfNotModified,
                    )
                    self._known.put(memory, _Known(combined, str(metadata.get("etag"))))
                    return True
                except (ResourceModifiedError, ResourceNotFoundError):
                    time.sleep(random.uniform(0, 0.05))  # noqa: S311 - jitter, so colliding instances spread out
                    known = self._read(table, geography, pk, visit)
        raise Conflict("A visit's report row is changing too quickly; the event is retried.", code="report_contention")

    def _inserted(
        self,
        table: Any,
        geography: Geography,
        pk: str,
        visit: str,
        memory: tuple[str, str, str],
        facts: VisitFacts,
    ) -> bool:
        """Insert the visit-day's row holding ``facts``; False when a row is there already."""
        try:
            self.operations += 1
            metadata = insert_row(table, self.entity(geography, pk, visit, facts))
        except ResourceExistsError:
            return False
        self._known.put(memory, _Known(facts, str(metadata.get("etag"))))
        return True

    def _read(self, table: Any, geography: Geography, pk: str, visit: str) -> _Known | None:
        self.operations += 1
        try:
            entity = table.get_entity(pk, visit)
        except ResourceNotFoundError:
            return None
        return _Known(self._facts(geography, entity), str(entity.metadata.get("etag")))

    def has(self, geography: Geography, configuration_id: str, visit: str, day: date) -> bool:
        """Whether the visit has facts on ``day`` (one point read, only the key selected)."""
        account = self._storage.for_geography(geography)
        self.operations += 1
        with storage_errors(account.name):
            try:
                account.table(TABLE).get_entity(partition(configuration_id, day), visit, select=["RowKey"])
            except ResourceNotFoundError:
                return False
        return True

    def day(self, geography: Geography, configuration_id: str, day: date) -> Iterator[StoredFacts]:
        """Every visit row of one configuration's day: one partition, a query per 1,000 rows."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        pk = partition(configuration_id, day)
        with storage_errors(account.name):
            pages = table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}).by_page()
            for page in pages:
                self.operations += 1
                for entity in page:
                    yield StoredFacts(str(entity["RowKey"]), day, self._facts(geography, entity))

    def visits_of(self, geography: Geography, configuration_id: str, day: date) -> set[str]:
        """The row keys of one configuration's day: one partition, only the key selected (a query per 1,000 rows)."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        pk = partition(configuration_id, day)
        found: set[str] = set()
        with storage_errors(account.name):
            pages = table.query_entities("PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"]).by_page()
            for page in pages:
                self.operations += 1
                found.update(str(entity["RowKey"]) for entity in page)
        return found

    def one(self, geography: Geography, configuration_id: str, visit: str, day: date) -> StoredFacts | None:
        """One visit's row of one day (a point read), or None when it has none."""
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            known = self._read(account.table(TABLE), geography, partition(configuration_id, day), visit)
        return None if known is None else StoredFacts(visit, day, known.facts)

    def page(
        self, geography: Geography, configuration_id: str, day: date, *, after: str = "", size: int = 50
    ) -> tuple[list[StoredFacts], str | None]:
        """Up to ``size`` visit rows of a day after row key ``after`` (one query), and where to continue."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        pk = partition(configuration_id, day)
        with storage_errors(account.name):
            self.operations += 1
            pages = table.query_entities(
                "PartitionKey eq @pk and RowKey gt @after",
                parameters={"pk": pk, "after": after},
                results_per_page=size,
            ).by_page()
            page = list(next(pages, []))
            has_more = pages.continuation_token is not None  # type: ignore[attr-defined]
        rows = [StoredFacts(str(e["RowKey"]), day, self._facts(geography, e)) for e in page]
        return rows, (rows[-1].visit if rows and has_more else None)

    def delete_days_before(
        self, geography: Geography, configuration_id: str, cutoff: date, *, limit: int = 20_000
    ) -> int:
        """Delete the configuration's rows of days before ``cutoff`` (past the retention, or all of a deleted
        configuration's): a key-range query, deletes in transactions of 100 per partition; at most ``limit``."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        return delete_rows(
            table,
            account.name,
            "PartitionKey ge @low and PartitionKey lt @high",
            {"low": f"{configuration_id}_", "high": partition(configuration_id, cutoff)},
            limit=limit,
        )

    def forget_memory(self) -> None:
        self._known.clear()

    # --- entity mapping ----------------------------------------------------------------------------------

    def entity(self, geography: Geography, pk: str, visit: str, facts: VisitFacts) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": visit, **facts_columns(facts)}
        if facts.csn:
            entity["Csn"] = self._sealer.seal(facts.csn, purpose=_csn_purpose(geography, pk, visit))
        return entity

    def _facts(self, geography: Geography, entity: Any) -> VisitFacts:
        pk, visit = str(entity["PartitionKey"]), str(entity["RowKey"])
        csn = None
        if entity.get("Csn"):
            try:
                csn = self._sealer.open(str(entity["Csn"]), purpose=_csn_purpose(geography, pk, visit))
            except SealedValueInvalid:
                csn = None  # a retired key: the report shows the pseudonymous id instead
        return replace(facts_from_columns(entity), csn=csn)


def facts_columns(facts: VisitFacts) -> dict[str, str]:
    """A visit's facts as a row's columns (all but the CSN, which the caller seals for its place)."""
    return {
        "Launched": _dump({role.value: _ms(launch.at) for role, launch in facts.launches.items()}),
        "Organizer": next((launch.organizer for launch in facts.launches.values() if launch.organizer), ""),
        "Departments": _dump(
            {role.value: launch.department for role, launch in facts.launches.items() if launch.department}
        ),
        "Attendees": _dump({name: _attendee_value(a) for name, a in facts.attendees.items()}),
    }


def facts_from_columns(columns: Any) -> VisitFacts:
    """The facts of ``facts_columns`` (no CSN)."""
    launched = _load(columns.get("Launched"))
    departments = _load(columns.get("Departments"))
    organizer = str(columns.get("Organizer") or "") or None
    launches = {
        Role(role): LaunchFacts(
            at=_time(at) or datetime.min.replace(tzinfo=UTC),
            organizer=organizer if role == Role.PROVIDER.value else None,
            department=str(departments[role]) if departments.get(role) else None,
        )
        for role, at in launched.items()
        if role in Role.__members__.values()
    }
    attendees = {
        str(name): _attendee(value) for name, value in _load(columns.get("Attendees")).items() if _readable(value)
    }
    return VisitFacts(launches=launches, attendees=attendees)


def columns_with(columns: Mapping[str, Any] | None, facts: VisitFacts) -> dict[str, str] | None:
    """``columns`` (of ``facts_columns``; None: none yet) with ``facts`` merged in by ``merged``'s rule, or None
    when that changes no fact (the CSN aside: the caller's).

    For the columns this module writes, the same as ``facts_columns(merged(facts_from_columns(columns), facts))``;
    but an event's facts name one attendee (a Teams fact) or one launch, and for an attendee only that attendee's
    entry is decoded and encoded again, not every fact of the visit (the writeback folds each event into the
    visit row it writes).
    """
    if facts.launches or len(facts.attendees) != 1:
        before = facts_from_columns(columns) if columns else VisitFacts()
        after = merged(before, replace(facts, csn=None))
        return None if after == before else facts_columns(after)
    [(name, fact)] = facts.attendees.items()
    current = columns or _NO_FACTS
    # The entries as ``facts_from_columns`` reads them: one that does not read as an attendee is no fact.
    stored = {key: value for key, value in _load(current.get("Attendees")).items() if _readable(value)}
    new = _attendee_value(fact)
    if name in stored:
        # ``merged_attendee`` on the stored form (milliseconds), without making times of them and back.
        known = _normalized(stored[name])
        combined = [min(known[0], new[0]), earlier(known[1], new[1]), earlier(known[2], new[2]),
                    later(known[3], new[3]), later(known[4], new[4])]  # fmt: skip
        if combined == known:
            return None
    elif len(stored) >= MAX_ATTENDEES:
        return None  # ``merged`` keeps the first ``MAX_ATTENDEES``
    else:
        combined = new
    stored[name] = combined
    return {**current, "Attendees": _dump(stored)}


def _normalized(value: list[Any]) -> list[Any]:
    """A readable entry as ``_attendee_value(_attendee(value))`` writes it: a time that does not read is none."""
    return [value[0], *(_ms_or_none(x) for x in value[1:])]


def _ms_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _attendee_value(facts: AttendeeFacts) -> list[Any]:
    return [facts.role.value, _ms(facts.lobby), _ms(facts.joined), _ms(facts.present), _ms(facts.left)]


def _readable(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 5 and value[0] in _ROLES


def _attendee(value: Any) -> AttendeeFacts:
    """A readable (``_readable``) ``Attendees`` entry."""
    return AttendeeFacts(Role(value[0]), _time(value[1]), _time(value[2]), _time(value[3]), _time(value[4]))


_ROLES = frozenset(role.value for role in Role)


def delete_rows(table: Any, account: str, query: str, parameters: dict[str, Any], *, limit: int) -> int:
    """Delete what ``query`` finds, in transactions of up to 100 rows of one partition; at most ``limit``."""
    deleted = 0
    batch: list[tuple[str, dict[str, Any]]] = []
    with storage_errors(account):
        rows = table.query_entities(query, parameters=parameters, select=["PartitionKey", "RowKey"])
        for row in rows:
            key = {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"]}
            if batch and (len(batch) == 100 or batch[0][1]["PartitionKey"] != key["PartitionKey"]):
                table.submit_transaction(batch)
                batch = []
            batch.append(("delete", key))
            deleted += 1
            if deleted >= limit:
                break
        if batch:
            table.submit_transaction(batch)
    return deleted


def _csn_purpose(geography: Geography, pk: str, visit: str) -> str:
    return f"{CSN_PURPOSE}/{geography.value}/{pk}/{visit}"


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _load(value: Any) -> dict[str, Any]:
    if not isinstance(value, str) or not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else (moment - _EPOCH) // timedelta(milliseconds=1)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return _EPOCH + timedelta(milliseconds=value)


_NO_FACTS = MappingProxyType(facts_columns(VisitFacts()))  # a visit's columns before its first fact
