"""Crash recovery on the real broker: kill -9 the worker five times, resume from checkpoints.

Two workers read the same topic (no consumer groups: each keeps its own offsets): A runs
uninterrupted, B runs with a Bytewax recovery store and is SIGKILLed at random moments while
the events arrive, then restarted. Their Redis states (separate key prefixes) must agree on
everything that does not depend on timing: per-user windows, sessions, counts, dedup state,
update counts per user and per item, co-visit counts, popularity. User/item *vectors* are
not compared: the user step reads item vectors from a replica refreshed on a timer
(dataflows/item_replica.py), so they differ between any two runs, crashed or not.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer

from freshrec import processes
from freshrec.archive import read_archive
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from state.store import RedisStore
from tests.integration.pipeline_checks import assert_same_state, wait_complete

pytestmark = pytest.mark.integration

EVENTS = 20_000
DUPLICATES = 1_000
KILLS = 5


def produce_paced(
    bootstrap: str, topic: str, stream: list[tuple[bytes, bytes]], seconds: float
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    chunk = max(1, len(stream) // 100)
    for start in range(0, len(stream), chunk):
        for key, value in stream[start : start + chunk]:
            producer.produce(topic, key=key, value=value)
        producer.poll(0)
        time.sleep(seconds / 100)
    assert producer.flush(30) == 0


def test_kill_9_five_times_matches_uninterrupted_run(make_settings, tmp_path: Path) -> None:
    base = make_settings(user_idle_ttl_s=3600.0)
    run_a = msgspec.structs.replace(base, redis_prefix=base.redis_prefix + "a")
    archive = tmp_path / "archive"
    run_b = msgspec.structs.replace(
        base, redis_prefix=base.redis_prefix + "b", archive_dir=str(archive)
    )
    events = list(iter_dataset_events("taobao", limit=EVENTS))
    rng = random.Random(1129)
    seed = rng.randrange(1 << 30)
    print(f"recovery test seed {seed}")
    rng = random.Random(seed)
    duplicates = rng.sample(events, DUPLICATES)
    stream = [(e.user_id.encode(), encode_event(e)) for e in events]
    position = {e.event_id: n for n, e in enumerate(events)}
    for e in duplicates:  # a retry lands shortly after its original (well within the horizon)
        at = rng.randrange(position[e.event_id] + 1, position[e.event_id] + 200)
        stream.insert(at, (e.user_id.encode(), encode_event(e)))
    per_user = Counter(e.user_id for e in events)
    dup_per_user = Counter(e.user_id for e in duplicates)

    recovery_dir = tmp_path / "recovery"
    processes.init_recovery(str(recovery_dir), 1)
    b_argv = processes.worker_argv(recovery_dir=str(recovery_dir), snapshot_s=1, backup_s=10)

    store_a = RedisStore.from_url(run_a.redis_url, run_a.redis_prefix, run_a.factors)
    store_b = RedisStore.from_url(run_b.redis_url, run_b.redis_prefix, run_b.factors)
    producer = threading.Thread(
        target=produce_paced, args=(base.kafka_bootstrap, base.events_topic, stream, 12.0)
    )
    worker_a = processes.spawn(processes.worker_argv(), run_a, tmp_path / "worker-a.log")
    worker_b = processes.spawn(b_argv, run_b, tmp_path / "worker-b.log")
    kills = 0
    try:
        producer.start()
        while kills < KILLS:
            time.sleep(rng.uniform(1.0, 2.5))
            processes.kill(worker_b)
            kills += 1
            worker_b = processes.spawn(b_argv, run_b, tmp_path / f"worker-b{kills}.log")
        producer.join()
        wait_complete(store_a, per_user, dup_per_user, 120)
        wait_complete(store_b, per_user, dup_per_user, 120)
        assert worker_b.poll() is None, "the resumed worker must still be running"
    finally:
        processes.stop(worker_a)
        processes.stop(worker_b)
    assert kills == KILLS

    assert_same_state(store_a, store_b, per_user)
    # The archive of the crashed run holds every valid event exactly once after dedup: rows
    # buffered at a checkpoint were flushed by the sink's snapshot, replays are deduplicated.
    archived = read_archive(archive, columns=["event_id"])
    assert archived["event_id"].n_unique() == archived.height
    assert set(archived["event_id"].to_list()) == {e.event_id for e in events}
