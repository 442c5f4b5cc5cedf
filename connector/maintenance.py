"""Timers that keep short-lived state short-lived."""

from __future__ import annotations

import logging

import azure.functions as func
from azure.core.exceptions import HttpResponseError

from connector.services import services
from shared.kernel.clock import utcnow
from shared.kernel.errors import ConnectorError
from shared.portal import sessions
from shared.reports.retention import enforce_retention, refresh_open_days
from shared.storage import state as auth_state
from shared.storage.sweep import sweep_expired
from shared.visits import repository as visits
from shared.writeback import ledger
from shared.writeback.worker import FAILURES_TABLE

bp = func.Blueprint()
logger = logging.getLogger(__name__)

# Tables whose rows carry ExpiresAt: in the app's account, and in every geography's account (AuthStates in
# both: the portal's sign-ins in the app's, the launches' in their configuration's geography).
APP_SHORT_LIVED_TABLES = (auth_state.TABLE, sessions.TABLE, FAILURES_TABLE)
GEOGRAPHY_SHORT_LIVED_TABLES = (auth_state.TABLE, visits.TABLE, ledger.TABLE)


@bp.timer_trigger(arg_name="timer", schedule="0 */15 * * * *", run_on_startup=False, use_monitor=False)
def sweep_expired_state(timer: func.TimerRequest) -> None:
    """Delete expired OAuth state, visits, writeback ledger and failure rows and other short-lived rows (no TTL)."""
    storage = services().storage
    targets = [(storage.app, table) for table in APP_SHORT_LIVED_TABLES] + [
        (storage.for_geography(geography), table)
        for geography in storage.geographies
        for table in GEOGRAPHY_SHORT_LIVED_TABLES
    ]
    failed = 0
    # Visit rows carry the usage report's facts (``shared.reports.fold``): copied before any is deleted, and a
    # geography whose copy failed keeps its visit rows until a run copies them.
    for geography in storage.geographies:
        try:
            services().report_flush.flush(geography)
        except (ConnectorError, HttpResponseError) as exc:
            failed += 1
            logger.error("Copying report facts in %s failed: %s", geography.value, type(exc).__name__)
            targets.remove((storage.for_geography(geography), visits.TABLE))
    for account, table in targets:
        # One unreachable account or broken table must not keep the others' expired rows (and the
        # purge promise) waiting: log it and go on; the next run tries again.
        try:
            result = sweep_expired(account, table)
        except (ConnectorError, HttpResponseError) as exc:
            failed += 1
            logger.error("Sweeping %s in %s failed: %s", table, account.name, type(exc).__name__)
            continue
        logger.info("Swept %d expired rows from %s in %s", result.deleted, result.table, account.name)
    if failed:
        logger.error("The sweep skipped %d of %d tables; they are retried on the next run", failed, len(targets))


@bp.timer_trigger(arg_name="timer", schedule="0 5-59/15 * * * *", run_on_startup=False, use_monitor=False)
def report_upkeep(timer: func.TimerRequest) -> None:
    """Usage report: delete days past each configuration's retention (by key range; the report tables are not
    swept by ``ExpiresAt``, which would scan them), and compute the open days' summaries."""
    svc = services()
    geographies = svc.storage.geographies
    now = utcnow()
    copied = 0
    for geography in geographies:  # one unreachable geography must not hold up the others, nor retention
        try:
            copied += svc.report_flush.flush(geography)
        except (ConnectorError, HttpResponseError) as exc:
            logger.error(
                "Copying report facts in %s failed: %s; retried on the next run", geography.value, type(exc).__name__
            )
    try:
        deleted = enforce_retention(
            geographies, svc.report_preferences, svc.report_facts, svc.report_days, today=now.date()
        )
        # Stamped after the copy: a day it marked is computed now, and the next run finds it up to date.
        computed = refresh_open_days(geographies, svc.report_preferences, svc.report_days, now=utcnow())
    except (ConnectorError, HttpResponseError) as exc:
        logger.error("Report upkeep failed: %s; retried on the next run", type(exc).__name__)
        return
    logger.info(
        "Report upkeep: %d visit-day rows copied from visits, %d rows past retention deleted, %d day summaries "
        "computed",
        copied,
        deleted,
        computed,
    )
