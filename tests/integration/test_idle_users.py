"""Idle users leave worker memory into Redis and come back whole when they return."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Producer

from dataflows.personalize import isgd_params, user_config
from freshrec.events import encode_event
from freshrec.processes import running_pipeline
from freshrec.replay import iter_dataset_events
from operators import UserState
from state.store import RedisStore
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def test_idle_user_is_parked_and_restored(make_settings, tmp_path: Path) -> None:
    settings = make_settings(user_idle_ttl_s=1.0)
    events = list(iter_dataset_events("taobao", limit=3000))
    user = events[0].user_id
    mine = [e for e in events if e.user_id == user]
    first, later = mine[: len(mine) // 2], mine[len(mine) // 2 :]
    store = RedisStore.from_url(settings.redis_url, settings.redis_prefix, settings.factors)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})

    def send(batch) -> None:
        for e in batch:
            producer.produce(settings.events_topic, key=e.user_id.encode(), value=encode_event(e))
        assert producer.flush(10) == 0

    with running_pipeline(settings, tmp_path, api=False):
        send(first)
        wait_until(lambda: (r := store.get_user(user)) is not None and r.events == len(first), 30)
        # Idle for longer than the TTL: the worker parks the full state in Redis.
        parked = wait_until(lambda: store.parked_user_state(user), 30, 0.1)
        snapshot = UserState.from_state(parked, isgd_params(settings), user_config(settings))
        assert snapshot.user_id == user and snapshot.version == len(first)
        assert snapshot.dedup_ids == len(first)
        # Parked users are indexed, so a restarted worker asks Redis only for them.
        assert store.client.zscore(store.keys.parked_users, user) is not None

        send(later + first[:3])  # the user returns, with three SDK retries of old events
        wait_until(lambda: (r := store.get_user(user)) is not None and r.events == len(mine), 30)
        record = store.get_user(user)
        assert record is not None
        assert record.duplicates == 3, "the restored dedup memory recognised the retries"
        assert record.session_no >= snapshot.session[0]
        assert record.recent[0] == later[-1].item_id
