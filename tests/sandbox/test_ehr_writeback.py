"""SetExternalConnectionStatus: recording, read-back, and its header, token and parameter requirements."""

from __future__ import annotations

import httpx
import pytest

from sandbox.ehr import EhrSandbox
from tests.sandbox.ehr_support import *  # noqa: F403
from tests.sandbox.ehr_support import BACKEND, NO_SCS, ClientKeys, backend_token, user_token

SCS = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"


def params(conference: str = "1000001", external: str = "e-prac-smith", status: str = "1") -> dict[str, str]:
    return {
        "ConferenceID": conference,
        "ExternalID": external,
        "ExternalIDType": "2",
        "VendorName": "Microsoft Teams",
        "ConnectionStatus": status,
    }


@pytest.fixture(scope="module")
def writer(ehr_server: object, ehr: EhrSandbox, client_keys: ClientKeys) -> str:
    from sandbox.server import ServerThread

    server: ServerThread = ehr_server[0]  # type: ignore[index]
    with httpx.Client(base_url=server.url) as client:
        return backend_token(client, ehr, client_keys, "system/Encounter.write")


def headers(token: str, client_id: str = BACKEND) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Epic-Client-ID": client_id}


def test_get_and_post_are_recorded_with_timestamps(http: httpx.Client, ehr: EhrSandbox, writer: str) -> None:
    ok = http.get(SCS, params=params(status="1"), headers=headers(writer))
    assert ok.status_code == 200, ok.text
    form = http.post(SCS, data=params(status="2"), headers=headers(writer))
    assert form.status_code == 200, form.text
    as_json = http.post(SCS, json=params(external="e-pat-rivera", status="1"), headers=headers(writer))
    assert as_json.status_code == 200, as_json.text
    changes = ehr.connection_status_changes(conference_id="1000001")
    assert [(c.external_id, c.connection_status, c.method) for c in changes] == [
        ("e-prac-smith", "1", "GET"),
        ("e-prac-smith", "2", "POST"),
        ("e-pat-rivera", "1", "POST"),
    ]
    assert all(c.client_id == BACKEND and c.vendor_name == "Microsoft Teams" for c in changes)
    assert changes[0].recorded_at <= changes[1].recorded_at <= changes[2].recorded_at
    assert ehr.count_status_changes("1000001", "e-prac-smith", "1") == 1
    readback = http.get("/_sandbox/connection-status", params={"ConferenceID": "1000001", "ConnectionStatus": "1"})
    assert readback.json()["count"] == 2


def test_group_conference_id_is_accepted(http: httpx.Client, ehr: EhrSandbox, writer: str) -> None:
    # Dr Lee runs the group session (the conference must be linked to the participant).
    assert (
        http.get(SCS, params=params(conference="9000001", external="e-prac-lee"), headers=headers(writer)).status_code
        == 200
    )
    assert ehr.count_status_changes(conference_id="9000001") == 1


def test_parameter_names_are_case_insensitive(http: httpx.Client, ehr: EhrSandbox, writer: str) -> None:
    lowered = {k.lower(): v for k, v in params(conference="1000005", external="e-prac-lee", status="3").items()}
    assert http.get(SCS, params=lowered, headers=headers(writer)).status_code == 200
    assert ehr.count_status_changes("1000005", status="3") == 1


def test_requirements(http: httpx.Client, ehr: EhrSandbox, client_keys: ClientKeys, writer: str) -> None:
    before = ehr.count_status_changes()
    unknown = http.get(SCS, params=params(conference="424242"), headers=headers(writer))
    assert unknown.status_code == 400 and "ConferenceID" in unknown.json()["Message"]
    missing = dict(params())
    del missing["ConnectionStatus"]
    response = http.get(SCS, params=missing, headers=headers(writer))
    assert response.status_code == 400 and "ConnectionStatus" in response.json()["Message"]
    no_header = http.get(SCS, params=params(), headers={"Authorization": f"Bearer {writer}"})
    assert no_header.status_code == 400 and "Epic-Client-ID" in no_header.json()["Message"]
    wrong_header = http.get(SCS, params=params(), headers=headers(writer, client_id="someone-else"))
    assert wrong_header.status_code == 403
    no_token = http.get(SCS, params=params(), headers={"Epic-Client-ID": BACKEND})
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"].startswith("Bearer")
    bad_token = http.get(SCS, params=params(), headers=headers("forged"))
    assert bad_token.status_code == 401 and 'error="invalid_token"' in bad_token.headers["www-authenticate"]
    reader = backend_token(http, ehr, client_keys, "system/*.read")
    assert http.get(SCS, params=params(), headers=headers(reader)).status_code == 403
    not_enabled = backend_token(http, ehr, client_keys, "system/Encounter.write", client_id=NO_SCS)
    response = http.get(SCS, params=params(), headers=headers(not_enabled, NO_SCS))
    assert response.status_code == 403 and "not enabled" in response.json()["Message"]
    user = user_token(http, ehr, client_keys, "launch openid user/*.read user/Encounter.write")
    assert http.get(SCS, params=params(), headers=headers(user["access_token"], "app-provider")).status_code == 403
    assert ehr.count_status_changes() == before
