"""Launcher pages (analyst, Hyperspace, MyChart) and how a launch URL is built from an FDI record."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx

from sandbox.ehr import EhrSandbox
from sandbox.ehr.launch_urls import build_launch_url, expand_context_tokens
from tests.sandbox.ehr_support import *  # noqa: F403
from tests.sandbox.ehr_support import APP, CONTEXT_TOKENS, PROVIDER_LAUNCH_URL, authorize_params, pkce, redirect_query


def test_context_tokens_expand_like_epic() -> None:
    values = {"CSN": "1000001", "PERFDEPID": "10501101", "CONFERENCEID": "9000001"}
    assert expand_context_tokens(CONTEXT_TOKENS, values) == [("sessionId", "1000001"), ("departmentId", "10501101")]
    assert expand_context_tokens("sessionId=%CONFERENCEID%", values) == [("sessionId", "9000001")]
    assert expand_context_tokens("a=x%20%CSN%-y&b=%UNKNOWN%&&c", values) == [("a", "x 1000001-y"), ("b", ""), ("c", "")]
    url = build_launch_url("https://app.example/launch?cfg=1", [("sessionId", "1 2")], "https://ehr/FHIR", "L+/=")
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://app.example/launch?cfg=1&sessionId=1+2&")
    assert query == {"cfg": ["1"], "sessionId": ["1 2"], "iss": ["https://ehr/FHIR"], "launch": ["L+/="]}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_hyperspace_schedule_launches_with_context(http: httpx.Client, ehr: EhrSandbox) -> None:
    page = http.get("/hyperspace/e-prac-lee")
    assert page.status_code == 200
    assert page.text.count("Begin virtual visit") >= 4
    assert "Riley Novak" in page.text and ehr.clinic.today.isoformat() in page.text
    record = ehr.state.records_of("provider")[0]
    response = http.post(
        "/launch",
        data={"csrf": csrf_of(page.text), "record": record.id, "appointment": "e-appt-006", "user": "e-prac-lee"},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(PROVIDER_LAUNCH_URL + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["sessionId"] == ["1000006"] and query["departmentId"] == ["10501101"]
    assert query["iss"] == [ehr.config.fhir_base]
    launch = ehr.state.launches[query["launch"][0]]
    assert launch.client_id == APP
    context = launch.context
    assert (context.user_id, context.patient_id, context.encounter_id, context.appointment_id, context.csn) == (
        "e-prac-lee",
        "e-pat-rivera",
        "e-enc-006",
        "e-appt-006",
        "1000006",
    )
    _, challenge = pkce()
    params = authorize_params(ehr, challenge, launch=query["launch"][0])
    assert "code" in redirect_query(http.get("/oauth2/authorize", params=params))


def test_mychart_lists_visits_and_launches(http: httpx.Client, ehr: EhrSandbox) -> None:
    page = http.get("/mychart/e-pat-whitfield")
    assert page.status_code == 200
    assert "Dr. Casey Nopolicy" in page.text and "Dr. Morgan Lee" in page.text
    record = ehr.state.records_of("patient")[0]
    response = http.post(
        "/launch",
        data={"csrf": csrf_of(page.text), "record": record.id, "appointment": "e-appt-007", "user": "e-pat-whitfield"},
    )
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["sessionId"] == ["1000007"]
    other = http.post(
        "/launch",
        data={"csrf": csrf_of(page.text), "record": record.id, "appointment": "e-appt-001", "user": "e-pat-whitfield"},
    )
    assert other.status_code == 400  # somebody else's visit


def test_launch_needs_csrf(http: httpx.Client, ehr: EhrSandbox) -> None:
    record = ehr.state.records_of("provider")[0]
    response = http.post("/launch", data={"record": record.id, "appointment": "e-appt-001", "user": "e-prac-smith"})
    assert response.status_code == 403


def test_analyst_builds_records_and_registers_clients(http: httpx.Client, ehr: EhrSandbox) -> None:
    page = http.get("/analyst")
    assert page.status_code == 200 and "Teams provider" in page.text
    csrf = csrf_of(page.text)
    created = http.post(
        "/analyst/records",
        data={
            "csrf": csrf,
            "name": "Prod <b>provider</b>",
            "kind": "provider",
            "environment": "prod",
            "launch_url": "https://connector.example/api/launch/cfg-2/provider",
            "context_tokens": "sessionId=%CSN%",
            "client_id": "prod-client",
        },
    )
    assert created.status_code == 303
    page = http.get("/analyst")
    assert "Prod &lt;b&gt;provider&lt;/b&gt;" in page.text  # autoescaped
    assert "prod-client" in page.text
    rejected = http.post(
        "/analyst/records", data={"csrf": csrf, "kind": "provider", "launch_url": "javascript:x", "client_id": "c"}
    )
    assert rejected.status_code == 400
    registered = http.post(
        "/analyst/clients",
        data={
            "csrf": csrf,
            "client_id": "prod-client",
            "redirect_uris": "https://a.example/cb\nhttps://b.example/cb",
            "jwks_url": "https://a.example/jwks.json",
        },
    )
    assert registered.status_code == 303
    client = ehr.state.client("prod-client")
    assert client and client.redirect_uris == ("https://a.example/cb", "https://b.example/cb")
    record = next(r for r in ehr.state.records_of("provider") if r.client_id == "prod-client")
    assert http.post(f"/analyst/records/{record.id}/delete", data={"csrf": csrf}).status_code == 303
    assert ehr.state.records.get(record.id) is None
    schedule = http.get("/hyperspace/e-prac-smith")
    assert "Begin virtual visit" in schedule.text


def test_admin_api_registers_clients_and_creates_launches(http: httpx.Client, ehr: EhrSandbox) -> None:
    response = http.post(
        "/_sandbox/clients",
        json={"client_id": "api-client", "redirect_uris": ["https://x/cb"], "jwks_url": "https://x/jwks"},
    )
    assert response.status_code == 201 and ehr.state.client("api-client")
    assert http.post("/_sandbox/clients", json={"redirect_uris": []}).status_code == 400
    record = ehr.state.records_of("provider")[0]
    launch = http.post(
        "/_sandbox/launches", json={"record_id": record.id, "appointment_id": "e-appt-004", "user_id": "e-prac-lee"}
    )
    assert launch.status_code == 201
    assert launch.json()["launch"] in ehr.state.launches
    clinic = http.get("/_sandbox/clinic").json()
    assert {p["name"] for p in clinic["practitioners"]} >= {
        "Dr. Jordan Smith",
        "Dr. Morgan Lee",
        "Dr. Casey Nopolicy",
        "Nurse Robin Kim",
    }
    assert len(clinic["visits"]) == len(ehr.clinic.visits)
