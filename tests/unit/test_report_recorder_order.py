"""The usage-report recorder decides from the configuration and its analytics switch before opening any seal."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from shared.kernel.errors import NotFound
from shared.kernel.sealing import Sealer
from shared.reports.preferences import ReportPreferences
from shared.reports.recorder import FactRecorder
from shared.visits.events import EventKind, Role, Source, VisitEvent
from shared.visits.sealed_context import seal_event


class CountingSealer(Sealer):
    def __init__(self) -> None:
        super().__init__([os.urandom(32)])
        self.opened = 0

    def open(self, value: str, *, purpose: str) -> str:
        self.opened += 1
        return super().open(value, purpose=purpose)


class Preferences:
    def __init__(self, analytics: bool) -> None:
        self.analytics = analytics

    def cached(self, configuration_id: str, *, geography: str | None = None) -> ReportPreferences:
        return ReportPreferences(analytics=self.analytics)


class Targets:
    def __init__(self, known: bool) -> None:
        self.known = known

    def target_for(self, configuration_id: str) -> Any:
        if not self.known:
            raise NotFound("gone")
        return object()


class Facts:
    def __init__(self) -> None:
        self.recorded: list[Any] = []

    def record(self, *args: Any) -> bool:
        self.recorded.append(args)
        return True

    def has(self, *args: Any) -> bool:
        return False


class Days:
    def touched(self, *args: Any, **kwargs: Any) -> None:
        pass

    def mark_touched(self, *args: Any, **kwargs: Any) -> None:
        pass


def sealed_body(sealer: Sealer) -> str:
    event = VisitEvent(
        configuration_id="cfg",
        geography="americas",
        visit_key="v" * 32,
        kind=EventKind.CONNECTED,
        role=Role.PROVIDER,
        occurred_at=datetime.now(UTC),
        source=Source.LAUNCH,
        participant="Practitioner/p1",
        csn="123",
    )
    return seal_event(sealer, event).to_json()


def recorder(sealer: Sealer, *, analytics: bool, known: bool, facts: Facts) -> FactRecorder:
    return FactRecorder(
        facts,  # type: ignore[arg-type]
        Days(),  # type: ignore[arg-type]
        Preferences(analytics),  # type: ignore[arg-type]
        Targets(known),
        secret="s" * 32,
        sealer=sealer,
    )


def test_analytics_off_or_unknown_configuration_records_nothing_and_opens_no_seal() -> None:
    for analytics, known in ((False, True), (True, False)):
        sealer, facts = CountingSealer(), Facts()
        assert recorder(sealer, analytics=analytics, known=known, facts=facts).record(sealed_body(sealer)) is False
        assert sealer.opened == 0
        assert facts.recorded == []


def test_analytics_on_opens_the_seal_once_and_records() -> None:
    sealer, facts = CountingSealer(), Facts()
    assert recorder(sealer, analytics=True, known=True, facts=facts).record(sealed_body(sealer)) is True
    assert sealer.opened == 1
    assert len(facts.recorded) == 1


def test_an_unopenable_seal_records_nothing() -> None:
    sealer, facts = CountingSealer(), Facts()
    body = sealed_body(CountingSealer())  # sealed under another key
    assert recorder(sealer, analytics=True, known=True, facts=facts).record(body) is False
    assert facts.recorded == []
