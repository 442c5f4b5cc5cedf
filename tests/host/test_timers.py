"""Timer triggers: run_on_startup, then the NCRONTAB schedule."""

from __future__ import annotations

from sandbox.host import LocalHost
from tests.host.conftest import wait_for
from tests.host.sample_app import records


def test_timer_runs_on_startup_and_then_on_schedule(host: LocalHost) -> None:
    # run_on_startup fires at once; "*/2 * * * * *" fires again within about two seconds.
    ticks = wait_for(lambda: records("tick") if len(records("tick")) >= 2 else None, timeout=10)
    assert all(tick["past_due"] is False for tick in ticks)
