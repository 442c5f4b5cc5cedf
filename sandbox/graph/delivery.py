"""Delivery of change and lifecycle notifications to webhooks, in a background thread.

Like Graph, a delivery counts as done on any 2xx within ``delivery_timeout``; otherwise it is
retried after each of ``delivery_retry_delays`` and then dropped. Every attempt is recorded with its
timing so tests and benchmarks can see what the webhook experienced.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.graph.meetings import utcnow


@dataclass
class DeliveryAttempt:
    number: int
    started_at: dt.datetime
    finished_at: dt.datetime
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "startedAt": self.started_at.isoformat(),
            "finishedAt": self.finished_at.isoformat(),
            "durationMs": round((self.finished_at - self.started_at).total_seconds() * 1000, 1),
            "statusCode": self.status_code,
            "error": self.error,
        }


@dataclass
class Delivery:
    """One POST body for one webhook, with every attempt to deliver it."""

    id: str
    kind: str  # "notification" or "lifecycle"
    subscription_id: str
    url: str
    body: dict[str, Any]
    event_at: dt.datetime
    queued_at: dt.datetime
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    state: str = "pending"  # pending → delivered | dropped
    event_type: str | None = None  # callStarted, rosterUpdated, callEnded or the lifecycle event

    def to_json(self) -> dict[str, Any]:
        delivered = next((a for a in self.attempts if a.ok), None)
        return {
            "id": self.id,
            "kind": self.kind,
            "subscriptionId": self.subscription_id,
            "url": self.url,
            "state": self.state,
            "eventType": self.event_type,
            "eventAt": self.event_at.isoformat(),
            "queuedAt": self.queued_at.isoformat(),
            "latencyMs": (
                round((delivered.finished_at - self.event_at).total_seconds() * 1000, 1) if delivered else None
            ),
            "attempts": [a.to_json() for a in self.attempts],
        }


class Deliverer:
    """A single worker thread draining a time-ordered queue of deliveries."""

    def __init__(self, *, timeout: float, retry_delays: tuple[float, ...], delay: float) -> None:
        self._timeout = timeout
        self._retry_delays = retry_delays
        self._delay = delay
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._log: list[Delivery] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(
        self,
        kind: str,
        subscription_id: str,
        url: str,
        body: dict[str, Any],
        event_at: dt.datetime,
        event_type: str | None = None,
    ) -> Delivery:
        delivery = Delivery(
            id=str(uuid.uuid4()),
            kind=kind,
            subscription_id=subscription_id,
            url=url,
            body=body,
            event_at=event_at,
            queued_at=utcnow(),
            event_type=event_type,
        )
        with self._cond:
            self._log.append(delivery)
            heapq.heappush(self._heap, (time.monotonic() + self._delay, next(self._seq), delivery))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="graph-delivery", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return delivery

    def deliveries(self) -> list[Delivery]:
        with self._cond:
            return list(self._log)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is queued or in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 2)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                with self._cond:
                    while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                        wait = self._heap[0][0] - time.monotonic() if self._heap else None
                        self._cond.wait(wait)
                    if self._closed:
                        return
                    _, _, delivery = heapq.heappop(self._heap)
                    self._in_flight += 1
                try:
                    self._attempt(client, delivery)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._cond.notify_all()

    def _attempt(self, client: httpx.Client, delivery: Delivery) -> None:
        started = utcnow()
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(delivery.url, json=delivery.body)
            status = response.status_code
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        attempt = DeliveryAttempt(len(delivery.attempts) + 1, started, utcnow(), status, error)
        with self._cond:
            delivery.attempts.append(attempt)
            if attempt.ok:
                delivery.state = "delivered"
            elif attempt.number <= len(self._retry_delays):
                due = time.monotonic() + self._retry_delays[attempt.number - 1]
                heapq.heappush(self._heap, (due, next(self._seq), delivery))
            else:
                delivery.state = "dropped"
