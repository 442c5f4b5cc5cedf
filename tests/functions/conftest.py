"""Fixtures the portal's function tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.jose.keys import signing_keys_from
from tests.support.fake_ehr import FakeEhr, running_fake_ehr


@pytest.fixture(scope="module")
def ehr(base_env: dict[str, str]) -> Iterator[FakeEhr]:
    """A small SMART-on-FHIR server on 127.0.0.1 that trusts the connector's signing keys, one per test module."""
    with running_fake_ehr(signing_keys_from(base_env["SIGNING_KEYS"]).jwks) as server:
        yield server
