"""Garbage and duplicates on the real events topic: nothing crashes, nothing is lost or doubled.

Valid Taobao events, their duplicates (SDK retries) and malformed messages are produced
straight onto the topic; the worker runs as a real process. Every valid event must be
applied exactly once and every bad message must be in the dead-letter topic with its reason
and origin.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from freshrec.events import encode_event
from freshrec.processes import running_pipeline
from freshrec.replay import iter_dataset_events
from state.store import RedisStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

BAD_MESSAGES = [
    b"\xff\xfe\x00garbage",
    b'{"event_id": "t1", "user_id": "u", "item_id": "i", "type": "view"',  # truncated
    b'{"event_id": 5, "user_id": "u", "item_id": "i", "type": "view", "ts": "2017-11-25T00:00:00Z"}',
    b'{"event_id": "x", "user_id": "u", "item_id": "i", "type": "teleport", "ts": "2017-11-25T00:00:00Z"}',
    b'{"event_id": "y", "user_id": "u", "item_id": "i", "type": "view", "ts": "2999-01-01T00:00:00Z"}',
    b'{"event_id": "z", "user_id": "'
    + b"u" * 500
    + b'", "item_id": "i", "type": "view", "ts": "2017-11-25T00:00:00Z"}',
    b"[]",
    b"null",
    b"",
]


def read_dlq(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "dlq-check",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    messages = []
    try:

        def enough() -> bool:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    messages.append(msg)
            return len(messages) >= expected

        wait_until(enough, timeout_s)
        messages += [m for m in consumer.consume(500, 1.0) if m.error() is None]  # nothing extra
    finally:
        consumer.close()
    return messages


def test_good_applied_once_bad_dead_lettered(make_settings, tmp_path: Path) -> None:
    settings = make_settings()
    events = list(iter_dataset_events("taobao", limit=1500))
    rng = random.Random(20261129)
    duplicates = rng.sample(events, 200)
    bad = [rng.choice(BAD_MESSAGES) for _ in range(300)]
    stream: list[tuple[bytes | None, bytes]] = [
        (e.user_id.encode(), encode_event(e)) for e in events
    ]
    stream += [(e.user_id.encode(), encode_event(e)) for e in duplicates]
    # Duplicates go after their originals' partition position (same key → same partition).
    bad_at = sorted(rng.randrange(len(stream)) for _ in bad)
    for offset, (pos, payload) in enumerate(zip(bad_at, bad, strict=True)):
        stream.insert(pos + offset, (b"bad", payload))
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    for key, value in stream:
        producer.produce(settings.events_topic, key=key, value=value)
    assert producer.flush(30) == 0

    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    per_user = Counter(e.user_id for e in events)
    dup_per_user = Counter(e.user_id for e in duplicates)
    with running_pipeline(settings, tmp_path, api=False):

        def all_applied() -> bool:
            for user_id, n in per_user.items():
                record = store.get_user(user_id)
                if record is None or record.events < n or record.duplicates < dup_per_user[user_id]:
                    return False
            return True

        wait_until(all_applied, timeout_s=60, interval_s=0.2)
        letters = read_dlq(settings.kafka_bootstrap, settings.dlq_topic, len(bad))

    for user_id, n in per_user.items():
        record = store.get_user(user_id)
        assert record is not None
        assert record.events == n, f"user {user_id}: {record.events} applied, {n} sent"
        assert record.duplicates == dup_per_user[user_id]
    assert len(letters) == len(bad)
    assert sorted(m.value() or b"" for m in letters) == sorted(bad)
    for msg in letters:
        headers = dict(msg.headers())
        assert headers["reason"], "every dead letter carries its reason"
        assert headers["source_topic"].decode() == settings.events_topic
        assert int(headers["source_offset"]) >= 0
