"""Fault injection for the EHR's API surface: latency, 5xx, 429, hangs and outage windows.

A pure ASGI middleware so a hang can notice the client giving up (it waits for
``http.disconnect`` or the hang time, whichever comes first). Dice come from one seeded
``random.Random`` so a run with the same seed and call order fails the same calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import fields, replace
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.ehr.config import Faults


class FaultInjector:
    def __init__(self, faults: Faults, *, api_prefixes: tuple[str, ...] | None = None) -> None:
        self._lock = threading.Lock()
        # The flavour's API prefixes replace the default (Epic's) ones; explicit paths stay as given.
        self._default_paths = api_prefixes or Faults().paths
        if api_prefixes and faults.paths == Faults().paths:
            faults = replace(faults, paths=api_prefixes)
        self.faults = faults
        self._random = random.Random(faults.seed)  # noqa: S311 - reproducible chaos, not security
        self.injected = 0

    def update(self, changes: dict[str, Any]) -> Faults:
        """Apply a partial update; ``outage_seconds`` sets ``outage_until`` relative to now."""
        known = {f.name: f for f in fields(Faults)}
        values: dict[str, Any] = {}
        for name, value in changes.items():
            if name == "outage_seconds":
                values["outage_until"] = None if value is None else time.time() + float(value)
                continue
            if name not in known:
                raise ValueError(f"unknown fault switch: {name}")
            if name == "paths":
                if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                    raise ValueError("paths must be a list of path prefixes")
                values[name] = tuple(value)
            elif name == "outage_until":
                values[name] = None if value is None else float(value)
            elif name in ("latency_ms", "retry_after", "fail_next", "fail_status", "seed"):
                values[name] = int(value)
            else:
                values[name] = float(value)
        for rate in ("error_rate", "throttle_rate", "timeout_rate"):
            if not 0.0 <= float(values.get(rate, 0.0)) <= 1.0:
                raise ValueError(f"{rate} must be between 0 and 1")
        with self._lock:
            self.faults = replace(self.faults, **values)
            if "seed" in values:
                self._random = random.Random(self.faults.seed)  # noqa: S311
            return self.faults

    def error_status(self) -> int:
        with self._lock:
            return 500 if self._random.random() < 0.5 else 503

    def reset(self) -> Faults:
        with self._lock:
            self.faults = Faults(paths=self._default_paths)
            self._random = random.Random(0)  # noqa: S311
            return self.faults

    def decide(self, path: str) -> tuple[float, str | None]:
        """(latency seconds, fault kind or None) for one call."""
        latency, fault = self._decide(path)
        if fault is not None:
            with self._lock:
                self.injected += 1
        return latency, fault

    def _decide(self, path: str) -> tuple[float, str | None]:
        with self._lock:
            faults = self.faults
            if not any(path.startswith(prefix) for prefix in faults.paths):
                return 0.0, None
            latency = faults.latency_ms / 1000
            if faults.outage_until is not None and time.time() < faults.outage_until:
                return latency, "outage"
            if faults.fail_next > 0:
                self.faults = replace(faults, fail_next=faults.fail_next - 1)
                return latency, "fail_next"
            roll = self._random.random()
            if roll < faults.timeout_rate:
                return latency, "timeout"
            roll -= faults.timeout_rate
            if roll < faults.throttle_rate:
                return latency, "throttle"
            roll -= faults.throttle_rate
            if roll < faults.error_rate:
                return latency, "error"
            return latency, None


def _body(path: str, status: int, message: str) -> bytes:
    if path.startswith("/api/FHIR/"):
        code = {429: "throttled", 504: "timeout"}.get(status, "transient")
        outcome = {"severity": "error", "code": code, "diagnostics": message}
        return json.dumps({"resourceType": "OperationOutcome", "issue": [outcome]}).encode()
    if path.startswith("/oauth2/"):
        return json.dumps({"error": "temporarily_unavailable", "error_description": message}).encode()
    return json.dumps({"Message": message}).encode()


class FaultMiddleware:
    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        latency, fault = self.injector.decide(path)
        if latency:
            await asyncio.sleep(latency)
        if fault is None:
            await self.app(scope, receive, send)
            return
        faults = self.injector.faults
        headers: list[tuple[bytes, bytes]] = []
        if fault == "timeout":
            if await self._hang(receive, faults.hang_seconds):
                return  # the client gave up; nobody to answer
            status, message = 504, "the EHR did not answer in time"
        elif fault == "throttle":
            status, message = 429, "too many requests"
            headers.append((b"retry-after", str(faults.retry_after).encode()))
        elif fault == "outage":
            status, message = 503, "the EHR is unavailable (planned outage)"
            remaining = max(1, int((faults.outage_until or time.time()) - time.time()))
            headers.append((b"retry-after", str(remaining).encode()))
        elif fault == "fail_next":
            status, message = faults.fail_status, "injected failure"
        else:
            status, message = self.injector.error_status(), "injected server error"
        body = _body(path, status, message)
        content_type = b"application/fhir+json" if path.startswith("/api/FHIR/") else b"application/json"
        headers += [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _hang(receive: Receive, seconds: float) -> bool:
        """Wait ``seconds``; True if the client disconnected first."""

        async def disconnected() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    return

        try:
            await asyncio.wait_for(disconnected(), timeout=seconds)
        except TimeoutError:
            return False
        return True
