"""Presence writes of one visit, from many threads of one process: no etag race, newest fact stored."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.kernel.sealing import Sealer, new_key_text
from shared.kernel.settings import Geography
from shared.storage.accounts import Storage
from shared.visits.events import EventKind, Role
from shared.visits.model import Visit, VisitContext, with_launch_context
from shared.visits.presence import PresenceRecorder
from shared.visits.repository import VisitRepository

pytestmark = pytest.mark.azurite

T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SEALER = Sealer.from_text(new_key_text())


class CountingVisits(VisitRepository):
    """Counts re-reads: ``update`` re-reads the row only after losing an etag race."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(storage, SEALER)
        self.reads = 0
        self._lock = threading.Lock()

    def get(self, geography: Geography, key: str) -> Visit | None:
        with self._lock:
            self.reads += 1
        return super().get(geography, key)


def test_a_burst_of_presence_facts_on_one_visit_never_races_for_its_etag(storage: Storage, unique: str) -> None:
    visits = CountingVisits(storage)
    visit = visits.get_or_create(Geography.EMEA, f"busy-{unique}", "c", VisitContext(csn=unique))
    visits.reads = 0
    recorder = PresenceRecorder(visits)
    kinds = (EventKind.LOBBY, EventKind.CONNECTED, EventKind.DISCONNECTED)
    facts = [
        (Role.PATIENT if n % 2 else Role.PROVIDER, kinds[n % 3], T0 + timedelta(milliseconds=n)) for n in range(300)
    ]
    random.Random(8).shuffle(facts)
    with ThreadPoolExecutor(max_workers=24) as pool:
        list(pool.map(lambda fact: recorder.record(visit, *fact), facts))
    # Each write started from the row the previous one wrote; a re-read happens only when the burst paused
    # (no one queued) and the next caller's copy was older than the row. Without the queue: ~300 re-reads.
    assert visits.reads <= 3
    stored = visits.get(visit.geography, visit.key)
    assert stored is not None
    for role in (Role.PATIENT, Role.PROVIDER):
        newest = max((f for f in facts if f[0] is role), key=lambda f: f[2])
        assert (stored.presence[role].state, stored.presence[role].at) == (newest[1], newest[2])


def test_a_launch_merges_its_references_in_the_same_queued_write_as_its_presence(storage: Storage, unique: str) -> None:
    """Launch events ride the per-visit queue too: presence and the sealed context's merge, one write, none lost."""
    visits = CountingVisits(storage)
    visit = visits.get_or_create(Geography.EMEA, f"launch-{unique}", "c", VisitContext(csn=unique, confirmed=True))
    recorder = PresenceRecorder(visits)
    facts = [(Role.PATIENT, EventKind.CONNECTED, T0 + timedelta(milliseconds=n)) for n in range(50)]
    references = {"participant": "Practitioner/p-1", "encounter": "enc-1"}
    launch = with_launch_context(Role.PROVIDER, references, confirmed=True)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(recorder.record, visit, *fact) for fact in facts[:25]]
        futures.append(pool.submit(recorder.record, visit, Role.PROVIDER, EventKind.CONNECTED, T0, also=launch))
        futures += [pool.submit(recorder.record, visit, *fact) for fact in facts[25:]]
        for future in futures:
            future.result()
    stored = visits.get(visit.geography, visit.key)
    assert stored is not None
    assert stored.context == VisitContext(
        csn=unique, encounter="enc-1", provider="Practitioner/p-1", confirmed=True
    )  # the launch's references merged (sealed on the row) with the context the visit had
    assert stored.presence[Role.PROVIDER].state is EventKind.CONNECTED
    assert stored.presence[Role.PATIENT].at == facts[-1][2]
