"""Presence executions per visit: the provider panel's polls, simulated on a fake clock for realistic visits.

    python -m benchmarks.presence [--latency 2] [--json]

Each poll of ``/api/visits/{key}/presence`` is one billed Functions execution and one Table point read (a 304
when nothing changed; ``tests/functions/test_presence_panel.py`` checks both). The simulation replays each
scenario's facts (launches and Teams roster facts, each visible on the visit row ``--latency`` seconds after it
happened: queue + worker) through the product's own code — the visit's changes (``shared.visits.model``), the
panel (``panel_of``, its ``version`` = the ETag) and the server's schedule (``poll_after``) — and a page that
does what the provider page's script does: poll when told to, stop when told to or when the meeting has ended,
stop while hidden and look once on return. Compared with the fixed 4-second polling it replaces.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.kernel.settings import Geography
from shared.visits.events import EventKind, Role
from shared.visits.model import Visit, compose, with_launch, with_presence, with_roster_fact
from shared.visits.panel import panel_of, poll_after
from shared.visits.repository import LIFETIME

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
OLD_POLL_SECONDS = 4  # the panel before: every 4 s for as long as the page was open
P, C, S = Role.PATIENT, Role.PROVIDER, Role.STAFF
LOBBY, IN, LEFT = EventKind.LOBBY, EventKind.CONNECTED, EventKind.DISCONNECTED


@dataclass(frozen=True)
class Fact:
    at: float  # seconds after the provider's page opened
    role: Role
    state: EventKind | None  # None: a launch


@dataclass(frozen=True)
class Scenario:
    name: str
    facts: tuple[Fact, ...]
    closed_at: float  # the provider closes the page
    hidden: tuple[tuple[float, float], ...] = ()  # (from, to): the page is hidden (another window or tab on top)


def launch(at: float, role: Role) -> Fact:
    return Fact(at, role, None)


def roster(at: float, role: Role, state: EventKind) -> Fact:
    return Fact(at, role, state)


MIN = 60
TYPICAL_VISIT = (  # also the facts of the "panel hidden" scenario: the same visit, watched from Teams
    launch(0, C),
    roster(45, C, IN),
    launch(120, P),
    roster(150, P, LOBBY),
    roster(240, P, IN),
    roster(14 * MIN, P, LEFT),
    roster(14 * MIN + 30, C, LEFT),
)
SCENARIOS = (
    Scenario("typical 15-min visit", TYPICAL_VISIT, closed_at=16 * MIN),
    Scenario(
        "patient waiting first",
        (
            launch(-5 * MIN, P),
            launch(0, C),
            roster(20, P, LOBBY),
            roster(60, C, IN),
            roster(75, P, IN),
            roster(14 * MIN, C, LEFT),
            roster(14 * MIN + 5, P, LEFT),
        ),
        closed_at=15 * MIN,
    ),
    Scenario(
        "nurse rooms the patient first",
        (
            launch(0, C),
            roster(30, S, IN),
            launch(60, P),
            roster(90, P, LOBBY),
            roster(150, P, IN),
            roster(6 * MIN, C, IN),
            roster(7 * MIN, S, LEFT),
            roster(15 * MIN, P, LEFT),
            roster(15 * MIN + 10, C, LEFT),
        ),
        closed_at=16 * MIN,
    ),
    Scenario(
        "panel hidden while in Teams",
        TYPICAL_VISIT,
        closed_at=16 * MIN,
        hidden=((50, 13 * MIN), (13 * MIN + 20, 14 * MIN + 40)),
    ),
    Scenario(
        "clinician late: 8 min in the lobby",
        (
            launch(0, C),
            launch(30, P),
            roster(60, P, LOBBY),
            roster(8 * MIN, C, IN),
            roster(8 * MIN + 20, P, IN),
            roster(20 * MIN, P, LEFT),
            roster(20 * MIN + 10, C, LEFT),
        ),
        closed_at=21 * MIN,
    ),
    Scenario(
        "patient no-show, clinician leaves after 10 min",
        (launch(0, C), roster(30, C, IN), roster(10 * MIN, C, LEFT)),
        closed_at=15 * MIN,
    ),
    Scenario(
        "page left open all morning, nobody joins",
        (launch(0, C),),
        closed_at=4 * 60 * MIN,
    ),
)
TYPICAL = SCENARIOS[:5]  # visits that happen; the last two are the outliers the stop rules exist for


@dataclass
class Outcome:
    name: str
    minutes: float
    executions: int = 0
    not_modified: int = 0
    table_reads: int = 0
    page_loads: int = 1
    notice_seconds: list[float] = field(default_factory=list)  # change visible on the row → shown on the panel
    fixed_executions: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "scenario": self.name,
            "minutes": round(self.minutes, 1),
            "presenceExecutions": self.executions,
            "notModified": self.not_modified,
            "tableReads": self.table_reads,
            "pageLoads": self.page_loads,
            "worstNoticeSeconds": round(max(self.notice_seconds, default=0), 1),
            "medianNoticeSeconds": round(_median(self.notice_seconds), 1),
            "fixed4sExecutions": self.fixed_executions,
        }


def simulate(scenario: Scenario, latency: float) -> Outcome:
    """One provider page open from 0 to ``closed_at``, as the page's script polls."""
    start = min(0.0, *(fact.at for fact in scenario.facts))
    base = Visit(
        geography=Geography.EMEA,
        key="k" * 64,
        configuration_id="cfg",
        expires_at=_at(start) + LIFETIME,
        meeting_id="m",
        join_web_url="https://teams.example/l/m",
    )

    def row_at(now: float) -> Visit:
        """The visit row as a poll at ``now`` reads it: facts recorded ``latency`` s after they happened."""
        visit = base
        for fact in sorted(scenario.facts, key=lambda f: f.at):
            if fact.at + latency > now:
                break
            if fact.state is None:
                kind = LOBBY if fact.role is P else IN
                change = compose(with_presence(fact.role, kind, _at(fact.at)), with_launch(fact.role, _at(fact.at)))
            else:
                state, at = fact.state, _at(fact.at)
                change = compose(with_presence(fact.role, state, at), with_roster_fact(fact.role, state, at))
            visit = change(visit) or visit
        return visit

    def hidden(now: float) -> bool:
        return any(begin <= now < end for begin, end in scenario.hidden)

    outcome = Outcome(scenario.name, scenario.closed_at / MIN)
    outcome.table_reads = 1  # the page itself reads the row once
    panel = panel_of(row_at(0))
    etag = panel.version
    shown_since = 0.0  # when the panel started showing the version it shows
    delay = poll_after(panel, _at(0))
    next_poll = None if delay is None else float(delay)
    pending_changes = sorted({fact.at + latency for fact in scenario.facts if fact.at + latency > 0})
    returns = [end for _, end in scenario.hidden]
    now = 0.0
    while True:
        candidates = [t for t in (next_poll, *returns) if t is not None and t > now]
        if not candidates:
            break
        now = min(candidates)
        if now >= scenario.closed_at:
            break
        if now in returns:  # visible again: look once at once (unless the meeting has ended)
            returns.remove(now)
            if panel.ended:
                continue
        elif hidden(now):  # the timer was cleared when the page was hidden
            next_poll = None
            continue
        outcome.executions += 1
        outcome.table_reads += 1
        panel = panel_of(row_at(now))
        if panel.version == etag:
            outcome.not_modified += 1
        else:
            # Only the time the page was visible counts: while hidden, nobody was looking.
            seen = [t for t in pending_changes if shown_since < t <= now]
            outcome.notice_seconds += [now - t - _hidden_between(t, now, scenario.hidden) for t in seen]
            etag, shown_since = panel.version, now
        delay = poll_after(panel, _at(now))
        next_poll = None if delay is None else now + delay
        if next_poll is not None and hidden(now):
            next_poll = None
    visible = scenario.closed_at - sum(min(end, scenario.closed_at) - begin for begin, end in scenario.hidden)
    outcome.fixed_executions = math.floor(visible / OLD_POLL_SECONDS)
    return outcome


