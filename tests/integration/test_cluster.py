"""Scale-out: two worker processes (-i/-a) over a 4-partition topic equal one process.

Both deployments read the same real topic (no consumer groups) into separate key prefixes
and must agree on every timing-free part of the state (see pipeline_checks).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer

from freshrec import processes
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from freshrec.stack import free_port
from state.store import RedisStore
from tests.integration.pipeline_checks import assert_same_state, wait_complete

pytestmark = pytest.mark.integration


def test_two_processes_equal_one(make_settings, tmp_path: Path) -> None:
    base = make_settings(partitions=4)
    single = msgspec.structs.replace(base, redis_prefix=base.redis_prefix + "one")
    cluster = msgspec.structs.replace(base, redis_prefix=base.redis_prefix + "two")
    events = list(iter_dataset_events("taobao", limit=20_000))
    producer = Producer(
        {"bootstrap.servers": base.kafka_bootstrap, "enable.idempotence": True, "acks": "all"}
    )
    for e in events:
        producer.produce(base.events_topic, key=e.user_id.encode(), value=encode_event(e))
    assert producer.flush(30) == 0
    per_user = Counter(e.user_id for e in events)

    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = [processes.spawn(processes.worker_argv(), single, tmp_path / "single.log")]
    for process_id in range(2):
        argv = processes.worker_argv(process_id=process_id, addresses=addresses)
        started.append(processes.spawn(argv, cluster, tmp_path / f"cluster-{process_id}.log"))
    store_one = RedisStore.from_url(single.redis_url, single.redis_prefix, single.factors)
    store_two = RedisStore.from_url(cluster.redis_url, cluster.redis_prefix, cluster.factors)
    try:
        wait_complete(store_one, per_user, Counter(), 120)
        wait_complete(store_two, per_user, Counter(), 120)
        assert all(p.poll() is None for p in started), "every worker process must still run"
    finally:
        for p in started:
            processes.stop(p)
    assert_same_state(store_one, store_two, per_user)
