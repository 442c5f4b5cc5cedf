"""Timers that keep short-lived state short-lived."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import auth_state, sessions, visits
from shared.storage import get_storage
from shared.sweep import sweep_expired

bp = func.Blueprint()
logger = logging.getLogger("connector.maintenance")

# Tables whose rows carry ExpiresAt: in the app's account, and in every geography's account.
APP_SHORT_LIVED_TABLES = (auth_state.TABLE, sessions.TABLE)
GEOGRAPHY_SHORT_LIVED_TABLES = (visits.TABLE,)


@bp.timer_trigger(arg_name="timer", schedule="0 */15 * * * *", run_on_startup=False, use_monitor=False)
def sweep_expired_state(timer: func.TimerRequest) -> None:
    """Delete expired OAuth state, visits and other short-lived rows (Table Storage has no TTL)."""
    storage = get_storage()
    targets = [(storage.app, table) for table in APP_SHORT_LIVED_TABLES] + [
        (storage.for_geography(geography), table)
        for geography in storage.geographies
        for table in GEOGRAPHY_SHORT_LIVED_TABLES
    ]
    for account, table in targets:
        result = sweep_expired(account, table)
        logger.info("Swept %d expired rows from %s in %s", result.deleted, result.table, account.name)
