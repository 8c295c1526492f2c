"""Ingest's Kafka producer: idempotent, acks=all, awaited per request.

The API answers 202 only after the broker acknowledged every accepted event. librdkafka
delivers reports on its own thread (``poll``); they are handed to the event loop as future
results. ``message.timeout.ms`` equals the API's wait, so a report always arrives: an event
is either acknowledged or reported failed, never left in limbo behind a 503.

A broker that restarts without its state (Tansu keeps everything in memory) no longer knows
the idempotent producer's id: librdkafka raises a *fatal* error and the instance refuses every
later message. The producer is then replaced by a new one, so ingest answers 503 only while
the broker is really away (``benchmarks/drills.py``'s broker drill).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to produce."""

    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; the client should retry later."""


class EventProducer:
    """Produce keyed records and await their acknowledgements."""

    def __init__(
        self,
        bootstrap: str,
        *,
        linger_ms: int,
        timeout_s: float,
        client_config: Mapping[str, str] | None = None,
    ) -> None:
        """``client_config``: librdkafka properties (SASL/TLS) under the producer's own."""
        self.timeout_s = timeout_s
        self._config: dict[str, Any] = {
            **(client_config or {}),
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "message.timeout.ms": int(timeout_s * 1000),
            "socket.connection.setup.timeout.ms": 2000,
        }
        self._producer = Producer(self._config)
        self._renew_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            try:
                producer.poll(0.01)
            except KafkaException as exc:
                # Without an error_cb, poll() raises librdkafka's fatal errors.
                if not _is_fatal(exc.args[0]):
                    raise
                self._renew(producer)

    async def produce(self, records: Sequence[OutRecord]) -> None:
        """Send records; return when all are acknowledged.

        Raises :class:`BrokerUnavailable` if any is not acknowledged within the timeout.
        """
        if not records:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[KafkaError]] = loop.create_future()
        batch = _BatchAcks(len(records), loop, done)
        producer = self._producer
        try:
            for record in records:
                producer.produce(
                    record.topic,
                    value=record.value,
                    key=record.key,
                    headers=record.headers,
                    on_delivery=batch.report,
                )
        except (BufferError, KafkaException) as exc:
            if isinstance(exc, KafkaException) and _is_fatal(exc.args[0]):
                self._renew(producer)
            raise BrokerUnavailable(f"producer queue refused the events: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout_s + 1.0):
                failed = await done
        except TimeoutError as exc:
            raise BrokerUnavailable("broker did not acknowledge in time") from exc
        if failed:
            if any(_is_fatal(error) for error in failed):
                self._renew(producer)
            raise BrokerUnavailable(f"broker refused {len(failed)} event(s): {failed[0]}")

    def _renew(self, failed: Producer) -> None:
        """Replace a producer in a fatal state (once, however many requests saw it fail)."""
        with self._renew_lock:
            if self._producer is not failed:
                return
            self._producer = Producer(self._config)
        # Fail what is still queued on the dead instance; requests waiting for it time out
        # (503) if its reports do not come.
        with contextlib.suppress(KafkaException):
            failed.purge()
            failed.poll(0)

    def close(self) -> None:
        """Deliver what is queued (bounded by the timeout) and stop the poller."""
        self._producer.flush(self.timeout_s)
        self._stop.set()
        self._poller.join(timeout=1.0)


def _is_fatal(error: KafkaError) -> bool:
    # The first report carries the fatal flag; later calls fail with the _FATAL code.
    return bool(error.fatal()) or error.code() == KafkaError._FATAL


class _BatchAcks:
    """Counts delivery reports of one request on librdkafka's thread; settles once."""

    def __init__(
        self, expected: int, loop: asyncio.AbstractEventLoop, done: asyncio.Future[list[KafkaError]]
    ) -> None:
        self.pending = expected
        self.failed: list[KafkaError] = []
        self.loop = loop
        self.done = done

    def report(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.failed.append(err)
        self.pending -= 1
        if self.pending == 0:
            # A report can come after the request's event loop closed (a late ack at
            # shutdown): nobody awaits it any more, and raising here would kill the poller
            # thread, so every later report would go unread.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(_settle, self.done, self.failed)


def _settle(fut: asyncio.Future[list[KafkaError]], failed: list[KafkaError]) -> None:
    if not fut.done():
        fut.set_result(failed)
