"""Queue triggers and queue output bindings against Azurite, with the Queues extension's semantics."""

from __future__ import annotations

import base64
import contextlib
import threading
import uuid

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from sandbox.host import LocalHost
from tests.host.conftest import HOST_JSON, wait_for
from tests.host.sample_app import records

MAX_DEQUEUE = HOST_JSON["extensions"]["queues"]["maxDequeueCount"]  # type: ignore[index]


def queue(env: dict[str, str], name: str, *, base64_policy: bool = True) -> QueueClient:
    connection = env["AzureWebJobsStorage"]
    if base64_policy:
        return QueueClient.from_connection_string(
            connection,
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
    return QueueClient.from_connection_string(connection, name)


def ensure(client: QueueClient) -> QueueClient:
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    return client


def work_records(body: str) -> list[dict[str, object]]:
    return [r for r in records("work") if r["body"] == body]


def test_base64_message_is_delivered_decoded_and_deleted(
    host: LocalHost, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    work = ensure(queue(base_env, queue_names["TEST_WORK_QUEUE"]))
    body = f"hello {uuid.uuid4()} ✓"
    sent = work.send_message(body)
    [delivered] = wait_for(lambda: work_records(body))
    assert delivered["id"] == sent.id
    assert delivered["dequeue_count"] == 1
    assert delivered["pop_receipt"]
    assert str(delivered["thread"]).startswith("functions-worker")  # the worker's pool, as for HTTP
    assert delivered["inserted"] is not None and delivered["expires"] > delivered["inserted"]  # type: ignore[operator]
    # Completed: deleted from the queue (a peek after the function returned finds nothing of it).
    wait_for(lambda: all(m.id != sent.id for m in work.peek_messages(max_messages=32)))


def test_no_more_than_batch_size_plus_new_batch_threshold_messages_run_at_once(
    host: LocalHost, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    """batchSize 4, so newBatchThreshold 2 (half): at most 6 at once, each on the worker's pool, and the listener
    holds no thread of its own per message (the host awaits its invocations)."""
    work = ensure(queue(base_env, queue_names["TEST_WORK_QUEUE"]))
    bodies = [f"slow {n} {uuid.uuid4()}" for n in range(12)]
    for body in bodies:
        work.send_message(body)
    done = wait_for(
        lambda: [r for r in records("work") if r["body"] in bodies] if len(records("running")) >= 12 else []
    )
    assert len(done) == 12
    assert {str(r["thread"]).split("_")[0] for r in done} == {"functions-worker"}
    running = records("running")
    assert 2 <= max(running) <= 6, running  # they overlapped, within the extension's limit
    assert not [t.name for t in threading.enumerate() if t.name.startswith("queue:")]
    wait_for(lambda: not [m for m in work.peek_messages(max_messages=32) if m.content in bodies])


def test_failing_message_is_tried_max_dequeue_count_times_then_poisoned(
    host: LocalHost, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    name = queue_names["TEST_WORK_QUEUE"]
    work = ensure(queue(base_env, name))
    poison = queue(base_env, f"{name}-poison")
    body = f"fail {uuid.uuid4()}"
    sent = work.send_message(body)

    def poisoned() -> list[str]:
        try:
            return [m.content for m in poison.peek_messages(max_messages=32) if m.content == body]
        except Exception:  # noqa: BLE001 - the poison queue does not exist yet
            return []

    assert wait_for(poisoned, timeout=20) == [body]
    attempts = work_records(body)
    assert [a["dequeue_count"] for a in attempts] == list(range(1, MAX_DEQUEUE + 1))
    assert {a["id"] for a in attempts} == {sent.id}
    assert all(m.id != sent.id for m in work.peek_messages(max_messages=32))


def test_message_that_is_not_base64_goes_to_poison_unchanged(
    host: LocalHost, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    name = queue_names["TEST_WORK_QUEUE"]
    raw = ensure(queue(base_env, name, base64_policy=False))
    poison_raw = queue(base_env, f"{name}-poison", base64_policy=False)
    content = f"not base64 {uuid.uuid4()}!"
    raw.send_message(content)

    def poisoned() -> bool:
        try:
            return any(m.content == content for m in poison_raw.peek_messages(max_messages=32))
        except Exception:  # noqa: BLE001 - the poison queue does not exist yet
            return False

    wait_for(poisoned, timeout=20)
    assert not [r for r in records("work") if content in str(r["body"])]


def test_queue_output_sends_every_message_base64_encoded(
    host: LocalHost, client: httpx.Client, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    messages = [f'{{"n": 1, "m": "{marker}"}}', f"second ✓ {marker}"]
    response = client.post("/api/enqueue", json={"messages": messages}, headers={"x-functions-key": host.function_key})
    assert response.status_code == 202
    raw = queue(base_env, queue_names["TEST_OUTPUT_QUEUE"], base64_policy=False)
    stored = [m.content for m in raw.peek_messages(max_messages=32)]
    decoded = [base64.b64decode(c).decode() for c in stored]
    assert [d for d in decoded if marker in d] == messages


def test_queue_output_is_not_sent_when_the_function_fails(
    host: LocalHost, client: httpx.Client, base_env: dict[str, str], queue_names: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    response = client.post(
        "/api/enqueue",
        params={"fail": "1"},
        json={"messages": [marker]},
        headers={"x-functions-key": host.function_key},
    )
    assert response.status_code == 500
    decoded = queue(base_env, queue_names["TEST_OUTPUT_QUEUE"])
    try:
        contents = [m.content for m in decoded.peek_messages(max_messages=32)]
    except Exception:  # noqa: BLE001 - queue not created yet: nothing was sent
        contents = []
    assert marker not in contents


def test_queue_clients_share_one_transport_that_never_scans_the_environment(
    base_env: dict[str, str], queue_names: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like the .NET host, the local host's queue calls do not read proxy settings from the environment each time."""
    import requests.sessions

    from sandbox.host.storage import QueueClients

    clients = QueueClients(base_env)
    scans: list[str] = []
    real = requests.sessions.get_environ_proxies
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", lambda *a, **k: scans.append("scan") or real(*a, **k))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would break every call if it were honoured
    name = queue_names["TEST_OUTPUT_QUEUE"]
    clients.send("AzureWebJobsStorage", name, ["a", "b"])
    received = clients.queue("AzureWebJobsStorage", name).receive_messages(max_messages=32)
    assert {m.content for m in received} >= {"a", "b"}
    assert scans == []
