"""Run ``FakeEhr`` on a free port for a test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sandbox.server import ServerThread
from tests.support.fake_ehr import FakeEhr


@contextmanager
def running_fake_ehr(client_jwks: Any) -> Iterator[FakeEhr]:
    ehr = FakeEhr(client_jwks=client_jwks)
    with ServerThread(ehr.app()) as server:
        ehr.base = server.url
        yield ehr
