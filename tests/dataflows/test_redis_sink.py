"""The Redis sink on the real redis-server: writes in flight while the worker computes,
confirmed at the epoch's snapshot, failures raised in the worker, and checkpoints of more
workers than a resume runs."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, cluster_main, run_main

from dataflows import steps
from dataflows.personalize import build_flow, isgd_params, user_config
from dataflows.redis_sink import RedisSink, WorkerIdentity
from freshrec.events import encode_event
from freshrec.replay import iter_dataset_events
from freshrec.settings import Settings
from operators import key_by_user
from state.store import RedisStore
from tests.integration.pipeline_checks import lagging


def messages(limit: int) -> list[KafkaSourceMessage]:
    events = list(iter_dataset_events("taobao", limit=limit))
    return [
        KafkaSourceMessage(
            key=e.user_id.encode(), value=encode_event(e), topic="t", partition=0, offset=n
        )
        for n, e in enumerate(events)
    ]


def user_outputs(settings: Settings, batch: list[KafkaSourceMessage]) -> list[object]:
    """The user model's real outputs (one ``UserDelta`` per user) for ``batch``."""
    factory = steps.build_user_model(settings, isgd_params(settings), user_config(settings))
    by_user: dict[str, list[object]] = {}
    for user_id, value in key_by_user(batch):
        by_user.setdefault(user_id, []).append(value)
    outputs: list[object] = []
    for values in by_user.values():
        out, _discard = factory(None).on_batch(values)
        outputs += out
    return outputs


def own_sink_partition(settings: Settings):  # noqa: ANN201 - Bytewax's partition type
    WorkerIdentity().build("worker_identity", 0, 1)
    sink = RedisSink(settings)
    assert sink.list_parts()[0] == "0000"
    return sink.build_part("redis_out", "0000", None)


def test_writes_are_sent_in_the_background_and_confirmed_by_the_snapshot(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    batch = messages(200)
    users = sorted({m.key.decode() for m in batch})
    part = own_sink_partition(settings)
    outputs = user_outputs(settings, batch)
    store.client.client_pause(30_000, all=False)  # writes wait; reads go on
    unpause = threading.Timer(0.3, store.client.client_unpause)
    try:
        part.write_batch([outputs])  # returns although Redis takes no write
        assert all(store.get_user(u) is None for u in users)
        unpause.start()
        part.snapshot()  # what Bytewax calls before it commits the epoch: waits for Redis
        assert all(store.get_user(u) is not None for u in users)
    finally:
        unpause.cancel()
        store.client.client_unpause()
    part.close()


def test_a_failed_write_stops_the_worker_at_its_next_call(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    batch = messages(50)
    part = own_sink_partition(settings)
    # A user key of the wrong type: reading its stored version fails (not a connection
    # error, so it is not retried).
    store.client.hset(store.keys.user(batch[0].key.decode()), "x", "y")
    part.write_batch([user_outputs(settings, batch)])
    with pytest.raises(RuntimeError, match="writing the flow's state to Redis failed") as failed:
        part.snapshot()
    assert "WRONGTYPE" in str(failed.value.__cause__)
    with pytest.raises(RuntimeError):
        part.write_batch([[]])


def test_a_checkpoint_of_two_workers_resumes_with_one(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    recovery_dir = tmp_path / "recovery"
    recovery_dir.mkdir()
    init_db_dir(recovery_dir, 1)
    recovery = RecoveryConfig(str(recovery_dir))
    stream = messages(3000)
    first = TestingSource(stream[:1500], batch_size=100)
    cluster_main(
        build_flow(settings, first), [], 0, recovery_config=recovery, worker_count_per_proc=2
    )
    # Both workers' sink partitions are in the checkpoint; one worker must take over both.
    run_main(build_flow(settings, TestingSource(stream, batch_size=100)), recovery_config=recovery)
    per_user = Counter(m.key.decode() for m in stream)
    assert lagging(store, per_user, Counter()) == []