def _hidden_between(begin: float, end: float, hidden: tuple[tuple[float, float], ...]) -> float:
    return sum(max(0.0, min(end, to) - max(begin, since)) for since, to in hidden)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=2.0, help="seconds from a fact to the visit row (queue)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    outcomes = [simulate(scenario, args.latency) for scenario in SCENARIOS]
    typical = [o for o, s in zip(outcomes, SCENARIOS, strict=True) if s in TYPICAL]
    summary = {
        "typicalMeanExecutions": round(sum(o.executions for o in typical) / len(typical), 1),
        "typicalMaxExecutions": max(o.executions for o in typical),
        "target": 30,
    }
    if args.json:
        print(json.dumps({"scenarios": [o.to_json() for o in outcomes], "summary": summary}, indent=2))
        return
    header = (
        f"{'scenario':48} {'min':>5} {'execs':>6} {'304s':>5} {'reads':>6} "
        f"{'notice s (median/worst)':>24} {'4 s polls':>10}"
    )
    print(f"Presence executions per visit (fact → row latency {args.latency:g} s; each poll = 1 execution + 1 read)")
    print(header)
    print("-" * len(header))
    for o in outcomes:
        row = o.to_json()
        notice = f"{row['medianNoticeSeconds']}/{row['worstNoticeSeconds']}"
        print(
            f"{o.name:48} {row['minutes']:>5} {o.executions:>6} {o.not_modified:>5} {o.table_reads:>6} "
            f"{notice:>24} {o.fixed_executions:>10}"
        )
    print(
        f"\ntypical visits: {summary['typicalMeanExecutions']} presence executions on average, "
        f"at most {summary['typicalMaxExecutions']} (target ≤ {summary['target']}); "
        "Table reads = executions + 1 (the page itself)"
    )


if __name__ == "__main__":
    main()
