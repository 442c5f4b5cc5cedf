"""The sandbox's JSON admin API under ``/_sandbox`` (no auth: it listens on 127.0.0.1 only).

``GET|POST|DELETE /_sandbox/faults``        read, change (partial JSON) or reset fault switches
``GET|POST /_sandbox/clients``              list or register an OAuth client (``RegisteredClient`` JSON)
``GET|POST /_sandbox/records``              list or add an integration (FDI) record
``POST /_sandbox/launches``                 ``{record_id, appointment_id, user_id}`` → ``{url, launch}``
``GET /_sandbox/connection-status``         recorded SetExternalConnectionStatus calls (filters:
                                            ``ConferenceID``, ``ExternalID``, ``ConnectionStatus``)
``GET /_sandbox/clinic``                    the seeded ids (practitioners, patients, visits)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.ehr.config import RegisteredClient
from sandbox.ehr.launch_urls import LaunchError

if TYPE_CHECKING:
    from sandbox.ehr.app import EhrSandbox


def _ehr(request: Request) -> EhrSandbox:
    ehr: EhrSandbox = request.app.state.ehr
    return ehr


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def faults(request: Request) -> Response:
    ehr = _ehr(request)
    if request.method == "DELETE":
        return JSONResponse(ehr.faults.reset().to_json())
    if request.method == "POST":
        body = await _json(request)
        if body is None:
            return _bad("send a JSON object of fault switches")
        try:
            return JSONResponse(ehr.faults.update(body).to_json())
        except (TypeError, ValueError) as exc:
            return _bad(str(exc))
    return JSONResponse({**ehr.faults.faults.to_json(), "injected": ehr.faults.injected})


async def clients(request: Request) -> Response:
    ehr = _ehr(request)
    if request.method == "POST":
        body = await _json(request)
        if body is None:
            return _bad("send a JSON client registration")
        try:
            client = RegisteredClient.from_json(body)
        except ValueError as exc:
            return _bad(str(exc))
        ehr.state.register_client(client)
        return JSONResponse(client.to_json(), status_code=201)
    with ehr.state.lock:
        return JSONResponse([c.to_json() for c in ehr.state.clients.values()])


async def records(request: Request) -> Response:
    ehr = _ehr(request)
    if request.method == "POST":
        body = await _json(request)
        if body is None:
            return _bad("send a JSON integration record")
        try:
            record = ehr.add_record(
                name=str(body.get("name", "")),
                kind=str(body.get("kind", "")),
                environment=str(body.get("environment", "")),
                launch_url=str(body.get("launch_url", "")),
                context_tokens=str(body.get("context_tokens", "")),
                client_id=str(body.get("client_id", "")),
            )
        except ValueError as exc:
            return _bad(str(exc))
        return JSONResponse(dataclasses.asdict(record), status_code=201)
    with ehr.state.lock:
        return JSONResponse([dataclasses.asdict(r) for r in ehr.state.records.values()])


async def launches(request: Request) -> Response:
    ehr = _ehr(request)
    body = await _json(request)
    if body is None:
        return _bad("send {record_id, appointment_id, user_id}")
    try:
        url = ehr.create_launch(str(body.get("record_id")), str(body.get("appointment_id")), str(body.get("user_id")))
    except LaunchError as exc:
        return _bad(str(exc))
    launch = parse_qs(urlsplit(url).query)["launch"][-1]
    return JSONResponse({"url": url, "launch": launch}, status_code=201)


def connection_status(request: Request) -> Response:
    ehr = _ehr(request)
    query = request.query_params
    changes = ehr.connection_status_changes(
        query.get("ConferenceID"), query.get("ExternalID"), query.get("ConnectionStatus")
    )
    return JSONResponse({"count": len(changes), "changes": [dataclasses.asdict(c) for c in changes]})


def clinic(request: Request) -> Response:
    ehr = _ehr(request)
    seeded = ehr.clinic
    return JSONResponse(
        {
            "today": seeded.today.isoformat(),
            "fhir_base": ehr.config.fhir_base,
            "patient_fhir_base": ehr.config.patient_fhir_base,
            "practitioners": [{"id": p.id, "name": p.display, "username": p.username} for p in seeded.practitioners],
            "patients": [{"id": p.id, "name": p.display, "mrn": p.mrn} for p in seeded.patients],
            "departments": [dataclasses.asdict(d) for d in seeded.departments],
            "visits": [
                {
                    "appointment": v.appointment_id,
                    "encounter": v.encounter_id,
                    "csn": v.csn,
                    "conference_id": v.conference_id,
                    "patient": v.patient_id,
                    "practitioner": v.practitioner_id,
                    "department": v.department_id,
                    "start": v.start.isoformat(),
                }
                for v in seeded.visits
            ],
        }
    )


def routes() -> list[Route]:
    return [
        Route("/_sandbox/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/clients", clients, methods=["GET", "POST"]),
        Route("/_sandbox/records", records, methods=["GET", "POST"]),
        Route("/_sandbox/launches", launches, methods=["POST"]),
        Route("/_sandbox/connection-status", connection_status, methods=["GET"]),
        Route("/_sandbox/clinic", clinic, methods=["GET"]),
    ]
