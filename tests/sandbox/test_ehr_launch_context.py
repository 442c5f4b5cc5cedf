"""The sandbox EHR's launch context, as Epic can be configured: what the token response carries, the CSN on the
launch's Encounter, and SetExternalConnectionStatus linking the conference to its participants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from sandbox.ehr import EhrSandbox
from sandbox.ehr.clinic import CSN_SYSTEM
from tests.sandbox.ehr_support import *  # noqa: F403
from tests.sandbox.ehr_support import (
    APP,
    BACKEND,
    ClientKeys,
    authorize_params,
    backend_token,
    launch_value,
    pkce,
    redirect_query,
    token_request,
)

SCS = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"


@pytest.fixture
def configure_app(ehr: EhrSandbox) -> Iterator[Any]:
    """Reconfigure the app's integration for one test (as the Epic analyst would), then put it back."""
    original = ehr.state.clients[APP]

    def configure(**changes: Any) -> None:
        ehr.state.clients[APP] = replace(original, **changes)

    yield configure
    ehr.state.clients[APP] = original


def launch_tokens(
    http: httpx.Client, ehr: EhrSandbox, keys: ClientKeys, *, appointment: str, user: str
) -> dict[str, Any]:
    _, launch = launch_value(ehr, appointment=appointment, user=user)
    verifier, challenge = pkce()
    callback = redirect_query(http.get("/oauth2/authorize", params=authorize_params(ehr, challenge, launch=launch)))
    response = token_request(http, ehr, keys, callback["code"], verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_encounter_and_appointment_carry_the_csn_under_an_epic_oid(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    body = launch_tokens(http, ehr, client_keys, appointment="e-appt-001", user="e-prac-smith")
    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    for reference in (f"Encounter/{body['encounter']}", f"Appointment/{body['appointment']}"):
        resource = http.get(f"/api/FHIR/R4/{reference}", headers=bearer).json()
        assert {"system": CSN_SYSTEM, "value": "1000001", "use": "usual"} in resource["identifier"]
    assert CSN_SYSTEM.startswith("urn:oid:1.2.840.114350.") and CSN_SYSTEM.endswith(".698084.8")


def test_a_configured_extra_token_field_carries_the_csn(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys, configure_app: Any
) -> None:
    configure_app(token_fields="csn=%CSN%&dept=%PERFDEPID%")
    body = launch_tokens(http, ehr, client_keys, appointment="e-appt-002", user="e-prac-smith")
    assert body["csn"] == "1000002" and body["dept"] == "10501101"
    assert "sessionId" not in body  # the launch URL's tokens are not echoed


def test_the_returned_launch_context_is_configurable(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys, configure_app: Any
) -> None:
    configure_app(launch_context=("location",))
    body = launch_tokens(http, ehr, client_keys, appointment="e-appt-003", user="e-prac-smith")
    assert body["patient"] == "e-pat-chen" and body["location"] == "e-loc-virtual-care"
    for absent in ("encounter", "appointment", "loginDepartment"):
        assert absent not in body


def scs(http: httpx.Client, token: str, conference: str, external: str) -> httpx.Response:
    params = {
        "ConferenceID": conference,
        "ExternalID": external,
        "ExternalIDType": "1",
        "VendorName": "Microsoft Teams",
        "ConnectionStatus": "1",
    }
    return http.get(SCS, params=params, headers={"Authorization": f"Bearer {token}", "Epic-Client-ID": BACKEND})


def test_connection_status_needs_a_participant_linked_to_the_conference(
    http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys
) -> None:
    token = backend_token(http, ehr, client_keys, "system/Encounter.write")
    before = ehr.count_status_changes()
    # 1000004 is Dr Lee's visit with Jamie Okafor: Dr Smith and Sam Patel are not on it.
    for stranger in ("e-prac-smith", "e-pat-patel", "19"):
        refused = scs(http, token, "1000004", stranger)
        assert refused.status_code == 400
        assert refused.json() == {"Message": "Invalid ExternalID: the participant is not linked to this ConferenceID."}
    assert ehr.count_status_changes() == before
    for participant in ("e-prac-lee", "e-pat-okafor"):
        assert scs(http, token, "1000004", participant).status_code == 200
    # A covering clinician who launched the visit is linked to it from then on.
    launch_value(ehr, appointment="e-appt-004", user="e-prac-kim")
    assert scs(http, token, "1000004", "e-prac-kim").status_code == 200
    assert ehr.count_status_changes(conference_id="1000004") == 3
