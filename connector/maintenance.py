"""Timers that keep short-lived state short-lived."""

from __future__ import annotations

import logging

import azure.functions as func

from shared import auth_state, sessions
from shared.storage import get_storage
from shared.sweep import sweep_expired

bp = func.Blueprint()
logger = logging.getLogger("connector.maintenance")

# Tables in the app's account whose rows carry ExpiresAt.
APP_SHORT_LIVED_TABLES = (auth_state.TABLE, sessions.TABLE)


@bp.timer_trigger(arg_name="timer", schedule="0 */15 * * * *", run_on_startup=False, use_monitor=False)
def sweep_expired_state(timer: func.TimerRequest) -> None:
    """Delete expired OAuth state and other short-lived rows (Table Storage has no TTL)."""
    storage = get_storage()
    for table in APP_SHORT_LIVED_TABLES:
        result = sweep_expired(storage.app, table)
        logger.info("Swept %d expired rows from %s", result.deleted, result.table)
