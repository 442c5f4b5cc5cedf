"""A small function app exercising what the local host must support, as a real app would declare it.

``build_app()`` returns a fresh FunctionApp each time: the host indexes with
``app.get_functions()``, which may be called only once per app object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

RECORDS: dict[str, list[Any]] = defaultdict(list)
_LOCK = threading.Lock()
_RUNNING = [0]  # slow work items running now


def record(kind: str, value: Any) -> None:
    with _LOCK:
        RECORDS[kind].append(value)


def records(kind: str) -> list[Any]:
    with _LOCK:
        return list(RECORDS[kind])


def clear(kind: str) -> None:
    with _LOCK:
        RECORDS[kind].clear()


web = func.Blueprint()


@web.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"Hello, {req.route_params['name']}")


@web.route(route="disabled/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def disabled_hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("must not run: disabled by AzureWebJobs.disabled_hello.Disabled")


@web.route(route="items/new", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def new_item_form(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("form")


@web.route(route="items/{id:int}", methods=["GET", "DELETE"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    body = {"id": req.route_params["id"], "method": req.method, "params": dict(req.params)}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@web.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")


@web.route(route="optional/{value?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def optional(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")


@web.route(route="echo", methods=["POST", "PUT"])
def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    body = {
        "method": req.method,
        "url": req.url,
        "params": dict(req.params),
        "contentType": req.headers.get("content-type"),
        "custom": req.headers.get("X-Custom"),
        "json": req.get_json() if req.headers.get("content-type") == "application/json" else None,
        "body": base64.b64encode(req.get_body()).decode(),
        "form": dict(req.form) if "form" in (req.headers.get("content-type") or "") else None,
        "function": context.function_name,
    }
    return func.HttpResponse(json.dumps(body), status_code=201, mimetype="application/json")


@web.route(route="ops/stats", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def ops_stats(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin only")


@web.route(route="cookies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def cookies(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse("<p>cookies</p>", mimetype="text/html", headers={"X-Frame-Options": "DENY"})
    response.headers.add("Set-Cookie", "session=abc; Path=/; HttpOnly; Secure; SameSite=Lax")
    response.headers.add("Set-Cookie", "theme=dark; Path=/api; Max-Age=60")
    return response


@web.route(route="go", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def go(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=302, headers={"Location": "/api/hello/redirected"})


@web.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret internal detail")


@web.route(route="async-hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(json.dumps({"async": True}), mimetype="application/json")


RENDEZVOUS = threading.Barrier(2)


@web.route(route="rendezvous", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def rendezvous(req: func.HttpRequest) -> func.HttpResponse:
    """Blocks until a second request arrives: only passes when sync functions run concurrently."""
    RENDEZVOUS.wait(timeout=10)
    return func.HttpResponse(threading.current_thread().name)


@web.route(route="plain-text", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def plain_text(req: func.HttpRequest) -> str:
    return "just a string"


@web.route(route="nothing", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def nothing(req: func.HttpRequest) -> None:
    return None


@web.route(route="enqueue", methods=["POST"])
@web.queue_output(arg_name="out", queue_name="%TEST_OUTPUT_QUEUE%", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[list[str]]) -> func.HttpResponse:
    messages = req.get_json()["messages"]
    out.set(messages)
    if req.params.get("fail"):
        raise RuntimeError("fails after setting the output: nothing may be sent")
    return func.HttpResponse(status_code=202)


work = func.Blueprint()


@work.queue_trigger(arg_name="msg", queue_name="%TEST_WORK_QUEUE%", connection="AzureWebJobsStorage")
def work_item(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    record(
        "work",
        {
            "id": msg.id,
            "body": body,
            "dequeue_count": msg.dequeue_count,
            "inserted": msg.insertion_time,
            "expires": msg.expiration_time,
            "pop_receipt": msg.pop_receipt,
            "thread": threading.current_thread().name,
        },
    )
    if body.startswith("fail"):
        raise ValueError("this message fails on purpose")
    if body.startswith("slow"):  # stays running a while: how many run at once (``record("running", …)``)
        with _LOCK:
            _RUNNING[0] += 1
            RECORDS["running"].append(_RUNNING[0])
        time.sleep(0.3)
        with _LOCK:
            _RUNNING[0] -= 1


clock = func.Blueprint()


@clock.timer_trigger(arg_name="timer", schedule="%TEST_TIMER_SCHEDULE%", run_on_startup=True, use_monitor=False)
def tick(timer: func.TimerRequest) -> None:
    record("tick", {"past_due": timer.past_due, "at": datetime.now(UTC), "thread": threading.current_thread().name})


def build_app(*blueprints: func.Blueprint) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for blueprint in blueprints or (web, work, clock):
        app.register_functions(blueprint)
    return app
