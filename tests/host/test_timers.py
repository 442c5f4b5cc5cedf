"""Timer triggers: run_on_startup at once, then on the NCRONTAB schedule."""

from __future__ import annotations

from sandbox.host import LocalHost
from tests.host.conftest import wait_for
from tests.host.sample_app import build_app, clear, clock, records


def test_timer_runs_on_startup_and_then_every_second() -> None:
    clear("tick")
    settings = {"TEST_TIMER_SCHEDULE": "* * * * * *"}
    with LocalHost(build_app(clock), settings, host_json={"version": "2.0"}):
        ticks = wait_for(lambda: records("tick") if len(records("tick")) >= 3 else None, timeout=10)
    assert all(tick["past_due"] is False for tick in ticks)
    assert all(str(tick["thread"]).startswith("functions-worker") for tick in ticks)  # the worker's pool
    scheduled = [tick["at"] for tick in ticks[1:]]
    # Once per whole second, never twice in the same second (robust to a loaded machine).
    seconds = [at.replace(microsecond=0) for at in scheduled]
    assert all(later > earlier for earlier, later in zip(seconds, seconds[1:], strict=False))
