"""Timer trigger runner: one thread per timer function, invocations never overlap (as on a single instance)."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from azure.functions.timer import TimerRequest

from sandbox.host.config import HostConfigurationError
from sandbox.host.index import IndexedFunction
from sandbox.host.invocation import Invoker
from sandbox.host.ncrontab import Schedule, ScheduleError

logger = logging.getLogger(__name__)

# An invocation starting later than this after its scheduled time is reported as past due.
PAST_DUE_TOLERANCE = timedelta(seconds=1)


def schedule_zone() -> tzinfo:
    """UTC unless WEBSITE_TIME_ZONE names a zone (an IANA name, as on Linux plans)."""
    name = os.environ.get("WEBSITE_TIME_ZONE", "").strip()
    return ZoneInfo(name) if name else UTC


class TimerRunner:
    def __init__(self, entry: IndexedFunction, invoker: Invoker) -> None:
        self.entry = entry
        try:
            self.schedule = Schedule.parse(entry.schedule)
        except ScheduleError as exc:
            raise HostConfigurationError(f"function {entry.name}: {exc}") from exc
        self.invoker = invoker
        self.zone = schedule_zone()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"timer:{entry.name}", daemon=True)
        self.last: datetime | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _now(self) -> datetime:
        return datetime.now(self.zone)

    def _run(self) -> None:
        if self.entry.run_on_startup and not self._stop.is_set():
            self._fire(self._now(), "Timer fired at startup (RunOnStartup)", past_due=False)
        while not self._stop.is_set():
            scheduled = self.schedule.next_after(self._now())
            while not self._stop.is_set():
                remaining = (scheduled - self._now()).total_seconds()
                if remaining <= 0:
                    break
                self._stop.wait(min(remaining, 60))
            if self._stop.is_set():
                return
            started = self._now()
            self._fire(scheduled, "Timer fired", past_due=started - scheduled > PAST_DUE_TOLERANCE)

    def _fire(self, scheduled: datetime, reason: str, *, past_due: bool) -> None:
        next_occurrence = self.schedule.next_after(max(scheduled, self._now()))
        status = None
        if self.entry.use_monitor:
            status = {
                "Last": (self.last or scheduled).isoformat(),
                "Next": next_occurrence.isoformat(),
                "LastUpdated": self._now().isoformat(),
            }
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        try:
            self.invoker.invoke(self.entry, request, f"{reason} at {scheduled.isoformat()}")
        except Exception:
            logger.exception("Exception while executing function: Functions.%s", self.entry.name)
        self.last = scheduled
