"""Call user functions as the Python worker does: sync ones in a thread pool, async ones on one loop.

Every trigger goes through the same pool, as every invocation request does in the worker: at most
``PYTHON_THREADPOOL_THREAD_COUNT`` sync invocations run at once (by default ``min(32, CPUs + 4)``,
the ``ThreadPoolExecutor`` default the worker keeps on Python 3.9+); the rest wait for a thread.

Outputs are flushed only when the function returns normally: a function that raises has
its invocation failed and none of its ``Out`` values are sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext

from sandbox.host.index import IndexedFunction
from sandbox.host.storage import QueueClients, encode, message_bodies

logger = logging.getLogger(__name__)
T = TypeVar("T")


class OutValue(func.Out[T], Generic[T]):
    """The object an ``Out[...]`` parameter receives."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class _TraceContext(TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    def __init__(self, invocation_id: str, function_name: str, directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._directory = directory
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> RetryContext:
        return _RetryContext()


@dataclass(frozen=True)
class _Started:
    """An invocation a listener started: what running it takes, and whom to tell when it has ended."""

    entry: IndexedFunction
    kwargs: dict[str, Any]
    outputs: dict[str, OutValue[Any]]
    invocation_id: str
    started: float
    done: Callable[[bool], None]


class Invoker:
    """Runs invocations; owns the worker's thread pool and its event loop for async functions."""

    def __init__(self, queues: QueueClients, message_encoding: str, app_dir: Path, max_workers: int | None = None):
        self._queues = queues
        self._encoding = message_encoding
        self._app_dir = str(app_dir)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="functions-worker")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="functions-async", daemon=True)

    def start(self) -> None:
        self._loop_thread.start()

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=10)

    def _arguments(self, entry: IndexedFunction, trigger_value: Any) -> tuple[dict[str, Any], dict[str, OutValue[Any]]]:
        outputs: dict[str, OutValue[Any]] = {b.name: OutValue() for b in entry.outputs if b.name != "$return"}
        kwargs: dict[str, Any] = {str(entry.trigger["name"]): trigger_value, **outputs}
        if entry.wants_context:
            kwargs["context"] = InvocationContext(str(uuid.uuid4()), entry.name, self._app_dir)
        return kwargs, outputs

    def _flush(self, entry: IndexedFunction, outputs: dict[str, OutValue[Any]], result: Any) -> None:
        for binding in entry.outputs:
            value = result if binding.name == "$return" else outputs[binding.name].get()
            contents = [encode(body, self._encoding) for body in message_bodies(value)]
            self._queues.send(binding.connection, binding.queue_name, contents)

    def _run_and_flush(self, entry: IndexedFunction, kwargs: dict[str, Any], outputs: dict[str, OutValue[Any]]) -> Any:
        """A sync function, then its outputs sent from the same worker thread (only if it returned normally)."""
        result = entry.function(**kwargs)
        self._flush(entry, outputs, result)
        return result

    def invoke(self, entry: IndexedFunction, trigger_value: Any, reason: str) -> Any:
        """Blocking invocation from a host thread (queue and timer listeners)."""
        kwargs, outputs = self._arguments(entry, trigger_value)
        invocation_id, started = self._executing(entry, reason)
        try:
            if entry.is_async:
                result = asyncio.run_coroutine_threadsafe(entry.function(**kwargs), self._loop).result()
            else:
                result = self._executor.submit(entry.function, **kwargs).result()
            self._flush(entry, outputs, result)
        except BaseException:
            self._executed(entry, invocation_id, started, succeeded=False)
            raise
        self._executed(entry, invocation_id, started, succeeded=True)
        return result

    def submit(self, entry: IndexedFunction, trigger_value: Any, reason: str, done: Callable[[bool], None]) -> None:
        """Start an invocation for a host listener and return at once; ``done(succeeded)`` is called on a worker
        thread once it has finished (outputs sent only if it succeeded), whatever happened.

        The Functions host awaits its invocations rather than holding a thread for each: a listener that blocked a
        thread of its own on every message would add a hand-off between two threads to each message and back."""
        kwargs, outputs = self._arguments(entry, trigger_value)
        invocation_id, started = self._executing(entry, reason)
        run = _Started(entry, kwargs, outputs, invocation_id, started, done)
        if entry.is_async:
            asyncio.run_coroutine_threadsafe(self._run_async_then(run), self._loop)
        else:
            future = self._executor.submit(self._run_then, run)
            # Cancelled by a stop before it ran (the host's shutdown gave up waiting): its message is settled anyway.
            future.add_done_callback(lambda f: run.done(False) if f.cancelled() else None)

    def _run_then(self, run: _Started) -> None:
        succeeded = False
        try:
            self._run_and_flush(run.entry, run.kwargs, run.outputs)
            succeeded = True
        except Exception:
            logger.exception("Exception while executing function: Functions.%s", run.entry.name)
        finally:
            self._executed(run.entry, run.invocation_id, run.started, succeeded=succeeded)
            run.done(succeeded)

    async def _run_async_then(self, run: _Started) -> None:
        loop = asyncio.get_running_loop()
        succeeded = False
        try:
            result = await run.entry.function(**run.kwargs)
            await loop.run_in_executor(self._executor, self._flush, run.entry, run.outputs, result)
            succeeded = True
        except Exception:
            logger.exception("Exception while executing function: Functions.%s", run.entry.name)
        finally:
            self._executed(run.entry, run.invocation_id, run.started, succeeded=succeeded)
            try:
                await loop.run_in_executor(self._executor, run.done, succeeded)  # it may block: not on the loop
            except (RuntimeError, asyncio.CancelledError):  # the pool is shut down (the host is stopping)
                run.done(succeeded)  # settled here rather than never

    async def invoke_async(self, entry: IndexedFunction, trigger_value: Any, reason: str) -> Any:
        """Invocation from the HTTP server's event loop."""
        kwargs, outputs = self._arguments(entry, trigger_value)
        invocation_id, started = self._executing(entry, reason)
        loop = asyncio.get_running_loop()
        try:
            if entry.is_async:
                future = asyncio.run_coroutine_threadsafe(entry.function(**kwargs), self._loop)
                result = await asyncio.wrap_future(future)
                await loop.run_in_executor(self._executor, self._flush, entry, outputs, result)
            else:  # the function and its outputs' flush in one hand-off to the worker thread
                result = await loop.run_in_executor(self._executor, self._run_and_flush, entry, kwargs, outputs)
        except BaseException:
            self._executed(entry, invocation_id, started, succeeded=False)
            raise
        self._executed(entry, invocation_id, started, succeeded=True)
        return result

    @staticmethod
    def _executing(entry: IndexedFunction, reason: str) -> tuple[str, float]:
        invocation_id = str(uuid.uuid4())
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", entry.name, reason, invocation_id)
        return invocation_id, time.monotonic()

    @staticmethod
    def _executed(entry: IndexedFunction, invocation_id: str, started: float, *, succeeded: bool) -> None:
        duration = int((time.monotonic() - started) * 1000)
        outcome = "Succeeded" if succeeded else "Failed"
        log = logger.info if succeeded else logger.error
        log("Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)", entry.name, outcome, invocation_id, duration)
