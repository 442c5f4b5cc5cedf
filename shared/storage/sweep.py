"""Deletes expired short-lived rows. Table Storage has no TTL, so a timer does it.

Every short-lived table stores ``ExpiresAt``; readers already reject expired rows, so the
sweep only reclaims space and keeps the "purged within 24 h" promise.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.kernel.clock import utcnow
from shared.storage.accounts import StorageAccount, storage_errors


@dataclass(frozen=True)
class SweepResult:
    table: str
    deleted: int


def sweep_expired(account: StorageAccount, table_name: str, *, batch_limit: int = 5000) -> SweepResult:
    """Delete up to ``batch_limit`` rows of ``table_name`` whose ``ExpiresAt`` has passed."""
    table = account.table(table_name)
    deleted = 0
    with storage_errors(account.name):
        expired = table.query_entities(
            "ExpiresAt lt @now", parameters={"now": utcnow()}, select=["PartitionKey", "RowKey"]
        )
        for entity in expired:
            table.delete_entity(entity["PartitionKey"], entity["RowKey"])
            deleted += 1
            if deleted >= batch_limit:
                break
    return SweepResult(table=table_name, deleted=deleted)
