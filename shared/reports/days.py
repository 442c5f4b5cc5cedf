"""Daily summaries, table ``ReportDays`` in the configuration's geography: what a report page reads.

A visit belongs to the UTC day of its first fact; its facts may lie in the next day's partition too (a visit
across midnight), so a day is computed from the facts of the day, the day after, and those of the day before that
belong to visits across its midnight (that partition is read by its keys, ``_neighbourhood``). Rows:

- ``PK=<configuration id>, RK=<YYYYMMDD>``: the day's marker: ``Computed`` (when its summaries were last
  computed), ``Touched`` (when facts that can change this day's summaries were last written: each day of a visit
  whose facts were copied, ``mark_touched``), ``Precise`` (its summaries were computed under that rule), and
  ``Changed`` (when a fact of that day was last written after the day had closed: markers written before
  ``Touched`` existed, read with the neighbours' rule below);
- ``PK=<configuration id>, RK=<YYYYMMDD>_<department hash>``: one summary per department (``Totals``);
- ``PK=~<YYYYMMDD>, RK=<configuration id>``: the configurations with facts that day (the timer's list).

A summary is computed from the facts of three partitions, but only the visits whose first fact falls on its
day count, so a write of a visit's facts can change only the summaries of that visit's own days: every writer
marks those (``Touched``), and a summary computed after its day's last ``Touched`` (and after its and its
neighbours' last ``Changed``) is used as it is: when it was computed after the day closed (two days after its
start, when no visit of it can still be going), or is less than ``SETTLED`` old. A day whose facts stopped
changing is not computed every 15 minutes any more: yesterday, once its last visits across midnight have ended,
is computed again only every ``SETTLED`` and once after it closes. (A summary computed before ``Touched`` was
written by every writer has no ``Precise`` mark: it is used only for ``FRESH`` until the day closes, as then.)
``Touched`` only moves forward (an etag-guarded write), so two writers' marks never leave the older one. The
upkeep timer (``connector/maintenance.py``) computes the days that changed every 15 minutes, so pages rarely do.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.kernel.errors import Conflict
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, operational
from shared.kernel.memo import Memo
from shared.kernel.settings import Geography
from shared.reports.facts import VisitFacts, VisitSummary, merged, summarize
from shared.reports.store import ReportFacts, StoredFacts, delete_rows
from shared.reports.totals import Totals
from shared.storage.accounts import Storage, insert_row, storage_errors

TABLE = "ReportDays"
FRESH = timedelta(minutes=20)
# A marked (``Precise``) summary of a day not yet closed is computed again at least this often, marks or not: a
# mark lost to a process killed between a copy and its mark, or a visit whose row no longer lists the day it began
# (a relaunch after its expired row was swept), is repaired within it, and for good once the day has closed.
SETTLED = timedelta(hours=3)
LIST_DAYS = 4  # a day's list of configurations is kept this many days (the timer reads the last three)
DAY_FORMAT = "%Y%m%d"
_MARK_ATTEMPTS = 8
# A day's summary reads the rows of the day before in full only for its visits across midnight: a point read each
# up to this many (a second or two of reads at most), the whole partition beyond (a query per 1,000 rows).
MIDNIGHT_READS_AT_MOST = 200
WATERMARK = "~flush"  # partition of the report copy's watermark, one row per geography (after every "~<day>")

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.GEOGRAPHY,
        "usage report summaries per configuration, day and department (counts and histograms, no visit), and "
        "the list of configurations with facts per day",
        (
            Field(
                "PartitionKey",
                Classification.TENANT,
                Protection.CLEAR,
                "configuration id, or ~ and a UTC day, or ~flush (the report copy's watermark per geography)",
            ),
            Field(
                "RowKey",
                Classification.TENANT,
                Protection.CLEAR,
                "day and SHA-256 of the department, or a configuration id",
            ),
            Field("Department", Classification.TENANT, Protection.CLEAR, "departmentId (a department, not a person)"),
            Field(
                "Totals",
                Classification.OPERATIONAL,
                Protection.CLEAR,
                "counts by status, wait/duration buckets, visits per hour, attendants by role",
            ),
            *operational("Computed", "Touched", "Precise", "Changed", "Until"),
        ),
        "the configuration's report retention (default 90 days); a day's list of configurations 3 days",
        "the report upkeep timer once past the retention (a key-range query per configuration), or all of a "
        "deleted configuration's; a day's list after 4 days",
    ),
)


PartitionCache = dict[date, list[StoredFacts]]


def department_row(day: date, department: str) -> str:
    return f"{day:{DAY_FORMAT}}_{hashlib.sha256(department.encode()).hexdigest()[:16]}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class ReportVisit:
    """One visit as the report shows it."""

    id: str  # the keyed report id (the pseudonymous appointment id)
    day: date
    facts: VisitFacts
    summary: VisitSummary


@dataclass
class DaySummary:
    day: date
    departments: dict[str, Totals] = field(default_factory=dict)  # "" = no department known
    computed: datetime | None = None
    precise: bool = False  # computed when every write of its facts marked the day (``Touched``)


def first_fact(facts: VisitFacts) -> datetime | None:
    times = [launch.at for launch in facts.launches.values()]
    for a in facts.attendees.values():
        times += [t for t in (a.lobby, a.joined, a.present, a.left) if t is not None]
    return min(times) if times else None


class ReportDays:
    def __init__(self, storage: Storage, facts: ReportFacts) -> None:
        self._storage = storage
        self._facts = facts
        self._active: Memo[tuple[str, str, date], bool] = Memo(3600.0, max_items=10_000)
        self.operations = 0

    # --- writes from the recorder ----------------------------------------------------------------------

    def touched(self, geography: Geography, configuration_id: str, day: date, *, now: datetime) -> None:
        """A fact of ``day`` was written: list the configuration for the day (once per process), and mark a
        closed day changed so its summary is computed again."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        memory = (geography.value, configuration_id, day)
        with storage_errors(account.name):
            if self._active.get(memory) is None:
                self.operations += 1
                table.upsert_entity(
                    {"PartitionKey": f"~{day:{DAY_FORMAT}}", "RowKey": configuration_id},
                    mode=UpdateMode.REPLACE,
                )
                self._active.put(memory, True)
            if now >= day_start(day) + timedelta(days=2):
                self.operations += 1
                table.upsert_entity(
                    {"PartitionKey": configuration_id, "RowKey": f"{day:{DAY_FORMAT}}", "Changed": now},
                    mode=UpdateMode.MERGE,
                )

    def mark_touched(self, geography: Geography, configuration_id: str, days: Iterable[date], *, now: datetime) -> None:
        """Facts that can change the summaries of ``days`` were written (one marker write per day): each is computed
        again when asked. Called after the facts are stored, so a summary computed after ``now`` has read them."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        with storage_errors(account.name):
            for day in sorted(set(days)):
                self._mark(table, configuration_id, f"{day:{DAY_FORMAT}}", now)

    def _mark(self, table: Any, configuration_id: str, row: str, now: datetime) -> None:
        """``Touched`` = ``now`` unless a later mark is there (another writer's, whose write came first)."""
        for _ in range(_MARK_ATTEMPTS):
            self.operations += 1
            try:
                marker = table.get_entity(configuration_id, row)
            except ResourceNotFoundError:
                try:
                    self.operations += 1
                    insert_row(table, {"PartitionKey": configuration_id, "RowKey": row, "Touched": now})
                    return
                except ResourceExistsError:
                    continue  # another writer made it meanwhile: compare with theirs
            stored = marker.get("Touched")
            if isinstance(stored, datetime) and stored >= now:
                return
            try:
                self.operations += 1
                table.update_entity(
                    {"PartitionKey": configuration_id, "RowKey": row, "Touched": now},
                    mode=UpdateMode.MERGE,
                    etag=marker.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue
        raise Conflict("The report's day marker is changing too quickly.", code="report_marker_contention")

    # --- the visits of a day --------------------------------------------------------------------------

    def visits(
        self, geography: Geography, configuration_id: str, day: date, *, read: PartitionCache | None = None
    ) -> list[ReportVisit]:
        """The visits whose first fact falls on ``day``, each with all its facts (three partitions; ``read``
        keeps partitions for the next day's call, so consecutive days read each partition once)."""
        rows: dict[str, VisitFacts] = {}
        for stored in self._neighbourhood(geography, configuration_id, day, read):
            current = rows.get(stored.visit)
            rows[stored.visit] = stored.facts if current is None else merged(current, stored.facts)
        found = []
        for visit, facts in rows.items():
            first = first_fact(facts)
            if first is not None and first.date() == day:
                found.append(ReportVisit(visit, day, facts, summarize(facts)))
        found.sort(key=lambda v: (v.summary.first_seen or day_start(day), v.id))
        return found

    def _neighbourhood(
        self, geography: Geography, configuration_id: str, day: date, read: PartitionCache | None
    ) -> Iterable[StoredFacts]:
        """The rows that can tell which visits began on ``day``, and all their facts.

        A row holds the facts of its own day (or none with a time), so the day before matters only for the visits
        that also have a row on the day or the day after: a visit across that midnight. Its partition is read by
        its keys only, and those visits' rows in full (a point read each; the whole partition when there are more
        than ``MIDNIGHT_READS_AT_MOST``): a day's summary no longer goes through every fact of the day before."""
        previous = day - timedelta(days=1)
        current = self._partition(geography, configuration_id, day, read)
        following = self._partition(geography, configuration_id, day + timedelta(days=1), read)
        if read is not None and previous in read:
            before = read.pop(previous)  # the next day (ascending) no longer needs it
        else:
            across = self._facts.visits_of(geography, configuration_id, previous)
            across &= {stored.visit for stored in (*current, *following)}
            if len(across) > MIDNIGHT_READS_AT_MOST:
                before = list(self._facts.day(geography, configuration_id, previous))
            else:
                read_one = (self._facts.one(geography, configuration_id, visit, previous) for visit in sorted(across))
                before = [stored for stored in read_one if stored is not None]  # None: swept meanwhile
        return (*before, *current, *following)

    def _partition(
        self, geography: Geography, configuration_id: str, day: date, read: PartitionCache | None
    ) -> list[StoredFacts]:
        if read is None:
            return list(self._facts.day(geography, configuration_id, day))
        if day not in read:
            read[day] = list(self._facts.day(geography, configuration_id, day))
        return read[day]

    # --- summaries ------------------------------------------------------------------------------------

    def compute(
        self,
        geography: Geography,
        configuration_id: str,
        day: date,
        *,
        now: datetime,
        read: PartitionCache | None = None,
    ) -> DaySummary:
        """Summarize ``day`` from its facts and store the summary (one transaction) with its marker."""
        departments: dict[str, Totals] = defaultdict(Totals)
        for visit in self.visits(geography, configuration_id, day, read=read):
            departments[visit.summary.department or ""].add(visit.summary)
        summary = DaySummary(day, dict(departments), now)
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        prefix = f"{day:{DAY_FORMAT}}_"
        with storage_errors(account.name):
            self.operations += 1
            existing = {
                str(row["RowKey"])
                for row in table.query_entities(
                    "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high",
                    parameters={"pk": configuration_id, "low": prefix, "high": prefix + "~"},
                    select=["RowKey"],
                )
            }
            operations: list[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]] = []
            written = set()
            for department, totals in summary.departments.items():
                row = department_row(day, department)
                written.add(row)
                entity = {
                    "PartitionKey": configuration_id,
                    "RowKey": row,
                    "Department": department,
                    "Totals": totals.to_json(),
                }
                operations.append(("upsert", entity, {"mode": UpdateMode.REPLACE}))
            for row in existing - written:
                operations.append(("delete", {"PartitionKey": configuration_id, "RowKey": row}))
            operations.append(
                (
                    "upsert",
                    {
                        "PartitionKey": configuration_id,
                        "RowKey": f"{day:{DAY_FORMAT}}",
                        "Computed": now,
                        "Precise": True,
                    },
                    {"mode": UpdateMode.MERGE},
                )
            )
            for start in range(0, len(operations), 100):
                self.operations += 1
                table.submit_transaction(operations[start : start + 100])
        return summary

    def stored(
        self, geography: Geography, configuration_id: str, first: date, last: date
    ) -> dict[date, tuple[DaySummary, datetime | None]]:
        """The stored summaries of ``first``..``last`` with each day's last late change (one query per 1,000 rows)."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        found: dict[date, tuple[DaySummary, datetime | None]] = {}
        markers: dict[date, dict[str, Any]] = {}
        with storage_errors(account.name):
            pages = table.query_entities(
                "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
                parameters={
                    "pk": configuration_id,
                    "low": f"{first - timedelta(days=1):{DAY_FORMAT}}",
                    "high": f"{last + timedelta(days=1):{DAY_FORMAT}}~",
                },
            ).by_page()
            for page in pages:
                self.operations += 1
                for row in page:
                    rk = str(row["RowKey"])
                    day = datetime.strptime(rk[:8], DAY_FORMAT).replace(tzinfo=UTC).date()
                    if len(rk) == 8:
                        markers[day] = dict(row)
                    elif first <= day <= last and isinstance(row.get("Totals"), str):
                        summary = found.setdefault(day, (DaySummary(day), None))[0]
                        summary.departments[str(row.get("Department") or "")] = Totals.from_json(row["Totals"])
        result: dict[date, tuple[DaySummary, datetime | None]] = {}
        day = first
        while day <= last:
            marker = markers.get(day, {})
            summary = found.get(day, (DaySummary(day), None))[0]
            summary.computed = marker.get("Computed") if isinstance(marker.get("Computed"), datetime) else None
            summary.precise = marker.get("Precise") is True
            changes = [markers.get(day + timedelta(days=o), {}).get("Changed") for o in (-1, 0, 1)]
            changes.append(marker.get("Touched"))
            changed = max((c for c in changes if isinstance(c, datetime)), default=None)
            result[day] = (summary, changed)
            day += timedelta(days=1)
        return result

    def copied_until(self, geography: Geography) -> datetime | None:
        """When the last copy of the visit rows' report facts began (``shared.reports.fold``); None: never."""
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            try:
                until = account.table(TABLE).get_entity(WATERMARK, geography.value).get("Until")
            except ResourceNotFoundError:
                return None
        return until if isinstance(until, datetime) else None

    def mark_copied(self, geography: Geography, until: datetime) -> None:
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            account.table(TABLE).upsert_entity(
                {"PartitionKey": WATERMARK, "RowKey": geography.value, "Until": until}, mode=UpdateMode.REPLACE
            )

    def active(self, geography: Geography, day: date) -> list[str]:
        """The configurations with facts on ``day``."""
        account = self._storage.for_geography(geography)
        with storage_errors(account.name):
            rows = account.table(TABLE).query_entities(
                "PartitionKey eq @pk", parameters={"pk": f"~{day:{DAY_FORMAT}}"}, select=["RowKey"]
            )
            return [str(row["RowKey"]) for row in rows]

    def forget_active(self, geography: Geography, configuration_id: str, today: date) -> None:
        """Take a deleted configuration off the recent days' lists (the timer then computes nothing for it)."""
        account = self._storage.for_geography(geography)
        table = account.table(TABLE)
        with storage_errors(account.name):
            for offset in range(-1, 4):
                table.delete_entity(f"~{today - timedelta(days=offset):{DAY_FORMAT}}", configuration_id)
        self._active.clear()

    def delete_days_before(self, geography: Geography, configuration_id: str, cutoff: date) -> int:
        """The configuration's summaries and markers of days before ``cutoff`` (one partition, a key range)."""
        account = self._storage.for_geography(geography)
        return delete_rows(
            account.table(TABLE),
            account.name,
            "PartitionKey eq @pk and RowKey lt @high",
            {"pk": configuration_id, "high": f"{cutoff:{DAY_FORMAT}}"},
            limit=100_000,
        )

    def delete_lists_before(self, geography: Geography, cutoff: date) -> int:
        """The days' lists of configurations before ``cutoff`` (partitions ``~<day>``)."""
        account = self._storage.for_geography(geography)
        return delete_rows(
            account.table(TABLE),
            account.name,
            "PartitionKey ge @low and PartitionKey lt @high",
            {"low": "~", "high": f"~{cutoff:{DAY_FORMAT}}"},
            limit=100_000,
        )


def usable(summary: DaySummary, changed: datetime | None, *, now: datetime) -> bool:
    """Whether a stored summary can be shown as it is (see the module's docstring)."""
    computed = summary.computed
    if computed is None:
        return False
    if changed is not None and changed > computed:
        return False
    closed = computed >= day_start(summary.day) + timedelta(days=2)
    return closed or now - computed < (SETTLED if summary.precise else FRESH)
