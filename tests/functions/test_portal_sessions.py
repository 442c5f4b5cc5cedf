"""Portal sessions: expired ones are refused at once and swept by the timer."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest

from connector.maintenance import sweep_expired_state
from connector.services import services
from shared.microsoft.entra import PortalIdentity
from shared.portal.sessions import PARTITION, TABLE, SessionStore, _row_key

pytestmark = pytest.mark.azurite
USER = PortalIdentity(tenant_id="t", object_id="o", upn="u@contoso.example", name="U", roles=("Connector.Admin",))


def test_a_live_session_round_trips_without_storing_the_cookie_value(env: dict[str, str]) -> None:
    store = SessionStore(services().storage.app)
    session = store.create(USER)
    assert store.get(session.id) == session
    row = services().storage.app.table(TABLE).get_entity(PARTITION, _row_key(session.id))
    assert session.id not in row.values() and row["RowKey"] != session.id
    assert store.get(session.id[:-1] + ("A" if session.id[-1] != "A" else "B")) is None
    assert store.get("../../etc") is None and store.get(None) is None


def test_expired_sessions_are_refused_and_swept(env: dict[str, str]) -> None:
    store = SessionStore(services().storage.app, lifetime=timedelta(seconds=-1))
    session = store.create(USER)
    assert store.get(session.id) is None
    sweep_expired_state(TimerRequest(past_due=False))
    rows = services().storage.app.table(TABLE).query_entities(f"RowKey eq '{_row_key(session.id)}'")
    assert not list(rows)
