"""Queue trigger listener with the Storage Queues extension's semantics.

- Polls with the extension's randomized exponential back-off (``PollingBackoff``): 100 ms
  after finding messages; while the queue is empty about 200, 300, 500, 900, 1,700 ms, then
  ``maxPollingInterval``. A message enqueued by this host's own output bindings wakes the
  listener at once.
- Fetches up to ``batchSize`` messages (invisible for 10 minutes while processing) and
  fetches again when no more than ``newBatchThreshold`` are still running.
- Success deletes the message. Failure makes it visible again after ``visibilityTimeout``;
  when ``dequeueCount >= maxDequeueCount`` it is copied to ``<queue>-poison`` and deleted
  instead, so a failing message is attempted exactly ``maxDequeueCount`` times. A message
  dequeued with ``dequeueCount > maxDequeueCount`` goes straight to poison.
- With ``messageEncoding: base64`` a message that is not valid Base64 is moved to the poison
  queue unchanged (the extension's MessageDecodingFailed handler).
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueMessage as StoredMessage

from sandbox.host.config import QueueOptions
from sandbox.host.index import IndexedFunction
from sandbox.host.invocation import Invoker
from sandbox.host.storage import QueueClients, UndecodableMessage, decode

logger = logging.getLogger(__name__)

PROCESSING_VISIBILITY = timedelta(minutes=10)
MIN_POLLING = 0.1


class PollingBackoff:
    """The delay before the next receive, as the Storage Queues extension computes it (its
    ``RandomizedExponentialBackoffStrategy``, minimum and step 100 ms, randomization 0.2).

    After a receive that found messages: 100 ms. After the n-th empty one in a row: 100 ms plus 0.8-1.2 x 100 ms x
    2^(n-1), until that reaches ``maximum`` (maxPollingInterval), which is then kept until messages are found."""

    RANDOMIZATION = 0.2

    def __init__(self, maximum: float, chance: random.Random | None = None) -> None:
        self._maximum = maximum
        self._chance = chance or random.Random()  # noqa: S311 - jitter, not a secret
        self._current = 0.0
        self._exponent = 0

    def next(self, *, found: bool) -> float:
        if found:
            self._current, self._exponent = MIN_POLLING, 1
        elif self._current != self._maximum:
            delay = MIN_POLLING
            if self._exponent > 0:
                spread = self._chance.uniform(1 - self.RANDOMIZATION, 1 + self.RANDOMIZATION)
                delay += spread * 2 ** (self._exponent - 1) * MIN_POLLING
            if delay < self._maximum:
                self._current, self._exponent = delay, self._exponent + 1
            else:
                self._current = self._maximum
        return self._current


def poison_queue_name(queue_name: str) -> str:
    return f"{queue_name}-poison"


class QueueListener:
    """Receives a queue's messages and starts an invocation for each on the worker's pool (``Invoker.submit``);
    the message is settled (deleted, made visible again or poisoned) on that thread when the invocation ends."""

    def __init__(self, entry: IndexedFunction, options: QueueOptions, clients: QueueClients, invoker: Invoker):
        assert entry.queue is not None
        self.entry = entry
        self.binding = entry.queue
        self.options = options
        self.clients = clients
        self.invoker = invoker
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._running = 0
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._poll, name=f"listener:{entry.name}", daemon=True)
        self._reason = f"New queue message detected on '{self.binding.queue_name}'."
        # Built now so that a missing connection setting stops the host at start-up.
        self._queue = clients.queue(self.binding.connection, self.binding.queue_name)
        clients.on_enqueue.append(self._notified)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop receiving, and wait (up to 30 s) for the messages in flight to be settled."""
        self._stop.set()
        self._wake.set()
        with self._done:
            self._done.notify_all()
        self._thread.join(timeout=30)
        with self._done:
            self._done.wait_for(lambda: self._running == 0, timeout=30)

    def _notified(self, connection: str, queue_name: str) -> None:
        if (connection, queue_name) == (self.binding.connection, self.binding.queue_name):
            self._wake.set()

    def _poll(self) -> None:
        queue = self._queue
        backoff = PollingBackoff(self.options.max_polling_interval.total_seconds())
        while not self._stop.is_set():
            try:
                messages = list(
                    queue.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=int(PROCESSING_VISIBILITY.total_seconds()),
                    )
                )
            except ResourceNotFoundError:
                messages = []
            except AzureError as exc:
                logger.warning("Queue %s could not be read: %s", self.binding.queue_name, type(exc).__name__)
                messages = []
            if messages:
                for message in messages:
                    self._start(message)
                with self._done:
                    self._done.wait_for(
                        lambda: self._running <= self.options.new_batch_threshold or self._stop.is_set()
                    )
            self._wake.wait(backoff.next(found=bool(messages)))
            self._wake.clear()

    def _start(self, message: StoredMessage) -> None:
        """Invoke the function for one message, or poison the message if it cannot be (counted while in flight)."""
        with self._done:
            self._running += 1
        try:
            trigger = self._trigger(message)
            if trigger is None:
                self._finished()
                return
            self.invoker.submit(self.entry, trigger, self._reason, lambda succeeded: self._settle(message, succeeded))
        except Exception:
            logger.exception("Queue message %s could not be completed", message.id)
            self._finished()

    def _trigger(self, message: StoredMessage) -> QueueMessage | None:
        """The function's trigger value, or None once a message that must not be invoked is in the poison queue."""
        dequeue_count = int(message.dequeue_count or 0)
        if dequeue_count > self.options.max_dequeue_count:
            self._poison(message)
            return None
        try:
            body = decode(str(message.content), self.options.message_encoding)
        except UndecodableMessage:
            logger.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s.", message.id)
            self._poison(message)
            return None
        return QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    def _settle(self, message: StoredMessage, succeeded: bool) -> None:
        """After the invocation: delete the message, or make it visible again, or poison it after its last try."""
        try:
            if succeeded:
                self._queue.delete_message(message.id, message.pop_receipt)
            elif int(message.dequeue_count or 0) >= self.options.max_dequeue_count:
                self._poison(message)
            else:
                self._queue.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=int(self.options.visibility_timeout.total_seconds()),
                )
        except Exception:
            logger.exception("Queue message %s could not be completed", message.id)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._done:
            self._running -= 1
            if self._running <= self.options.new_batch_threshold:  # the counts the poll loop and stop wait for
                self._done.notify_all()

    def _poison(self, message: StoredMessage) -> None:
        poison = poison_queue_name(self.binding.queue_name)
        logger.warning(
            "Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
            self.options.max_dequeue_count,
            poison,
        )
        self.clients.ensure_queue(self.binding.connection, poison).send_message(str(message.content))
        self._queue.delete_message(message.id, message.pop_receipt)
