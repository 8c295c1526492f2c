"""Kafka in and out of the dataflow: the events source and the dead-letter sink.

Nothing that arrives on the events topic can crash a worker: bytes that are not JSON, JSON
that is not a valid event and broker-side errors all become dead letters (the native user
model decides, with the reasons of ``freshrec/events.py``) that go to the dead-letter topic
with the original payload, the reason and where they came from.
"""

from __future__ import annotations

import logging

from bytewax.connectors.kafka import (
    KafkaSink,
    KafkaSinkMessage,
    KafkaSource,
    _KafkaSourcePartition,
)
from confluent_kafka import TopicPartition

from freshrec.events import bounded_dead_letter
from freshrec.settings import Settings
from operators import DeadLetter

log = logging.getLogger(__name__)


def consumer_config(settings: Settings) -> dict[str, str]:
    """Librdkafka settings of the dataflow's consumer, tuned for freshness.

    Tansu answers a waiting fetch only when ``fetch.wait.max.ms`` expires, so that value is
    the floor of click-to-state latency (500 ms default: p99 255 ms; 10 ms: p99 ~8 ms).
    ``fetch.queue.backoff.ms=1`` avoids the 1 s stalls librdkafka's default backoff caused
    whenever Python fell behind the fetcher (see FIELD-NOTES).
    """
    return {
        "fetch.wait.max.ms": str(settings.consumer_fetch_wait_max_ms),
        "fetch.queue.backoff.ms": "1",
        "queued.min.messages": "100000",
        "fetch.error.backoff.ms": "50",
        # A broker that lost the topic (Tansu keeps it in memory only) restarts its offsets at
        # 0, behind the position this worker resumes from: re-read from the start then,
        # rather than skip to the end and lose what arrives after the outage.
        "auto.offset.reset": "earliest",
        # Reconnect within a second of a broker's return (default backoff grows to 10 s), so
        # the recreated topic is seen empty before producers refill it (see build_source).
        "reconnect.backoff.max.ms": "1000",
    }


class _RewindingPartition(_KafkaSourcePartition):
    """Bytewax's Kafka partition reader, rewound to the start when the log was replaced.

    A memory-only broker (Tansu) restarts with its topics recreated empty. It answers a fetch
    beyond the new end with an empty batch, not OFFSET_OUT_OF_RANGE, so
    ``auto.offset.reset`` never fires and the reader would wait at its old offset, silently
    skipping that many new events. The high watermark of the fetch responses shows it: once
    it is below the position, the log is not the one read so far — read it from its start.
    (An event produced before the reader reconnects can still push the new end past the old
    position unnoticed; the reader reconnects within ~1 s of the broker's return.)
    """

    def next_batch(self) -> list:  # type: ignore[override]
        batch = super().next_batch()
        if not batch:
            part = TopicPartition(self._topic, self._part_idx)
            low, high = self._consumer.get_watermark_offsets(part, cached=True)
            if 0 <= high < self._offset:
                start = max(low, 0)
                log.warning(
                    "%s[%d]: end offset %d is behind position %d (broker lost the topic); "
                    "reading it again from %d",
                    self._topic,
                    self._part_idx,
                    high,
                    self._offset,
                    start,
                )
                self._consumer.seek(TopicPartition(self._topic, self._part_idx, start))
                self._offset = start
        return batch


class _RewindingKafkaSource(KafkaSource):
    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _KafkaSourcePartition:
        part = super().build_part(step_id, for_part, resume_state)
        part.__class__ = _RewindingPartition
        return part


def build_source(settings: Settings) -> KafkaSource:
    """The events topic as a Bytewax source (manual partition assignment, no group)."""
    return _RewindingKafkaSource(
        brokers=settings.kafka_bootstrap.split(","),
        topics=[settings.events_topic],
        tail=settings.consumer_tail,
        add_config={**settings.kafka_config, **consumer_config(settings)},
        batch_size=settings.consumer_batch_size,
        # Errors travel as data to the dead-letter topic instead of stopping the worker.
        raise_on_errors=False,
    )


def build_dlq_sink(settings: Settings) -> KafkaSink:
    """The dead-letter topic as a Bytewax sink."""
    return KafkaSink(
        brokers=settings.kafka_bootstrap.split(","),
        topic=settings.dlq_topic,
        add_config={
            **settings.kafka_config,
            "enable.idempotence": "true",
            "acks": "all",
            "linger.ms": "5",
        },
    )


def dead_letter_message(letter: DeadLetter) -> KafkaSinkMessage[bytes | None, bytes]:
    """The record written to the dead-letter topic: original payload, reason in headers.

    A payload too large for a dead letter is cut (a record over the producer's limit would
    stop the worker: found by fuzzing, issue 8); a header gives its full size.
    """
    payload, key, cut = bounded_dead_letter(letter.payload, letter.key)
    return KafkaSinkMessage(
        key=key,
        value=payload,
        headers=[
            ("reason", letter.reason.encode()[:4096]),
            ("source_topic", letter.source_topic.encode()),
            ("source_partition", str(letter.source_partition).encode()),
            ("source_offset", str(letter.source_offset).encode()),
            *cut,
        ],
    )
