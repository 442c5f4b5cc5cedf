"""A configuration's report settings, table ``ReportSettings`` in the app's account: analytics on or off,
retention in days, and whether the report shows the CSN (an EHR identifier) as the appointment id.

A configuration without a row has the defaults (analytics on, 90 days, no CSN). The writeback worker reads
the settings once per ``MEMORY_SECONDS`` per process, so switching analytics off stops recording everywhere
within that time (and at once in the process that saved it).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.kernel.clock import utcnow
from shared.kernel.inventory import Account, Classification, Field, Kind, Protection, Store, key, operational
from shared.kernel.memo import Memo
from shared.kernel.single_flight import SingleFlight
from shared.storage.accounts import StorageAccount, insert_row, storage_errors

TABLE = "ReportSettings"
ROW = "report"
DEFAULT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 730
MEMORY_SECONDS = 60.0

INVENTORY = (
    Store(
        TABLE,
        Kind.TABLE,
        Account.APP,
        "each configuration's usage report settings (analytics on/off, retention, CSN shown or not)",
        (
            Field("PartitionKey", Classification.TENANT, Protection.CLEAR, "configuration id"),
            key("RowKey", "constant 'report'"),
            *operational("Analytics", "RetentionDays", "ShowCsn", "UpdatedAt", "Deleted", "Geography"),
        ),
        "while the configuration exists (written with the defaults on its first recorded visit); then until its "
        "report data is deleted",
        "deleting the configuration marks it (Deleted, Geography); report_upkeep then deletes the configuration's "
        "report rows and this row",
    ),
)


@dataclass(frozen=True)
class ReportPreferences:
    analytics: bool = True
    retention_days: int = DEFAULT_RETENTION_DAYS
    show_csn: bool = False
    updated_at: datetime | None = None
    deleted: bool = False  # the configuration was deleted: its report data is being removed
    geography: str | None = None  # where that data lives (set with ``deleted``)


class ReportPreferenceStore:
    def __init__(self, account: StorageAccount) -> None:
        self._account = account
        self._memory: Memo[str, ReportPreferences] = Memo(MEMORY_SECONDS, max_items=5_000)
        self._reading: SingleFlight[str, ReportPreferences] = SingleFlight()

    def get(self, configuration_id: str) -> ReportPreferences:
        return self._read(configuration_id)

    def cached(self, configuration_id: str, *, geography: str | None = None) -> ReportPreferences:
        """The settings as this process last read them (at most ``MEMORY_SECONDS`` old): the worker's read.

        A configuration without a row gets one with the defaults (and its ``geography``), so the retention
        timer finds every configuration with report data."""
        return self._reading.run(  # one read for the threads that find it missing meanwhile
            configuration_id,
            lambda: self._read(configuration_id, create_in=geography),
            kept=lambda: self._memory.get(configuration_id),
        )

    def save(self, configuration_id: str, preferences: ReportPreferences) -> ReportPreferences:
        saved = ReportPreferences(
            analytics=preferences.analytics,
            retention_days=max(1, min(MAX_RETENTION_DAYS, preferences.retention_days)),
            show_csn=preferences.show_csn,
            updated_at=utcnow(),
            geography=preferences.geography,
        )
        with storage_errors(self._account.name):
            self._account.table(TABLE).upsert_entity(_row(configuration_id, saved), mode=UpdateMode.REPLACE)
        self._memory.put(configuration_id, saved)
        return saved

    def all(self) -> dict[str, ReportPreferences]:
        """Every configuration with settings of its own (the retention sweep's list)."""
        with storage_errors(self._account.name):
            rows = list(self._account.table(TABLE).query_entities("RowKey eq @row", parameters={"row": ROW}))
        return {str(row["PartitionKey"]): _from_row(row) for row in rows}

    def mark_deleted(self, configuration_id: str, geography: str) -> None:
        """The configuration is gone: record nothing more, and let the upkeep delete its report data."""
        with storage_errors(self._account.name):
            self._account.table(TABLE).upsert_entity(
                {
                    "PartitionKey": configuration_id,
                    "RowKey": ROW,
                    "Analytics": False,
                    "Deleted": True,
                    "Geography": geography,
                    "UpdatedAt": utcnow(),
                },
                mode=UpdateMode.MERGE,
            )
        self._memory.forget(configuration_id)

    def delete(self, configuration_id: str) -> None:
        with storage_errors(self._account.name):
            self._account.table(TABLE).delete_entity(configuration_id, ROW)  # absent: nothing to do
        self._memory.forget(configuration_id)

    def _read(self, configuration_id: str, *, create_in: str | None = None) -> ReportPreferences:
        with storage_errors(self._account.name):
            try:
                row = self._account.table(TABLE).get_entity(configuration_id, ROW)
            except ResourceNotFoundError:
                found = ReportPreferences(geography=create_in)
                if create_in is not None:
                    with suppress(ResourceExistsError):
                        insert_row(self._account.table(TABLE), _row(configuration_id, found))
            else:
                found = _from_row(row)
        self._memory.put(configuration_id, found)
        return found


def _row(configuration_id: str, preferences: ReportPreferences) -> dict[str, object]:
    row: dict[str, object] = {
        "PartitionKey": configuration_id,
        "RowKey": ROW,
        "Analytics": preferences.analytics,
        "RetentionDays": preferences.retention_days,
        "ShowCsn": preferences.show_csn,
        "UpdatedAt": preferences.updated_at or utcnow(),
    }
    if preferences.geography:
        row["Geography"] = preferences.geography
    return row


def _from_row(row: object) -> ReportPreferences:
    data = dict(row)  # type: ignore[call-overload]
    retention = data.get("RetentionDays")
    return ReportPreferences(
        analytics=data.get("Analytics") is not False,
        retention_days=int(retention) if isinstance(retention, int) and retention > 0 else DEFAULT_RETENTION_DAYS,
        show_csn=data.get("ShowCsn") is True,
        updated_at=data.get("UpdatedAt") if isinstance(data.get("UpdatedAt"), datetime) else None,
        deleted=data.get("Deleted") is True,
        geography=str(data["Geography"]) if data.get("Geography") else None,
    )
